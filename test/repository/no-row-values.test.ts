import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { DualReadError, QueryFailedError } from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';

/** Every place an error could carry a value: message, stack, cause, and its JSON. */
function everythingIn(error: unknown): string {
  const e = error as Error & { cause?: unknown };
  return [e.message, e.stack, JSON.stringify(e), JSON.stringify(e.cause), String(e.cause)].join(
    '\n',
  );
}

describe.each(availableBackends())('errors carry no row values on %s', (backend) => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture;

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await fixture.drop();
  });

  it('a unique violation names the constraint and SQLSTATE, not the duplicated values', async () => {
    fixture = await createMigrationFixture(handle, { seed: 1, dualRead: true });
    const repo = fixture.migration.repository();
    const uuid = '3f2a9c1e-8d4b-4e6f-9a1b-2c3d4e5f6a7b';
    const secret = 'alice@example.com';
    await repo.createPerson({
      teamId: 1,
      uuid,
      distinctIds: [secret],
      properties: { email: secret },
    });
    const error = await repo
      .createPerson({ teamId: 1, uuid, distinctIds: ['other'], properties: { email: secret } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryFailedError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '23505' });
    expect((error as QueryFailedError).parameterCount).toBeGreaterThan(0);
    const text = everythingIn(error);
    expect(text).not.toContain(uuid);
    expect(text).not.toContain(secret);
    expect(text).not.toContain('other');
  });

  it('a property value Postgres rejects does not appear in the error', async () => {
    fixture = await createMigrationFixture(handle, { seed: 1, dualRead: true });
    const repo = fixture.migration.repository();
    const secret = 'private-note\u0000with-nul';
    const error = await repo
      .updatePerson(1, fixture.seededIds[0] ?? '', { properties: { note: secret } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DualReadError);
    const text = everythingIn(error);
    expect(text).not.toContain('private-note');
    expect(text).not.toContain('with-nul');
  });

  it('an argument that is not a UUID is refused before any query, without echoing it', async () => {
    fixture = await createMigrationFixture(handle, { seed: 1, dualRead: true });
    const error = await fixture.migration
      .repository()
      .fetchPersonByUuid(1, 'bob@example.com')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(everythingIn(error)).not.toContain('bob@example.com');
  });
});

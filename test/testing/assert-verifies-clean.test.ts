import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { assertVerifiesClean, VerificationAssertionError } from '../../src/testing/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';

describe.each(availableBackends())('assertVerifiesClean on %s', (backend) => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture | undefined;
  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterEach(async () => {
    await fixture?.drop();
    fixture = undefined;
  });
  afterAll(async () => {
    await handle?.close();
  });

  it('resolves with the clean result once the backfill copied every person', async () => {
    fixture = await createMigrationFixture(handle, { seed: 300, dualRead: true });
    await fixture.migration.backfill();
    const result = await assertVerifiesClean(fixture.migration, { settleMs: 0 });
    expect(result.clean).toBe(true);
    expect(result.oldRows).toBe(300);
  });

  it('fails with the first mismatched keys and their classes, never row values', async () => {
    fixture = await createMigrationFixture(handle, { seed: 300, dualRead: true });
    await fixture.migration.backfill();
    const [missing, changed] = fixture.seededIds;
    await sql`DELETE FROM ${fixture.newTable()} WHERE id = ${missing}::bigint`.execute(handle.db);
    await sql`UPDATE ${fixture.newTable()} SET properties = '{"secret":"do-not-print"}'
      WHERE id = ${changed}::bigint`.execute(handle.db);
    const error = await assertVerifiesClean(fixture.migration, { settleMs: 0 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(VerificationAssertionError);
    const message = (error as Error).message;
    expect((error as Error).name).toBe('AssertionError');
    expect(message).toContain(`missing_in_new team_id=1 id=${missing}`);
    expect(message).toContain(`content_differs team_id=1 id=${changed}`);
    expect(message).toContain('2 mismatched key(s)');
    expect(message).not.toContain('do-not-print');
    expect((error as VerificationAssertionError).result.mismatches).toBe(2);
  });

  it('names at most keysInMessage keys and says how to list the rest', async () => {
    fixture = await createMigrationFixture(handle, { seed: 50, dualRead: true });
    const error = (await assertVerifiesClean(fixture.migration, {
      settleMs: 0,
      keysInMessage: 3,
    }).catch((e: unknown) => e)) as Error;
    expect(error.message.match(/missing_in_new team_id=/g)).toHaveLength(3);
    expect(error.message).toContain('and 47 more');
  });
});

/**
 * Issue 13, item 8: PGlite is one session. A call that does not go through the open
 * transaction of `repository.inTransaction` (status(), another repository, any query on the
 * same database) would wait for that transaction forever; it throws a ConfigurationError at
 * once instead, and everything works again after the transaction.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { ConfigurationError } from '../../src/errors.js';
import {
  createPersonsMigration,
  type PersonsMigration,
} from '../../src/migration/persons-migration.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { settlesWithin } from '../support/concurrency.js';

describe('PGlite: a call made inside inTransaction that does not use its repository', () => {
  let handle: DatabaseHandle;
  let migration: PersonsMigration;

  beforeAll(async () => {
    handle = await openDatabase('pglite://memory');
    await createPostHogPersonsSchema(handle);
    await seedPersons(handle, { teamId: 1, count: 3, prefix: 're' });
    migration = createPersonsMigration({ db: handle });
    await migration.install();
    await migration.prepare();
  });
  afterAll(async () => {
    await migration?.close();
    await handle?.close();
  });

  it('status(), another repository and a raw query throw ConfigurationError at once; the bound repository works', async () => {
    const outside = migration.repository();
    const result = await settlesWithin(
      migration.repository().inTransaction(async (repo) => {
        const errors = await Promise.all([
          migration.status().catch((e: unknown) => e),
          outside.fetchPerson(1, 're-1').catch((e: unknown) => e),
          handle.db
            .selectNoFrom((eb) => eb.lit(1).as('one'))
            .execute()
            .catch((e: unknown) => e),
        ]);
        const person = await repo.fetchPerson(1, 're-1');
        return { errors, person };
      }),
      5_000,
    );
    for (const error of result.errors) {
      expect(error).toBeInstanceOf(ConfigurationError);
      expect((error as Error).message).toMatch(/inTransaction/);
    }
    expect(result.person?.properties).toBeDefined();
    await expect(settlesWithin(migration.status(), 5_000)).resolves.toMatchObject({
      phase: 'old',
    });
    await expect(settlesWithin(outside.fetchPerson(1, 're-1'), 5_000)).resolves.toBeDefined();
  });
});

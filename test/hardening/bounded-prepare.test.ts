/**
 * Issue 13, "no wait in the library is unbounded": prepare() behind a session that holds the
 * old table ACCESS EXCLUSIVE (someone's DDL, a long migration of their own) gives up after
 * `phaseChangeLockTimeoutMs` with a PreflightError (check `lock_timeout`, with the way to find
 * the holder) and changes nothing; once the lock is gone it prepares.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { PreflightError } from '../../src/errors.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';
import { createPostHogPersonsSchema } from '../../src/testing/index.js';
import { openRawSession, type RawSession } from '../support/concurrency.js';
import {
  describeOnRealServer,
  dropSchemas,
  openDatabaseForTest,
  uniqueSchemaName,
} from '../support/test-database.js';

describeOnRealServer('prepare() behind a held lock (real server)', () => {
  const schema = uniqueSchemaName('bounded_prepare');
  const controlSchema = `${schema}_ctl`;
  let handle: DatabaseHandle;
  let raw: RawSession;

  beforeAll(async () => {
    handle = await openDatabaseForTest(2);
    await createPostHogPersonsSchema(handle, { schema });
    raw = await openRawSession();
  });
  afterAll(async () => {
    await raw?.end();
    await dropSchemas(handle, schema, controlSchema);
    await handle?.close();
  });

  it('gives up after phaseChangeLockTimeoutMs with a PreflightError, nothing created; prepares once the lock is gone', async () => {
    const migration = createPersonsMigration({
      db: handle,
      schema,
      controlSchema,
      phaseChangeLockTimeoutMs: 300,
    });
    await migration.install();
    await raw.query('BEGIN');
    await raw.query(`LOCK TABLE "${schema}".posthog_person IN ACCESS EXCLUSIVE MODE`);
    try {
      const startedAt = Date.now();
      const error = await migration.prepare().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PreflightError);
      expect((error as PreflightError).problems.map((p) => p.check)).toEqual(['lock_timeout']);
      expect(Date.now() - startedAt).toBeLessThan(5_000);
    } finally {
      await raw.query('ROLLBACK');
    }
    const { rows } = await sql<{ exists: boolean }>`
      SELECT to_regclass(${`"${schema}".posthog_person_new`}) IS NOT NULL AS exists`.execute(
      handle.db,
    );
    expect(rows[0]?.exists).toBe(false);
    await expect(migration.prepare()).resolves.toMatchObject({ createdNewTable: true });
    await migration.close();
  });
});

/**
 * Issue 14, finalize on a real server:
 *
 * - statements prepared before the swap (an instance with its own one-connection pool and
 *   named prepared statements) executed after it read the consolidated table, never the
 *   retired one: the old name's statements are re-analysed by Postgres after the rename, and
 *   the new name's fail (42P01) and are retried with the phase re-read;
 * - a table kept busy by another session: each attempt waits at most `lockTimeoutMs`, then
 *   `finalize()` gives up after `timeoutMs` with `tables_busy`, changing nothing, and reads of
 *   other sessions are not held up behind it; once the table is free it finalizes.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { TransitionRefusedError } from '../../src/errors.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';
import { MigrationEnv, openRawSession, type RawSession } from '../support/concurrency.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

describeOnRealServer('finalize() on a real server', () => {
  let env: MigrationEnv;
  let raw: RawSession;
  let prepared: DatabaseHandle;
  const teamId = 1401;

  beforeAll(async () => {
    env = await MigrationEnv.create('finalize_swap');
    raw = await openRawSession();
    prepared = await openDatabase(realServerUrl() as string, {
      maxConnections: 1,
      preparedStatements: true,
    });
  });
  afterAll(async () => {
    await raw?.end();
    await prepared?.close();
    await env?.close();
  });

  it('prepared statements from before the swap read the consolidated table after it; a busy table makes finalize give up cleanly, then succeed', async () => {
    const ids = await env.seed(teamId, 10, 'fs');
    // No LISTEN and a 10-minute refresh: the reader learns of finalize() only from its reads.
    const reader = createPersonsMigration({
      db: { db: prepared.db, backend: prepared.backend, close: async () => {} },
      schema: env.schema,
      controlSchema: env.controlSchema,
      phaseRefreshIntervalMs: 600_000,
    });
    const repo = reader.repository();
    // Phase old: the reader prepares its statements on the old table's name.
    expect(await repo.fetchPerson(teamId, 'fs-1')).toMatchObject({ id: ids[0] });
    await env.control.startDualRead();
    await env.control.backfill({ workers: 1 });
    await env.control.verify();
    await env.control.cutover();
    const writer = env.control.repository();
    const created = await writer.createPerson({
      teamId,
      distinctIds: ['fs-new'],
      properties: { n: 1 },
    });
    if (created.status !== 'created') throw new Error('not created');
    await writer.updatePerson(teamId, ids[1] as string, { properties: { updated: 'in new' } });
    // Phase new: the reader prepares the same reads on the new table's name.
    expect(await repo.fetchPerson(teamId, 'fs-new')).toMatchObject({ id: created.person.id });

    // A session keeps the new table busy: every attempt gives up after lockTimeoutMs.
    await raw.query('BEGIN');
    await raw.query(`SELECT count(*) FROM ${env.newTableText}`);
    try {
      const error = await env.control
        .finalize({ lockTimeoutMs: 50, timeoutMs: 600 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TransitionRefusedError);
      expect((error as TransitionRefusedError).unmet.map((g) => g.guard)).toEqual(['tables_busy']);
      expect((await env.control.status()).phase).toBe('new');
      // Nothing queued behind it: another session reads the new table at once.
      await expect(
        sql`SELECT count(*)::int AS n FROM ${sql.id(env.schema, 'posthog_person_new')}`.execute(
          env.admin.db,
        ),
      ).resolves.toBeDefined();
    } finally {
      await raw.query('ROLLBACK');
    }
    await expect(env.control.finalize({ actor: 'test' })).resolves.toMatchObject({
      phase: 'finalized',
    });
    // The reader still believes in `new`: its statements on the new name fail, it re-reads the
    // phase, and its statements on the old name (prepared in phase old) read the consolidated table.
    expect(await repo.fetchPerson(teamId, 'fs-new')).toMatchObject({
      id: created.person.id,
      properties: { n: 1 },
    });
    expect(
      await repo.fetchPersonsByPersonIds([{ teamId, personId: ids[1] as string }]),
    ).toMatchObject([{ properties: { updated: 'in new' } }]);
    expect(await repo.countPersons(teamId)).toBe(11);
    await reader.close();
  });
});

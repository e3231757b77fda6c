/**
 * Found by the soak (issue 15): with a caller's own `pg.Pool`, a connection lost between two
 * statements of a library transaction (the backend terminated while idle in transaction, as an
 * operator's pg_terminate_backend or a server restart does) emitted an 'error' event on a
 * checked-out client that nobody listened to: pg-pool listens only while a client is idle, so
 * the caller's process crashed. The library now listens on every client it checks out; the
 * transaction fails with the library's error and the next call works on a fresh connection.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { DualReadError } from '../../src/errors.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

describeOnRealServer("a caller's pool losing a connection inside a transaction", () => {
  const applicationName = `lost_in_tx_${process.pid}`;
  let pool: pg.Pool;
  let admin: pg.Client;
  let handle: DatabaseHandle;
  let fixture: MigrationFixture;

  beforeAll(async () => {
    pool = new pg.Pool({
      connectionString: realServerUrl() as string,
      application_name: applicationName,
      max: 2,
    });
    pool.on('error', () => {}); // idle clients: the caller's part, as pg's docs ask
    admin = new pg.Client({ connectionString: realServerUrl() as string });
    await admin.connect();
    handle = await openDatabase(pool);
    fixture = await createMigrationFixture(handle, { seed: 3, dualRead: true });
  });
  afterAll(async () => {
    await fixture?.drop();
    await fixture?.migration.close();
    await handle?.close();
    await pool?.end();
    await admin?.end();
  });

  it('fails the transaction with a library error instead of crashing the process', async () => {
    const repo = fixture.migration.repository();
    const unhandled: unknown[] = [];
    const onUncaught = (error: unknown) => unhandled.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const outcome = repo.inTransaction(async (tx) => {
        await tx.fetchPerson(1, 'seed-1');
        const { rows } = await admin.query<{ ok: boolean }>(
          `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
            WHERE application_name = $1 AND state = 'idle in transaction'`,
          [applicationName],
        );
        expect(rows.map((r) => r.ok)).toEqual([true]);
        // Let the server's FATAL message reach the idle, checked-out client.
        await new Promise((resolve) => setTimeout(resolve, 300));
        return tx.fetchPerson(1, 'seed-2');
      });
      await expect(outcome).rejects.toBeInstanceOf(DualReadError);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    // The pool dropped the broken client: the repository works on.
    expect((await repo.fetchPerson(1, 'seed-3'))?.properties).toBeDefined();
  });
});

/**
 * `maxReplicationLagMs` against a real streaming standby (test/support/standby-cluster.ts):
 * with the standby's replay paused the backfill copies nothing and says why
 * (`backfill:throttled`, reason `replication-lag`); once the standby catches up it finishes.
 *
 * Needs this machine's PostgreSQL binaries to start its own primary and standby; skipped
 * without them, except under CI, where a missing binary fails the suite.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import {
  postgresBinDir,
  type StandbyCluster,
  startStandbyCluster,
} from '../support/standby-cluster.js';

const required = process.env.CI === 'true';

describe.skipIf(!required && postgresBinDir() === undefined)(
  'backfill waits for a lagging replica (primary + streaming standby)',
  () => {
    let cluster: StandbyCluster;
    let handle: DatabaseHandle;

    beforeAll(async () => {
      cluster = await startStandbyCluster();
      handle = await openDatabase(cluster.primaryUrl, { maxConnections: 4 });
    }, 60_000);

    afterAll(async () => {
      await handle?.close();
      await cluster?.stop();
    });

    async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (!(await check())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(50);
      }
    }

    it('copies nothing while the replay lag exceeds maxReplicationLagMs, then finishes once the standby catches up', {
      timeout: 90_000,
    }, async () => {
      const schema = 'lag';
      await createPostHogPersonsSchema(handle, { schema });
      await seedPersons(handle, { schema, teamId: 1, count: 2_000 });
      const migration = createPersonsMigration({ db: handle, schema });
      await migration.install();
      await migration.prepare();
      await migration.startDualRead();
      const newRows = async () =>
        Number(
          (
            await sql<{
              n: string;
            }>`SELECT count(*)::text AS n FROM ${sql.id(schema, 'posthog_person_new')}`.execute(
              handle.db,
            )
          ).rows[0]?.n,
        );

      // The standby is streaming and caught up: a lag well under the limit. A standby with
      // nothing to replay reports NULL lags after a while, so the wait writes WAL.
      await sql`CREATE TABLE lag.heartbeat (at timestamptz)`.execute(handle.db);
      await waitFor('the standby to report', async () => {
        await sql`INSERT INTO lag.heartbeat VALUES (now())`.execute(handle.db);
        return (await cluster.replicationLagMs()) !== null;
      });

      // Replay paused, WAL still flowing: the primary sees the replay lag grow past 500 ms.
      await cluster.pauseReplay();
      await waitFor('a replay lag over 500 ms', async () => {
        await sql`INSERT INTO lag.heartbeat VALUES (now())`.execute(handle.db);
        return ((await cluster.replicationLagMs()) ?? 0) > 500;
      });

      const throttled: number[] = [];
      migration.events.on('backfill:throttled', (event) => {
        if (event.reason === 'replication-lag') throttled.push(event.lagMs);
      });
      let batches = 0;
      migration.events.on('backfill:batch', () => {
        batches += 1;
      });
      const backfill = migration.backfill({
        workers: 2,
        batchSize: 100,
        targetBatchMs: 0,
        maxReplicationLagMs: 300,
      });
      let settled = false;
      void backfill.then(
        () => {
          settled = true;
        },
        () => {
          settled = true;
        },
      );
      await waitFor('three throttled waits', async () => throttled.length >= 3 || settled);
      expect(settled, 'the backfill waits while the standby lags').toBe(false);
      expect(Math.min(...throttled)).toBeGreaterThan(300);
      expect(batches).toBe(0);
      expect(await newRows()).toBe(0);
      expect((await migration.status()).backfill).toMatchObject({ rowsScanned: 0 });

      // Replay resumed: the standby catches up, reports (every second), and the backfill goes on.
      await cluster.resumeReplay();
      const result = await backfill;
      expect(result).toMatchObject({ finished: true, rowsScanned: 2_000, rowsCopied: 2_000 });
      expect(batches).toBeGreaterThan(0);
      expect(await newRows()).toBe(2_000);
      await migration.close();
    });

    it('refuses, naming pg_read_all_stats, when the role cannot see the standbys’ lag (NULL is not "no lag")', {
      timeout: 60_000,
    }, async () => {
      const schema = 'lag_role';
      const controlSchema = 'lag_role_ctl';
      await createPostHogPersonsSchema(handle, { schema });
      await seedPersons(handle, { schema, teamId: 1, count: 50 });
      const owner = createPersonsMigration({ db: handle, schema, controlSchema });
      await owner.install();
      await owner.prepare();
      await owner.startDualRead();
      await owner.close();
      await sql
        .raw(`CREATE ROLE lag_worker LOGIN;
        GRANT USAGE ON SCHEMA ${schema}, ${controlSchema} TO lag_worker;
        GRANT ALL ON ALL TABLES IN SCHEMA ${schema}, ${controlSchema} TO lag_worker;
        GRANT ALL ON ALL SEQUENCES IN SCHEMA ${schema}, ${controlSchema} TO lag_worker;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${controlSchema} TO lag_worker`)
        .execute(handle.db);
      const url = cluster.primaryUrl.replace('postgres://postgres@', 'postgres://lag_worker@');
      const worker = await openDatabase(url, { maxConnections: 2 });
      const migration = createPersonsMigration({ db: worker, schema, controlSchema });
      try {
        await waitFor(
          'a connected standby',
          async () =>
            (
              await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_replication`.execute(
                handle.db,
              )
            ).rows[0]?.n === 1,
        );
        const options = { workers: 1, batchSize: 10, maxReplicationLagMs: 60_000 };
        const error = await migration.backfill(options).catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'BACKFILL_REFUSED' });
        expect((error as Error).message).toContain('pg_read_all_stats');
        await sql`GRANT pg_read_all_stats TO lag_worker`.execute(handle.db);
        expect(await migration.backfill(options)).toMatchObject({ finished: true, rowsCopied: 50 });
      } finally {
        await migration.close();
        await worker.close();
      }
    });
  },
);

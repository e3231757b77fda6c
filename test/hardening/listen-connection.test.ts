/**
 * Issue 13, items 2 and 4: the connection that LISTENs for phase changes.
 *
 * - It is never a slot of the caller's pool: with a caller's `pg.Pool` of one connection,
 *   reads and writes still run (before, LISTEN kept the only connection for good).
 * - When it breaks (its backend terminated) it is reopened with backoff, the instance says so
 *   (`phase:listen-lost`, `phase:listen-restored`, `status().phaseListener`) and hears of the
 *   next phase change by NOTIFY again, with the periodic re-read turned down to 10 minutes.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';
import { MigrationEnv, settlesWithin, waitUntil } from '../support/concurrency.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

describeOnRealServer('the LISTEN connection (real server)', () => {
  let env: MigrationEnv;
  const teamId = 1304;

  beforeAll(async () => {
    env = await MigrationEnv.create('listen_conn');
    await env.seed(teamId, 3, 'ls');
  });
  afterAll(async () => {
    await env?.close();
  });

  it("a caller's pg.Pool of one connection keeps it: reads and writes run while the instance listens", async () => {
    const pool = new pg.Pool({ connectionString: realServerUrl() as string, max: 1 });
    const handle = await openDatabase(pool);
    const migration = createPersonsMigration({
      db: handle,
      schema: env.schema,
      controlSchema: env.controlSchema,
    });
    try {
      const repo = migration.repository();
      await settlesWithin(
        (async () => {
          expect(await repo.fetchPerson(teamId, 'ls-1')).toBeDefined();
          const created = await repo.createPerson({ teamId, distinctIds: ['ls-new'] });
          expect(created.status).toBe('created');
          expect(await repo.fetchPerson(teamId, 'ls-new')).toBeDefined();
        })(),
        10_000,
      );
      expect((await settlesWithin(migration.status(), 10_000)).phaseListener).toBe('listening');
      expect(pool.totalCount).toBe(1);
    } finally {
      await migration.close();
      await handle.close();
      await pool.end();
    }
  });

  it('a terminated LISTEN connection is reopened, reported, and NOTIFY works again', async () => {
    const applicationName = `pgdr_listen_${randomBytes(4).toString('hex')}`;
    const url = new URL(realServerUrl() as string);
    url.searchParams.set('application_name', applicationName);
    const handle: DatabaseHandle = await openDatabase(url.toString(), { maxConnections: 2 });
    const migration = createPersonsMigration({
      db: handle,
      schema: env.schema,
      controlSchema: env.controlSchema,
      phaseRefreshIntervalMs: 600_000,
    });
    const seen: string[] = [];
    migration.events.on('phase:listen-lost', () => seen.push('lost'));
    migration.events.on('phase:listen-restored', () => seen.push('restored'));
    migration.events.on('phase:changed', ({ phase }) => seen.push(`phase ${phase}`));
    try {
      await migration.repository().fetchPerson(teamId, 'ls-1');
      expect((await migration.status()).phaseListener).toBe('listening');
      const listenerPid = async () => {
        const { rows } = await sql<{ pid: number }>`
          SELECT pid FROM pg_stat_activity
          WHERE application_name = ${applicationName} AND query LIKE 'LISTEN%'`.execute(
          env.admin.db,
        );
        return rows[0]?.pid;
      };
      const before = await listenerPid();
      expect(before).toBeDefined();
      await sql`SELECT pg_terminate_backend(${before}::int)`.execute(env.admin.db);
      await waitUntil(() => seen.includes('restored'), 'the LISTEN connection to come back');
      expect(seen.indexOf('lost')).toBeLessThan(seen.indexOf('restored'));
      expect(await listenerPid()).not.toBe(before);
      expect((await migration.status()).phaseListener).toBe('listening');

      await env.control.startDualRead();
      await waitUntil(() => seen.includes('phase dual_read'), 'NOTIFY of the phase change', 3_000);
    } finally {
      await migration.close();
      await handle.close();
    }
  });

  it('every connection openDatabase() opens, pool and listener, has TCP keepalive on', async () => {
    const handle = await openDatabase(realServerUrl() as string, { maxConnections: 2 });
    const migration = createPersonsMigration({
      db: handle,
      schema: env.schema,
      controlSchema: env.controlSchema,
    });
    try {
      await migration.repository().fetchPerson(teamId, 'ls-1'); // a pooled connection + LISTEN
      const port = new URL(realServerUrl() as string).port || '5432';
      const sockets = execFileSync(
        'ss',
        ['-tnopH', 'state', 'established', `( dport = :${port} )`],
        {
          encoding: 'utf8',
        },
      )
        .split('\n')
        .filter((line) => line.includes(`pid=${process.pid},`));
      expect(sockets.length).toBeGreaterThanOrEqual(2);
      for (const socket of sockets) expect(socket).toContain('keepalive');
    } finally {
      await migration.close();
      await handle.close();
    }
  });
});

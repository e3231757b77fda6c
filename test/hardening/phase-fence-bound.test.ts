/**
 * Issue 13, item 1: no write waits without a bound on the phase fence.
 *
 * - A session that holds the control table's lock (a phase change whose client hung, someone in
 *   psql) makes writes fail after `writeFenceTimeoutMs` with a typed, retryable error, nothing
 *   written; reads go on.
 * - The bound is the fence's only: a write waiting for a person's row lock after the fence
 *   keeps the session's `lock_timeout` (no bound here), and succeeds once the row is free.
 * - A phase change whose client freezes mid-transaction (SIGSTOP of its process, after it took
 *   the lock) is ended by the server after `idle_in_transaction_session_timeout`, so the writes
 *   queued behind it go on and the phase stays as it was.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PhaseFenceTimeoutError } from '../../src/errors.js';
import {
  MigrationEnv,
  openRawSession,
  type RawSession,
  track,
  waitUntil,
} from '../support/concurrency.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

describeOnRealServer('the phase fence is bounded (real server)', () => {
  let env: MigrationEnv;
  let raw: RawSession;
  let ids: string[];
  const teamId = 1301;

  beforeAll(async () => {
    env = await MigrationEnv.create('fence_bound');
    ids = await env.seed(teamId, 5, 'fb');
    raw = await openRawSession();
  });
  afterAll(async () => {
    await raw?.end();
    await env?.close();
  });

  it('a write behind a held control-table lock fails after writeFenceTimeoutMs with PhaseFenceTimeoutError; nothing written, reads go on', async () => {
    const service = await env.addInstance({ writeFenceTimeoutMs: 300 });
    await raw.query('BEGIN');
    await raw.query(`LOCK TABLE "${env.controlSchema}".migration IN EXCLUSIVE MODE`);
    try {
      const startedAt = Date.now();
      const error = await service.repo
        .createPerson({ teamId, distinctIds: ['fb-new'], properties: { n: 1 } })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PhaseFenceTimeoutError);
      expect((error as PhaseFenceTimeoutError).code).toBe('PHASE_FENCE_TIMEOUT');
      expect(Date.now() - startedAt).toBeLessThan(5_000);
      expect(await service.repo.fetchPerson(teamId, 'fb-1')).toMatchObject({ id: ids[0] });
    } finally {
      await raw.query('ROLLBACK');
    }
    expect(await service.repo.fetchPerson(teamId, 'fb-new')).toBeUndefined();
    const created = await service.repo.createPerson({ teamId, distinctIds: ['fb-new'] });
    expect(created.status).toBe('created');
  });

  it('after the fence, a wait for a person row lock is not bounded by writeFenceTimeoutMs', async () => {
    const service = await env.addInstance({ writeFenceTimeoutMs: 200 });
    await raw.query('BEGIN');
    await raw.query(`SELECT 1 FROM ${env.oldTableText} WHERE team_id = $1 AND id = $2 FOR UPDATE`, [
      teamId,
      ids[1],
    ]);
    const update = track(
      service.repo.updatePerson(teamId, ids[1] as string, { properties: { waited: true } }),
    );
    try {
      await env.waitForBlockedBy(raw.pid, { giveUp: () => update.settled });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(update.settled, 'the update gave up waiting for the row lock').toBe(false);
    } finally {
      await raw.query('COMMIT');
    }
    await expect(update.promise).resolves.toMatchObject({ properties: { waited: true } });
  });

  it('a phase change whose client freezes inside its transaction is ended by the server; queued writes go on, the phase stays', async () => {
    const service = await env.addInstance({ writeFenceTimeoutMs: 15_000 });
    // A write transaction holds the fence, so the phase change waits at its LOCK TABLE.
    await raw.query('BEGIN');
    await raw.query(`SELECT * FROM "${env.controlSchema}".phase_fence('persons', 1000)`);
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(new URL('../support/phase-change-child.ts', import.meta.url)),
        JSON.stringify({
          url: realServerUrl(),
          schema: env.schema,
          controlSchema: env.controlSchema,
        }),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const lines: Record<string, unknown>[] = [];
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line)));
    try {
      await waitUntil(() => lines.some((l) => l.event === 'ready'), 'the child', 20_000);
      await env.waitForLockWaiters(env.statementLike('phase-change'), { timeoutMs: 20_000 });
      child.kill('SIGSTOP');
      // The lock is granted to a frozen client: its session sits idle in the transaction,
      // holding EXCLUSIVE on the control table.
      await raw.query('COMMIT');
      const startedAt = Date.now();
      await expect(
        service.repo.updatePerson(teamId, ids[2] as string, { properties: { after: 1 } }),
      ).resolves.toMatchObject({ properties: { after: 1 } });
      expect(Date.now() - startedAt).toBeLessThan(12_000);
      expect((await env.control.status()).phase).toBe('old');
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});

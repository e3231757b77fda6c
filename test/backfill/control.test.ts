/**
 * Controlling a running backfill: pause/resume, cancellation, status seen from another
 * handle, the rows-per-second ceiling, retries of lock timeouts, the phase fence and
 * resetBackfill. Facts that need two sessions run on the real server (a second pool or a raw
 * session); single-session facts run on PGlite.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BackfillStatus } from '../../src/backfill/backfill-status.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import {
  BackfillRefusedError,
  BackfillStoppedError,
  type PersonsMigration,
  QueryFailedError,
} from '../../src/index.js';
import {
  MigrationEnv,
  openRawSession,
  type RawSession,
  track,
  waitUntil,
} from '../support/concurrency.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { describeOnRealServer, openBackend, realServerUrl } from '../support/test-database.js';

/** This env's backfill batch statements, by their tag. */
const batchStatement = (env: MigrationEnv) => env.statementLike('backfill-batch');

/** Rows of both tables as `team:id:version:md5(properties)`, straight from SQL. */
async function tableContents(env: MigrationEnv, which: 'old' | 'new'): Promise<string[]> {
  const table = sql.id(env.schema, which === 'old' ? 'posthog_person' : 'posthog_person_new');
  const { rows } = await sql<{ key: string }>`
    SELECT team_id::text || ':' || id::text || ':' || COALESCE(version, 0)::text || ':' ||
      md5(properties::text) AS key
    FROM ${table} ORDER BY team_id, id`.execute(env.admin.db);
  return rows.map((r) => r.key);
}

/** No writer runs in these tests: after a finished backfill the new table is the old one. */
async function expectExactCopy(env: MigrationEnv): Promise<void> {
  const [old, copied] = [await tableContents(env, 'old'), await tableContents(env, 'new')];
  expect(copied.length).toBe(old.length);
  expect(copied).toEqual(old);
}

async function newTableCount(env: MigrationEnv): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM ${sql.id(env.schema, 'posthog_person_new')}`.execute(
    env.admin.db,
  );
  return rows[0]?.n ?? -1;
}

/** Ranges whose lease a worker still holds (any owner, live or not yet expired). */
async function leases(env: MigrationEnv): Promise<{ held: number; live: number; running: number }> {
  const { rows } = await sql<{ held: number; live: number; running: number }>`
    SELECT count(*) FILTER (WHERE lease_owner IS NOT NULL)::int AS held,
      count(*) FILTER (WHERE lease_owner IS NOT NULL AND lease_expires_at > clock_timestamp())::int AS live,
      count(*) FILTER (WHERE status = 'running')::int AS running
    FROM ${sql.id(env.controlSchema, 'backfill_range')}`.execute(env.admin.db);
  return rows[0] ?? { held: -1, live: -1, running: -1 };
}

/** Resolves when `migration` has emitted `count` backfill:batch events. */
function afterBatches(migration: PersonsMigration, count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const listener = () => {
      seen++;
      if (seen === count) {
        migration.events.off('backfill:batch', listener);
        resolve();
      }
    };
    migration.events.on('backfill:batch', listener);
  });
}

function batchCounter(migration: PersonsMigration) {
  const batches: { workerId: string; scanned: number; copied: number }[] = [];
  migration.events.on('backfill:batch', ({ workerId, scanned, copied }) =>
    batches.push({ workerId, scanned, copied }),
  );
  return batches;
}

describeOnRealServer('backfill control (real server)', () => {
  let env: MigrationEnv | undefined;
  let raw: RawSession | undefined;
  const handles: DatabaseHandle[] = [];

  /** A persons env in dual_read with old persons in two teams, and two service instances. */
  async function setup(prefix: string, counts: [number, number]) {
    env = await MigrationEnv.create(prefix);
    const e = env;
    const [first, second] = counts;
    // Ids of team 61 in key order.
    const ids = (await e.seed(61, first, 'x')).sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
    if (second > 0) await e.seed(62, second, 'y');
    const runner = await e.addInstance({ poolSize: 4 });
    const other = await e.addInstance({ poolSize: 2 });
    await e.control.startDualRead();
    return { e, runner, other, ids };
  }

  afterEach(async () => {
    await raw?.end();
    raw = undefined;
    await env?.close();
    env = undefined;
    for (const handle of handles.splice(0)) await handle.close();
  });

  it('pauseBackfill() stops every worker within one batch; resumeBackfill() lets it finish', async () => {
    const { e, runner, other } = await setup('pau', [2_000, 1_000]);
    const batches = batchCounter(runner.migration);
    const pausedWorkers = new Set<string>();
    runner.migration.events.on('backfill:paused', ({ workerId }) => pausedWorkers.add(workerId));
    const started = afterBatches(runner.migration, 10);
    const backfill = track(
      runner.migration.backfill({
        workers: 3,
        batchSize: 20,
        targetBatchMs: 0,
        ranges: 6,
        leaseMs: 2_000, // paused workers look again every 500 ms
      }),
    );
    await started;
    await other.migration.pauseBackfill();
    const atPause = batches.length;
    // Each worker sees the flag with its next batch statement and waits.
    await waitUntil(() => pausedWorkers.size === 3, 'three paused workers', 10_000);
    // A batch whose statement began before the pause committed may still commit: one a worker.
    expect(batches.length - atPause).toBeLessThanOrEqual(3);
    const held = batches.length;
    const status = await other.migration.backfillStatus();
    await sleep(400);
    const later = await other.migration.backfillStatus();
    expect(batches.length).toBe(held);
    expect(later?.rowsScanned).toBe(status?.rowsScanned);
    expect(await newTableCount(e)).toBe(later?.rowsCopied);
    expect(later).toMatchObject({ state: 'paused', ratePerSecond: 0 });
    expect(later?.rowsScanned).toBeLessThan(3_000);
    expect(backfill.settled).toBe(false);

    await other.migration.resumeBackfill();
    expect(await backfill.promise).toMatchObject({
      finished: true,
      aborted: false,
      rowsScanned: 3_000,
      rowsCopied: 3_000,
    });
    expect((await other.migration.backfillStatus())?.state).toBe('done');
    await expectExactCopy(e);
  });

  it('an aborted signal stops the backfill after the current batches, releases every lease, and a second call finishes the rest exactly once', async () => {
    const { e, runner, other } = await setup('abo', [2_000, 1_000]);
    const batches = batchCounter(runner.migration);
    const controller = new AbortController();
    const started = afterBatches(runner.migration, 10);
    const first = runner.migration.backfill({
      workers: 3,
      batchSize: 20,
      targetBatchMs: 0,
      ranges: 6,
      signal: controller.signal,
    });
    await started;
    controller.abort();
    const atAbort = batches.length;
    const result = await first;
    expect(result).toMatchObject({ aborted: true, finished: false });
    expect(batches.length - atAbort).toBeLessThanOrEqual(3);
    // Ranges given back: no lease, nothing 'running', no worker counted as active.
    expect(await leases(e)).toEqual({ held: 0, live: 0, running: 0 });
    const status = await other.migration.backfillStatus();
    expect(status).toMatchObject({ state: 'running', activeWorkers: 0 });
    // The checkpoints are exactly what committed.
    expect(status?.rowsScanned).toBe(result.rowsScanned);
    expect(status?.rowsCopied).toBe(result.rowsCopied);
    expect(await newTableCount(e)).toBe(result.rowsCopied);
    expect(result.rowsScanned).toBeGreaterThan(0);
    expect(result.rowsScanned).toBeLessThan(3_000);

    const second = await runner.migration.backfill({ workers: 3, batchSize: 20, targetBatchMs: 0 });
    expect(second).toMatchObject({ finished: true, aborted: false, planned: false });
    // No key scanned twice, none skipped.
    expect(result.rowsScanned + second.rowsScanned).toBe(3_000);
    expect(result.rowsCopied + second.rowsCopied).toBe(3_000);
    await expectExactCopy(e);
  });

  it("reports a worker's rate from its first batch on (not 0 until its second)", async () => {
    const { other, runner } = await setup('rt1', [1_000, 0]);
    const controller = new AbortController();
    const firstBatch = afterBatches(runner.migration, 1);
    // 50 rows under a ceiling of 20 rows/s: the worker then waits 2.5 s before its second.
    const backfill = runner.migration.backfill({
      workers: 1,
      batchSize: 50,
      targetBatchMs: 0,
      maxRowsPerSecond: 20,
      signal: controller.signal,
    });
    await firstBatch;
    const status = await other.migration.backfillStatus();
    controller.abort();
    await backfill;
    expect(status?.workers.map((w) => w.batches)).toEqual([1]);
    expect(status?.workers[0]?.ratePerSecond).toBeGreaterThan(0);
    expect(status?.ratePerSecond).toBeGreaterThan(0);
    expect(status?.etaSeconds).toBeGreaterThan(0);
  });

  it('another handle sees the progress while it runs: rows scanned up, rows to go down, a rate and an ETA; 100% and done after', async () => {
    const { e, runner, other } = await setup('sta', [3_000, 1_000]);
    const backfill = track(
      runner.migration.backfill({
        workers: 2,
        batchSize: 50,
        targetBatchMs: 0,
        ranges: 4,
        maxRowsPerSecond: 2_500, // about 1.6 s, whatever the machine
      }),
    );
    const samples: BackfillStatus[] = [];
    while (!backfill.settled) {
      const status = (await other.migration.status()).backfill;
      if (status && status.state === 'running') samples.push(status);
      await sleep(100);
    }
    expect(await backfill.promise).toMatchObject({ finished: true });
    const running = samples.filter((s) => s.rowsScanned > 0 && s.rowsScanned < 4_000);
    expect(running.length).toBeGreaterThanOrEqual(3);
    for (const [i, s] of running.entries()) {
      expect(s.rowsEstimated).toBe(4_000);
      expect(s.percent).toBeGreaterThan(0);
      expect(s.percent).toBeLessThan(100);
      if (i === 0) continue;
      const before = running[i - 1] as BackfillStatus;
      expect(s.rowsScanned).toBeGreaterThanOrEqual(before.rowsScanned);
      expect(s.rowsToGo).toBeLessThanOrEqual(before.rowsToGo);
    }
    const [head, tail] = [running[0] as BackfillStatus, running.at(-1) as BackfillStatus];
    expect(tail.rowsScanned).toBeGreaterThan(head.rowsScanned);
    expect(tail.rowsToGo).toBeLessThan(head.rowsToGo);
    const withRate = running.filter((s) => s.ratePerSecond > 0);
    expect(withRate.length).toBeGreaterThan(0);
    for (const s of withRate) {
      expect(Number.isFinite(s.etaSeconds)).toBe(true);
      expect(s.etaSeconds).toBeGreaterThan(0);
      expect(s.etaSeconds).toBeCloseTo(s.rowsToGo / s.ratePerSecond, 6);
      expect(s.activeWorkers).toBeGreaterThanOrEqual(1);
      expect(s.activeWorkers).toBeLessThanOrEqual(2);
      // Each worker counted, with its rows, batches and last commit.
      expect(s.workers).toHaveLength(s.activeWorkers);
      for (const w of s.workers) {
        expect(w.batches).toBeGreaterThanOrEqual(1);
        expect(w.rowsScanned).toBeGreaterThan(0);
        expect(w.rowsScanned).toBeLessThanOrEqual(4_000);
        expect(w.lastBatchAt).toBeInstanceOf(Date);
      }
    }
    expect(running.some((s) => s.maxRowsPerSecond === 2_500)).toBe(true);

    const done = (await other.migration.status()).backfill;
    expect(done).toMatchObject({
      state: 'done',
      percent: 100,
      rowsToGo: 0,
      etaSeconds: 0,
      rowsScanned: 4_000,
      rowsCopied: 4_000,
    });
    expect(done?.finishedAt).toBeInstanceOf(Date);
    expect(done?.workers).toEqual([]);
    expect(done?.ranges.every((r) => r.status === 'done' && r.worker === undefined)).toBe(true);
    await expectExactCopy(e);
  });

  it('setBackfillRate() is read by running workers: status shows it and a 200 rows/s ceiling holds them down', async () => {
    const { e, runner, other } = await setup('rat', [3_000, 1_000]);
    const controller = new AbortController();
    const started = afterBatches(runner.migration, 4);
    const backfill = track(
      runner.migration.backfill({
        workers: 2,
        batchSize: 50,
        targetBatchMs: 0,
        ranges: 4,
        signal: controller.signal,
      }),
    );
    await started;
    expect((await other.migration.backfillStatus())?.maxRowsPerSecond).toBeUndefined();
    await other.migration.setBackfillRate(200);
    expect((await other.migration.backfillStatus())?.maxRowsPerSecond).toBe(200);
    // Each worker's next batch reads the ceiling, then waits 50 / (200 / 2) s = 500 ms.
    await sleep(600);
    const from = (await other.migration.backfillStatus())?.rowsScanned ?? 0;
    const t0 = performance.now();
    await sleep(1_000);
    const to = (await other.migration.backfillStatus())?.rowsScanned ?? 0;
    const seconds = (performance.now() - t0) / 1_000;
    // 200 rows/s, plus a batch of each worker at either edge of the window; loose on purpose.
    expect(to - from).toBeLessThanOrEqual(200 * seconds + 4 * 50 + 100);
    expect(to - from).toBeGreaterThan(0); // slowed down, not stopped
    expect(backfill.settled).toBe(false);
    expect(to).toBeLessThan(4_000);

    await other.migration.setBackfillRate(null);
    expect((await other.migration.backfillStatus())?.maxRowsPerSecond).toBeUndefined();
    controller.abort();
    expect(await backfill.promise).toMatchObject({ aborted: true });
    expect(await leases(e)).toMatchObject({ held: 0 });
  });

  it('a lock timeout in a batch is retried (backfill:retry) and the backfill finishes; with maxRetries 0 it fails with 55P03, and a later call resumes', async () => {
    const { e, ids } = await setup('ret', [2_000, 0]);
    // A service whose sessions give up on a lock after 50 ms.
    const url = new URL(realServerUrl() as string);
    url.searchParams.set('options', '-c lock_timeout=50');
    const impatientHandle = await openDatabase(url.toString(), { maxConnections: 3 });
    handles.push(impatientHandle);
    const probe = await sql<{ v: string }>`SELECT current_setting('lock_timeout') AS v`.execute(
      impatientHandle.db,
    );
    expect(probe.rows[0]?.v).toBe('50ms');
    const impatient = await e.addInstance({ handle: impatientHandle });
    const holdCopyOf = `INSERT INTO ${e.newTableText} SELECT * FROM ${e.oldTableText} WHERE team_id = 61 AND id = $1`;

    // 1. Retried: a raw session holds an uncommitted copy of a key in the middle of the range
    // (a batch in either lock mode waits for it when its insert reaches that key).
    raw = await openRawSession();
    await raw.query('BEGIN');
    await raw.query(holdCopyOf, [ids[1_000]]);
    const lockedAt = performance.now();
    const retries: number[] = [];
    impatient.migration.events.on('backfill:retry', ({ attempt }) => retries.push(attempt));
    const options = { workers: 1, ranges: 1, batchSize: 50, targetBatchMs: 0 } as const;
    const retried = track(impatient.migration.backfill(options));
    await waitUntil(() => retries.length > 0 || retried.settled, 'a backfill:retry event');
    expect(retried.settled).toBe(false);
    // Hold the lock ~400 ms in all: several attempts time out, fewer than maxRetries (5).
    await sleep(Math.max(0, 400 - (performance.now() - lockedAt)));
    await raw.query('ROLLBACK');
    expect(await retried.promise).toMatchObject({ finished: true, rowsScanned: 2_000 });
    expect(retries.length).toBeGreaterThanOrEqual(1);
    expect(retries).toEqual(retries.map((_, i) => i + 1));
    await expectExactCopy(e);

    // 2. Not retried: a fresh plan over an empty new table, same lock, maxRetries 0.
    await impatient.migration.resetBackfill();
    await sql`TRUNCATE ${sql.id(e.schema, 'posthog_person_new')}`.execute(e.admin.db);
    await raw.query('BEGIN');
    await raw.query(holdCopyOf, [ids[1_500]]);
    const error = await impatient.migration
      .backfill({ ...options, maxRetries: 0 })
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(QueryFailedError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '55P03' });
    await raw.query('ROLLBACK');
    // The failed worker gave its range back; what committed stays committed.
    expect(await leases(e)).toMatchObject({ held: 0, running: 0 });
    const stopped = await e.control.backfillStatus();
    expect(stopped?.state).toBe('running');
    expect(stopped?.rowsScanned).toBe(1_500);
    expect(await newTableCount(e)).toBe(1_500);

    const resumed = await impatient.migration.backfill({ workers: 2 });
    expect(resumed).toMatchObject({ finished: true, planned: false, rowsScanned: 500 });
    await expectExactCopy(e);
  });

  it('the phase fence: once the control row leaves dual_read, the backfill stops with BACKFILL_STOPPED and copies nothing more', async () => {
    const { e, runner, other } = await setup('fen', [2_000, 1_000]);
    const started = afterBatches(runner.migration, 10);
    const backfill = track(
      runner.migration.backfill({ workers: 3, batchSize: 20, targetBatchMs: 0, ranges: 6 }),
    );
    await started;
    // What a phase change does: take the control table EXCLUSIVE (it waits for the batches in
    // flight, which hold ROW SHARE on it with their FOR KEY SHARE fence, and new batches queue
    // behind it: no starvation), lock the row FOR UPDATE, change the phase, commit.
    raw = await openRawSession();
    const control = `"${e.controlSchema}".migration`;
    await raw.query('BEGIN');
    await raw.query(`LOCK TABLE ${control} IN EXCLUSIVE MODE`);
    await raw.query(`SELECT phase FROM ${control} WHERE name = 'persons' FOR UPDATE`);
    // The next batches queue behind the lock at their fence.
    expect(await e.waitForLockWaiters(batchStatement(e), { giveUp: () => backfill.settled })).toBe(
      true,
    );
    await raw.query(
      `UPDATE ${control} SET phase = 'new', epoch = epoch + 1 WHERE name = 'persons'`,
    );
    const [{ n: copiedAtChange } = { n: -1 }] = await raw.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${e.newTableText}`,
    );
    await raw.query('COMMIT');

    const error = await backfill.promise.catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BackfillStoppedError);
    expect(error).toMatchObject({ code: 'BACKFILL_STOPPED' });
    expect((error as Error).message).toContain('new');
    // Nothing was copied after the phase changed, and the checkpoints say so.
    expect(await newTableCount(e)).toBe(copiedAtChange);
    const status = await other.migration.backfillStatus();
    expect(status?.rowsCopied).toBe(copiedAtChange);
    expect(status?.state).toBe('running');
    expect(copiedAtChange).toBeGreaterThan(0);
    expect(copiedAtChange).toBeLessThan(3_000);
    expect(await leases(e)).toMatchObject({ held: 0 });
    // A new call is refused outright in phase new.
    await expect(runner.migration.backfill()).rejects.toMatchObject({ code: 'BACKFILL_REFUSED' });
    expect(await newTableCount(e)).toBe(copiedAtChange);

    // Back in dual_read, the same plan resumes and finishes.
    await raw.query(
      `UPDATE ${control} SET phase = 'dual_read', epoch = epoch + 1 WHERE name = 'persons'`,
    );
    expect(await runner.migration.backfill({ workers: 3 })).toMatchObject({
      finished: true,
      planned: false,
    });
    await expectExactCopy(e);
  });

  it('resetBackfill() is refused while a worker holds a live lease, and allowed once the workers stopped', async () => {
    const { e, runner, other } = await setup('rst', [1_500, 500]);
    const controller = new AbortController();
    const started = afterBatches(runner.migration, 2);
    const backfill = track(
      runner.migration.backfill({
        workers: 2,
        batchSize: 20,
        targetBatchMs: 0,
        ranges: 4,
        maxRowsPerSecond: 200, // workers hold their leases between slow batches
        signal: controller.signal,
      }),
    );
    await started;
    expect((await leases(e)).live).toBeGreaterThan(0);
    const plan = await other.migration.backfillStatus();
    const error = await other.migration.resetBackfill().catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BackfillRefusedError);
    expect((error as Error).message).toContain('live leases');
    expect((await other.migration.backfillStatus())?.plannedAt).toEqual(plan?.plannedAt);

    controller.abort();
    expect(await backfill.promise).toMatchObject({ aborted: true, finished: false });
    const copiedBefore = await newTableCount(e);
    await other.migration.resetBackfill();
    expect(await other.migration.backfillStatus()).toBeUndefined();
    // Rows copied stay copied; the next call plans again and finishes.
    expect(await newTableCount(e)).toBe(copiedBefore);
    const again = await runner.migration.backfill({ workers: 2, ranges: 3 });
    expect(again).toMatchObject({ finished: true, planned: true, rowsScanned: 2_000 });
    expect(again.rowsCopied).toBe(2_000 - copiedBefore);
    await expectExactCopy(e);
  });

  // Paused workers renew their leases while they wait: were the leases to expire after
  // leaseMs, resetBackfill() would be accepted under a running (paused) backfill(), which would
  // then resolve { finished: true } with the plan gone and the rows not copied.
  it('a paused backfill keeps its leases alive, so resetBackfill() stays refused', async () => {
    const { e, runner, other } = await setup('plz', [1_000, 0]);
    const started = afterBatches(runner.migration, 2);
    const backfill = track(
      runner.migration.backfill({
        workers: 1,
        batchSize: 20,
        targetBatchMs: 0,
        ranges: 2,
        leaseMs: 300,
      }),
    );
    try {
      await started;
      await other.migration.pauseBackfill();
      await sleep(900); // three lease lengths
      const afterPause = await leases(e);
      const reset = await other.migration.resetBackfill().then(
        () => 'reset',
        (err: unknown) => (err as { code?: string }).code,
      );
      expect({ live: afterPause.live, reset }).toEqual({ live: 1, reset: 'BACKFILL_REFUSED' });
    } finally {
      await other.migration.resumeBackfill().catch(() => undefined);
      await backfill.promise.catch(() => undefined);
    }
  });
});

describe('backfill control facts of one session (PGlite)', () => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture | undefined;

  beforeAll(async () => {
    handle = await openBackend('pglite');
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await fixture?.drop();
    fixture = undefined;
  });

  it('pause, resume and setBackfillRate without a plan are refused with BACKFILL_REFUSED, and change nothing', async () => {
    fixture = await createMigrationFixture(handle, { seed: 5, dualRead: true });
    const { migration } = fixture;
    for (const call of [
      () => migration.pauseBackfill(),
      () => migration.resumeBackfill(),
      () => migration.setBackfillRate(100),
      () => migration.setBackfillRate(null),
    ]) {
      const error = await call().catch((err: unknown) => err);
      expect(error).toBeInstanceOf(BackfillRefusedError);
      expect((error as Error).message).toContain('backfill()');
    }
    expect(await migration.backfillStatus()).toBeUndefined();
  });

  it('setBackfillRate() refuses a rate that is not a positive integer (INVALID_OPTIONS), with or without a plan', async () => {
    fixture = await createMigrationFixture(handle, { seed: 5, dualRead: true });
    const { migration } = fixture;
    const invalid = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY];
    for (const rate of invalid) {
      await expect(migration.setBackfillRate(rate)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
    }
    await migration.backfill({ maxRowsPerSecond: 1_000 });
    for (const rate of invalid) {
      await expect(migration.setBackfillRate(rate)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
    }
    expect((await migration.backfillStatus())?.maxRowsPerSecond).toBe(1_000);
    await migration.setBackfillRate(123);
    expect((await migration.backfillStatus())?.maxRowsPerSecond).toBe(123);
    await migration.setBackfillRate(null);
    expect((await migration.backfillStatus())?.maxRowsPerSecond).toBeUndefined();
  });

  it('pause and resume flip the state of a plan, resetBackfill() of a stopped plan is allowed', async () => {
    fixture = await createMigrationFixture(handle, { seed: 30, dualRead: true });
    const { migration } = fixture;
    const controller = new AbortController();
    controller.abort();
    // An already-aborted signal plans and stops at once: a plan with no worker.
    expect(await migration.backfill({ signal: controller.signal })).toMatchObject({
      aborted: true,
      finished: false,
      planned: true,
      rowsScanned: 0,
    });
    expect((await migration.backfillStatus())?.state).toBe('running');
    await migration.pauseBackfill();
    expect((await migration.backfillStatus())?.state).toBe('paused');
    await migration.resumeBackfill();
    expect((await migration.backfillStatus())?.state).toBe('running');
    await migration.resetBackfill();
    expect(await migration.backfillStatus()).toBeUndefined();
    // resetBackfill() without a plan is a no-op.
    await migration.resetBackfill();
  });
});

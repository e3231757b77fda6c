/**
 * Several backfill processes on one plan, on a real server: idle workers split the busiest
 * ranges, no key is read by two committed batches, no two live leases ever cover the same
 * keys, and a process killed mid-range has its range taken over once its lease expires.
 *
 * Independent evidence (see kill-support.ts): a BEFORE INSERT audit on the new table (each old
 * key read by exactly one committed batch), the ranges sampled every few ms while the workers
 * run (one snapshot per read), the children's own output (which worker committed which batch),
 * and the tables themselves.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, expect, it } from 'vitest';
import { BackfillChild, type BackfillChildLine } from '../support/backfill-child.js';
import { MigrationEnv, seededRandom, testSeed, waitUntil } from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';
import {
  expectCompletePlan,
  expectedNewTable,
  expectNewTable,
  installCopyAudit,
  keysLeft,
  progress,
  RangeSampler,
  readCopyAudit,
  readRanges,
  urlFor,
  waitForSessionsGone,
} from './kill-support.js';

describeOnRealServer('backfill by several processes (real server)', () => {
  const seed = testSeed();
  const random = seededRandom(seed);
  const children: BackfillChild[] = [];
  const envs: MigrationEnv[] = [];
  const samplers: RangeSampler[] = [];

  async function cleanUp(): Promise<void> {
    for (const child of children.splice(0)) await child.kill();
    for (const sampler of samplers.splice(0)) await sampler.stop().catch(() => undefined);
    for (const env of envs.splice(0)) await env.close();
  }
  afterEach(cleanUp);
  afterAll(cleanUp);

  /**
   * A skewed table: team 1 holds half the persons, the other half is spread over many small
   * teams; dual_read; the copy audit; a plan of `ranges` ranges made by the test (so no
   * process plans and every process joins the same plan).
   */
  async function skewed(
    prefix: string,
    rows: number,
    ranges: number,
    maxRowsPerSecond: number,
    onCreated?: (env: MigrationEnv) => void,
  ) {
    const env = await MigrationEnv.create(prefix, { partitions: 4 });
    envs.push(env);
    onCreated?.(env);
    await env.seed(1, rows / 2, 'big');
    // Small teams of 50, ids interleaved with each other (one statement, random order).
    await sql`INSERT INTO ${sql.id(env.schema, 'posthog_person')} (team_id, uuid, properties, version)
      SELECT 2 + (g % ${rows / 2 / 50}::int), gen_random_uuid(), jsonb_build_object('g', g), g % 4
      FROM generate_series(1, ${rows / 2}::int) AS g ORDER BY random()`.execute(env.admin.db);
    await env.control.startDualRead();
    await installCopyAudit(env);
    const expected = await expectedNewTable(env);
    expect(expected.size).toBe(rows);
    const plan = await env.control.backfill({
      ranges,
      maxRowsPerSecond,
      signal: AbortSignal.abort(),
    });
    expect(plan).toMatchObject({ planned: true, finished: false, rowsScanned: 0 });
    expect((await readRanges(env)).length).toBe(ranges);
    return { env, expected };
  }

  const processNames = ['A', 'B', 'C', 'D'] as const;

  /** Four child processes of `workers` workers each, connected and waiting for go. */
  function processes(env: MigrationEnv, workers: number, leaseMs: number) {
    const started = processNames.map((p) =>
      BackfillChild.start(`process ${p} (seed ${seed})`, {
        url: urlFor(`${env.schema}-${p}`),
        schema: env.schema,
        controlSchema: env.controlSchema,
        poolSize: workers + 1,
        printBatches: true,
        waitForGo: true,
        backfill: {
          workers,
          batchSize: 200,
          targetBatchMs: 0,
          leaseMs,
          workerId: `proc-${p}`,
          // both lock modes in one backfill: each batch is safe on its own
          lockMode: p === 'A' || p === 'C' ? 'ranges' : 'rows',
        },
      }),
    );
    children.push(...started);
    return started;
  }

  async function goAll(started: readonly BackfillChild[]): Promise<void> {
    await Promise.all(started.map((c) => c.waitFor((l) => l.event === 'ready', 'ready', 60_000)));
    for (const child of started) child.go();
  }

  const scannedIn = (child: BackfillChild) =>
    child.events('batch').reduce((sum, l) => sum + l.scanned, 0);

  /** The end state: contents, each key read once, progress exact, every range done. */
  async function expectExactlyOnce(env: MigrationEnv, expected: Map<string, string>) {
    await expectNewTable(env, expected);
    expect(await readCopyAudit(env)).toEqual({
      attempts: expected.size,
      distinctKeys: expected.size,
      readTwice: [],
      neverRead: [],
    });
    const ranges = await expectCompletePlan(env);
    expect(progress(ranges)).toEqual({ scanned: expected.size, copied: expected.size });
    expect(await env.control.backfillStatus()).toMatchObject({
      state: 'done',
      rowsToGo: 0,
      rowsScanned: expected.size,
    });
    return ranges;
  }

  it('4 processes on a skewed table: ranges split, every range done once, no key read twice', async () => {
    const rows = 32_000;
    let started: BackfillChild[] = [];
    const { env, expected } = await skewed('mp', rows, 6, 10_000, (e) => {
      started = processes(e, 2, 2_000);
    });
    await goAll(started);
    const sampler = new RangeSampler(env);
    samplers.push(sampler);
    const summaries = await Promise.all(started.map((c) => c.finished(120_000)));
    await sampler.stop();

    // Every process saw the whole plan done, and did part of it.
    for (const summary of summaries) expect(summary).toMatchObject({ finished: true });
    expect(summaries.map((s) => s.rowsScanned > 0)).toEqual([true, true, true, true]);
    // Each committed batch counted by exactly one process: the totals add up to the table.
    expect(summaries.reduce((sum, s) => sum + s.rowsScanned, 0)).toBe(rows);
    expect(started.map(scannedIn)).toEqual(summaries.map((s) => s.rowsScanned));

    const ranges = await expectExactlyOnce(env, expected);
    // Eight workers, six ranges: idle workers split the busiest ones.
    const splits = started.flatMap((c) => c.events('split'));
    expect(splits.length).toBeGreaterThan(0);
    expect(ranges.length).toBe(6 + splits.length);
    expect(
      ranges
        .filter((r) => r.splitFrom !== null)
        .map((r) => r.rangeId)
        .sort(),
    ).toEqual(splits.map((l) => l.rangeId).sort());
    // Never two live leases on overlapping keys, in any snapshot; and the check saw real
    // concurrency (several live leases at once).
    expect(sampler.violations).toEqual([]);
    expect(sampler.maxLiveLeases).toBeGreaterThanOrEqual(4);
    expect(sampler.samplesWithConcurrentLeases).toBeGreaterThan(10);
  }, 150_000);

  it('a process SIGKILLed mid-range: another takes the range over once the lease expires', async () => {
    const rows = 24_000;
    const leaseMs = 1_000;
    let started: BackfillChild[] = [];
    const { env, expected } = await skewed('mpk', rows, 6, 6_000, (e) => {
      started = processes(e, 2, leaseMs);
    });
    const [victim, ...survivors] = started as [BackfillChild, ...BackfillChild[]];
    await goAll(started);
    const sampler = new RangeSampler(env);
    samplers.push(sampler);

    // Wait until process A holds a live lease on a range with plenty of keys left.
    let target: { rangeId: number; left: number } | undefined;
    await waitUntil(
      async () => {
        for (const r of await readRanges(env)) {
          if (r.live && r.status === 'running' && r.owner?.startsWith('proc-A#')) {
            const left = await keysLeft(env, r);
            if (left >= 1_000 && random() < 0.7) target = { rangeId: r.rangeId, left };
          }
        }
        return target !== undefined;
      },
      'process A holding a range with 1000 keys left',
      30_000,
      20,
    );
    const exit = await victim.kill();
    expect(exit.signal).toBe('SIGKILL');
    await waitForSessionsGone(env, `${env.schema}-A`);
    // As A left it (a batch in flight when it died may have committed since).
    const orphan = (await readRanges(env)).find((r) => r.rangeId === target?.rangeId);
    expect(orphan?.status).toBe('running');
    expect(orphan && (await keysLeft(env, orphan))).toBeGreaterThan(0);

    const summaries = await Promise.all(survivors.map((c) => c.finished(120_000)));
    await sampler.stop();
    for (const summary of summaries) expect(summary).toMatchObject({ finished: true });

    // The range was finished by another process: its last batch came from B, C or D...
    const onTarget = (
      l: BackfillChildLine,
    ): l is Extract<BackfillChildLine, { event: 'batch' | 'range-done' }> =>
      (l.event === 'batch' || l.event === 'range-done') && l.rangeId === target?.rangeId;
    const takeover = survivors.flatMap((c) => c.lines.filter(onTarget));
    expect(takeover.some((l) => l.event === 'range-done')).toBe(true);
    // ...and not before A's lease expired (when A still held it after its death).
    if (orphan?.owner?.startsWith('proc-A#') && orphan.leaseExpiresAt) {
      const first = Math.min(...takeover.map((l) => l.t));
      expect(first).toBeGreaterThanOrEqual(orphan.leaseExpiresAt.getTime() - 50);
    }
    // A's committed work is kept, and not redone: with it, the survivors' totals add up.
    const survivorsScanned = summaries.reduce((sum, s) => sum + s.rowsScanned, 0);
    const victimCommitted = rows - survivorsScanned;
    expect(victimCommitted).toBeGreaterThanOrEqual(scannedIn(victim));
    expect(victimCommitted).toBeLessThanOrEqual(scannedIn(victim) + 2 * 200);

    await expectExactlyOnce(env, expected);
    expect(sampler.violations).toEqual([]);
    expect(sampler.samplesWithConcurrentLeases).toBeGreaterThan(10);
  }, 150_000);

  it('two workers never hold overlapping key intervals, under heavy splitting', async () => {
    // Two "processes" in this one (own pools), 4 workers each, on a plan of 2 ranges: six
    // idle workers split at once, then keep splitting the busiest ranges.
    const rows = 16_000;
    const { env, expected } = await skewed('mpo', rows, 2, 8_000);
    const one = await env.addInstance({ poolSize: 6 });
    const two = await env.addInstance({ poolSize: 6 });
    let splits = 0;
    for (const { migration } of [one, two]) {
      migration.events.on('backfill:range-split', () => {
        splits += 1;
      });
    }
    const sampler = new RangeSampler(env);
    samplers.push(sampler);
    const options = { workers: 4, batchSize: 100, targetBatchMs: 0, leaseMs: 2_000 };
    const results = await Promise.all([
      one.migration.backfill({ ...options, workerId: 'one' }),
      two.migration.backfill({ ...options, workerId: 'two' }),
    ]);
    await sampler.stop();
    expect(sampler.violations).toEqual([]);
    expect(results.map((r) => r.finished)).toEqual([true, true]);
    expect(results[0].rowsScanned + results[1].rowsScanned).toBe(rows);
    expect(splits).toBeGreaterThanOrEqual(6);
    expect(sampler.maxLiveLeases).toBeGreaterThanOrEqual(6);
    expect(sampler.samplesWithConcurrentLeases).toBeGreaterThan(10);
    await expectExactlyOnce(env, expected);
  }, 120_000);
});

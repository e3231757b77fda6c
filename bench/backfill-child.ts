/**
 * One `migration.backfill()` in a process of its own, so that its memory can be measured:
 * started by `bench/backfill.ts` (not meant to be run by hand).
 *
 *   node --import tsx bench/backfill-child.ts '<json config>'
 *
 * The migration must be installed, prepared and in `dual_read`; the new table is expected to be
 * empty and the backfill plan reset (the parent does both). Prints `startedLine` on stdout
 * just before the call, then one JSON line: the backfill's time, its result, and the
 * process's peak RSS growth during the call, taken two ways: the kernel's high-water mark
 * (`VmHWM` of /proc/self/status, reset to the current RSS just before the call by writing 5 to
 * /proc/self/clear_refs) and `process.memoryUsage()` sampled every 20 ms.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { type Kysely, sql } from 'kysely';
import { type BackfillOptions, createPersonsMigration, openDatabase } from '../src/index.js';
import type { BatchLockMode } from '../src/options/backfill-options.js';

/** What the parent passes. */
export interface ChildConfig {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  readonly name: string;
  readonly newTable: string;
  readonly workers: number;
  /** Abort the backfill (after its current batches) when it takes longer than this. */
  readonly timeoutMs: number;
  /** Passed to `migration.backfill()`; unset leaves the library's default. */
  readonly lockMode?: BatchLockMode;
}

/**
 * Printed on a line of its own just before `backfill()` is called, so the parent can time
 * what it does during the backfill (live deletes) from then on.
 */
export const startedLine = '{"started":true}';

/** What the child prints. */
export interface ChildReport {
  readonly ms: number;
  readonly rowsScanned: number;
  readonly rowsCopied: number;
  readonly batches: number;
  readonly rangesDone: number;
  readonly finished: boolean;
  readonly aborted: boolean;
  readonly splits: number;
  readonly retries: number;
  /** ms from the call to the first committed batch (planning, column load, first claim). */
  readonly firstBatchMs: number;
  readonly batchSize: { readonly median: number; readonly max: number };
  readonly batchMs: { readonly median: number; readonly p95: number; readonly max: number };
  /** Session settings as the backfill's connections saw them. */
  readonly settings: { readonly synchronousCommit: string };
  /**
   * Executions of the batch statement (a named prepared statement) with a generic and with a
   * custom plan, summed over the pool's connections, read after the call.
   */
  readonly batchPlans: {
    readonly generic: number;
    readonly custom: number;
    readonly connections: number;
  };
  /** RSS when the call started, bytes. */
  readonly rssBefore: number;
  /** Kernel high-water mark during the call minus rssBefore, bytes (undefined off Linux). */
  readonly hwmGrowth: number | undefined;
  /** Highest sampled RSS minus rssBefore, bytes. */
  readonly sampledGrowth: number;
  readonly heapUsedBefore: number;
  readonly heapUsedPeak: number;
}

const statusKb = (field: string): number | undefined => {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
      readFileSync('/proc/self/status', 'utf8'),
    );
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
};

const quantile = (sorted: readonly number[], q: number) =>
  sorted.length === 0
    ? 0
    : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
  const handle = await openDatabase(config.url, { maxConnections: config.workers + 1 });
  const migration = createPersonsMigration({
    db: handle,
    schema: config.schema,
    controlSchema: config.controlSchema,
    name: config.name,
    newTable: config.newTable,
  });
  try {
    // Warm the pool and the modules outside the measured window.
    const setting = await sql<{ sync: string }>`
      SELECT current_setting('synchronous_commit') AS sync`.execute(handle.db);
    await migration.backfillStatus();

    const batchSizes: number[] = [];
    const batchMs: number[] = [];
    let splits = 0;
    let retries = 0;
    let firstBatchAt: number | undefined;
    migration.events.on('backfill:batch', ({ batchSize, ms }) => {
      firstBatchAt ??= performance.now();
      batchSizes.push(batchSize);
      batchMs.push(ms);
    });
    migration.events.on('backfill:range-split', () => {
      splits += 1;
    });
    migration.events.on('backfill:retry', () => {
      retries += 1;
    });

    const before = process.memoryUsage();
    let peakRss = before.rss;
    let peakHeap = before.heapUsed;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss);
      peakHeap = Math.max(peakHeap, m.heapUsed);
    }, 20);
    let hwmReset = false;
    try {
      writeFileSync('/proc/self/clear_refs', '5');
      hwmReset = true;
    } catch {
      // Not Linux, or not allowed: the sampled figure remains.
    }
    const rssBefore = process.memoryUsage().rss;
    const options: BackfillOptions = {
      workers: config.workers,
      signal: AbortSignal.timeout(config.timeoutMs),
      ...(config.lockMode ? { lockMode: config.lockMode } : {}),
      // BENCH_TARGET_BATCH_MS reaches the child through its environment.
      ...(process.env.BENCH_TARGET_BATCH_MS
        ? { targetBatchMs: Number(process.env.BENCH_TARGET_BATCH_MS) }
        : {}),
    };
    process.stdout.write(`${startedLine}\n`);
    const started = performance.now();
    const result = await migration.backfill(options);
    const ms = performance.now() - started;
    clearInterval(sampler);
    const end = process.memoryUsage();
    peakRss = Math.max(peakRss, end.rss);
    peakHeap = Math.max(peakHeap, end.heapUsed);
    const hwm = hwmReset ? statusKb('VmHWM') : undefined;
    const batchPlans = await batchPlanCounts(handle.db, config.workers + 1);

    const sizes = [...batchSizes].sort((a, b) => a - b);
    const times = [...batchMs].sort((a, b) => a - b);
    const report: ChildReport = {
      ms,
      rowsScanned: result.rowsScanned,
      rowsCopied: result.rowsCopied,
      batches: result.batches,
      rangesDone: result.rangesDone,
      finished: result.finished,
      aborted: result.aborted,
      splits,
      retries,
      firstBatchMs: firstBatchAt === undefined ? 0 : firstBatchAt - started,
      batchSize: { median: quantile(sizes, 0.5), max: sizes.at(-1) ?? 0 },
      batchMs: { median: quantile(times, 0.5), p95: quantile(times, 0.95), max: times.at(-1) ?? 0 },
      settings: {
        synchronousCommit: setting.rows[0]?.sync ?? '?',
      },
      batchPlans,
      rssBefore,
      hwmGrowth: hwm === undefined ? undefined : hwm - rssBefore,
      sampledGrowth: peakRss - rssBefore,
      heapUsedBefore: before.heapUsed,
      heapUsedPeak: peakHeap,
    };
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await migration.close().catch(() => {});
    await handle.close().catch(() => {});
  }
}

/**
 * Holds `n` connections of the pool at once (so each is visited) and sums, on each, the generic
 * and custom plan counts of the prepared batch statement (`pg_prepared_statements` is per
 * session).
 */
async function batchPlanCounts(
  // biome-ignore lint/suspicious/noExplicitAny: any schema.
  db: Kysely<any>,
  n: number,
): Promise<{ generic: number; custom: number; connections: number }> {
  const seen = new Map<number, { generic: number; custom: number }>();
  let arrived = 0;
  let release: () => void = () => {};
  const all = new Promise<void>((resolve) => {
    release = resolve;
  });
  await Promise.all(
    Array.from({ length: n }, () =>
      db.connection().execute(async (c) => {
        const { rows } = await sql<{ pid: number; generic: string; custom: string }>`
          SELECT pg_backend_pid() AS pid, coalesce(sum(generic_plans), 0)::text AS generic,
            coalesce(sum(custom_plans), 0)::text AS custom
          FROM pg_prepared_statements
          -- the batch statement, in either lock mode (the only one inserting old rows in key order)
          WHERE statement LIKE '%INSERT INTO%' AND statement LIKE '%ORDER BY o.team_id, o.id%'`.execute(
          c,
        );
        const row = rows[0];
        if (row) seen.set(row.pid, { generic: Number(row.generic), custom: Number(row.custom) });
        arrived += 1;
        if (arrived === n) release();
        // Unref'd: a pending timer would keep the process (and the parent's live deletes) 2 s longer.
        await Promise.race([all, sleep(2_000, undefined, { ref: false })]);
      }),
    ),
  );
  let generic = 0;
  let custom = 0;
  for (const v of seen.values()) {
    generic += v.generic;
    custom += v.custom;
  }
  return { generic, custom, connections: seen.size };
}

// Run only as a program (the parent imports startedLine).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(
      `backfill-child: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  });
}

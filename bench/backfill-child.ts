/**
 * One `migration.backfill()` in a process of its own, so that its memory can be measured:
 * started by `bench/backfill.ts` (not meant to be run by hand).
 *
 *   node --import tsx bench/backfill-child.ts '<json config>'
 *
 * The migration must be installed, prepared and in `dual_read`; the new table is expected to be
 * empty and the backfill plan reset (the parent does both). Prints one JSON line on stdout:
 * the backfill's time, its result, and the process's peak RSS growth during the call, taken
 * two ways: the kernel's high-water mark (`VmHWM` of /proc/self/status, reset to the current
 * RSS just before the call by writing 5 to /proc/self/clear_refs) and `process.memoryUsage()`
 * sampled every 20 ms.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { pgTypeOverrides } from '../src/db/type-parsers.js';
import { type BackfillOptions, createPersonsMigration, openDatabase } from '../src/index.js';

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
  /**
   * Measure a proposed change of the batch statement without editing src/: the statement's
   * text is rewritten on its way to the server (see `rewriteBatch`).
   */
  readonly rewrites: readonly BatchRewrite[];
}

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
  readonly settings: { readonly synchronousCommit: string; readonly incrementalSort: string };
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
  /** Batch statements sent rewritten / sent unchanged because the pattern was not found. */
  readonly rewrites: { readonly applied: number; readonly missed: number };
}

/**
 * Changes of the batch statement a run can measure (the text is rewritten on its way out):
 * - `probe`, the proposal: the batch's "is the range exhausted?" probe,
 *
 *   NOT EXISTS (SELECT 1 FROM old AS o, last WHERE (o.team_id, o.id) > (last.team_id, last.id)
 *               AND (o.team_id, o.id) <= (end))
 *
 * which the planner may run as a sequential scan of the old table (a join with the CTE, its
 * row-comparison estimated at half the table), and which, being inlined into the three CASEs
 * of the checkpoint, runs up to three times per batch, becomes an ordered LIMIT 1 on the key
 * index, computed once:
 *
 *   (SELECT o.id FROM old AS o WHERE (o.team_id, o.id) > ((SELECT team_id FROM last),
 *     (SELECT id FROM last)) AND (o.team_id, o.id) <= (end) ORDER BY o.team_id, o.id LIMIT 1) IS NULL
 *
 * and `finished AS MATERIALIZED`.
 * - `pk-arbiter`: `ON CONFLICT (team_id, id) DO NOTHING` (the primary key as the only arbiter:
 *   one index probed before each insert instead of every unique index).
 * - `no-share`: the batch without `FOR SHARE OF o`. NOT a safe change (the row lock is the
 *   delete protocol); it measures what replacing the per-row locks by a coarser lock (say, a
 *   shared advisory lock per team or range, taken exclusively by deletes) could save at most.
 */
export type BatchRewrite = 'probe' | 'no-share' | 'pk-arbiter';
const probePattern =
  /NOT EXISTS \(\s*SELECT 1 FROM (\S+) AS o, last\s+WHERE \(o\.team_id, o\.id\) > \(last\.team_id, last\.id\)\s+AND \(o\.team_id, o\.id\) <= \((\$\d+)::int8, (\$\d+)::int8\)\s*\)/;
const rewrites = { applied: 0, missed: 0 };

/** True for the batch statement (the only one that locks old rows FOR SHARE). */
const isBatch = (text: string) =>
  text.includes('FOR SHARE OF o') && !text.includes('pg_prepared_statements');

/**
 * The batch statement with `changes` applied, or undefined when one of them does not apply
 * (the library's SQL changed). Other statements come back unchanged.
 */
export function rewriteBatch(text: string, changes: readonly BatchRewrite[]): string | undefined {
  if (!isBatch(text)) return text;
  let out = text;
  for (const change of changes) {
    if (change === 'probe') {
      // Already gone from src/: nothing to rewrite.
      if (!probePattern.test(out)) continue;
      if (!out.includes('finished AS (')) return undefined;
      out = out
        .replace(
          probePattern,
          (_m, old: string, endTeam: string, endId: string) =>
            `(SELECT o.id FROM ${old} AS o WHERE (o.team_id, o.id) > ((SELECT team_id FROM last), (SELECT id FROM last)) ` +
            `AND (o.team_id, o.id) <= (${endTeam}::int8, ${endId}::int8) ORDER BY o.team_id, o.id LIMIT 1) IS NULL`,
        )
        .replace('finished AS (', 'finished AS MATERIALIZED (');
    } else if (change === 'pk-arbiter') {
      if (!out.includes('ON CONFLICT DO NOTHING')) return undefined;
      out = out.replace('ON CONFLICT DO NOTHING', 'ON CONFLICT (team_id, id) DO NOTHING');
    } else {
      out = out.replace('FOR SHARE OF o', '');
    }
  }
  return out;
}

function rewriteCounted(text: string, changes: readonly BatchRewrite[]): string {
  if (!isBatch(text)) return text;
  const out = rewriteBatch(text, changes);
  if (out === undefined) {
    rewrites.missed += 1;
    return text;
  }
  rewrites.applied += 1;
  return out;
}

/** A pg pool whose clients send the batch statement rewritten. */
function rewritingPool(url: string, max: number, changes: readonly BatchRewrite[]): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, types: pgTypeOverrides });
  const patched = new WeakSet<object>();
  const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
  (pool as unknown as { connect: () => Promise<pg.PoolClient> }).connect = async () => {
    const client = await connect();
    if (!patched.has(client)) {
      patched.add(client);
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (
        first: unknown,
        ...rest: unknown[]
      ) => {
        if (typeof first === 'string') return query(rewriteCounted(first, changes), ...rest);
        if (
          first &&
          typeof first === 'object' &&
          typeof (first as { text?: unknown }).text === 'string'
        ) {
          const config = first as { text: string };
          return query({ ...config, text: rewriteCounted(config.text, changes) }, ...rest);
        }
        return query(first, ...rest);
      };
    }
    return client;
  };
  return pool;
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
  const pool =
    config.rewrites.length > 0
      ? rewritingPool(config.url, config.workers + 1, config.rewrites)
      : undefined;
  const handle = pool
    ? await openDatabase(pool, { preparedStatements: true })
    : await openDatabase(config.url, { maxConnections: config.workers + 1 });
  const migration = createPersonsMigration({
    db: handle,
    schema: config.schema,
    controlSchema: config.controlSchema,
    name: config.name,
    newTable: config.newTable,
  });
  try {
    // Warm the pool and the modules outside the measured window.
    const setting = await sql<{ sync: string; incsort: string }>`
      SELECT current_setting('synchronous_commit') AS sync,
        current_setting('enable_incremental_sort') AS incsort`.execute(handle.db);
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
    };
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
        incrementalSort: setting.rows[0]?.incsort ?? '?',
      },
      batchPlans,
      rssBefore,
      hwmGrowth: hwm === undefined ? undefined : hwm - rssBefore,
      sampledGrowth: peakRss - rssBefore,
      heapUsedBefore: before.heapUsed,
      heapUsedPeak: peakHeap,
      rewrites,
    };
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await migration.close().catch(() => {});
    await handle.close().catch(() => {});
    // A pool handed to openDatabase is the caller's to end.
    await pool?.end().catch(() => {});
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
          FROM pg_prepared_statements WHERE statement LIKE '%FOR SHARE OF o%'`.execute(c);
        const row = rows[0];
        if (row) seen.set(row.pid, { generic: Number(row.generic), custom: Number(row.custom) });
        arrived += 1;
        if (arrived === n) release();
        await Promise.race([all, sleep(2_000)]);
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

// Run only as a program (the parent imports rewriteBatch for its EXPLAIN).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(
      `backfill-child: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  });
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { type BackfillEta, BackfillEtaEstimator } from './backfill-eta.js';

/**
 * One range of a backfill plan, as `status()` shows it to any process.
 *
 * @example
 * ```ts
 * const slow = (await migration.backfillStatus())?.ranges.filter((r) => r.status === 'running');
 * ```
 */
export interface BackfillRangeStatus {
  /** The range's number in the plan (ranges split off later get new numbers). */
  readonly rangeId: number;
  /** `pending` (never claimed), `running` (claimed, not at its end yet) or `done`. */
  readonly status: 'pending' | 'running' | 'done';
  /** Old rows in the range when it was planned or split. */
  readonly rowsEstimated: number;
  /** Old rows of the range read so far. */
  readonly rowsScanned: number;
  /** Rows of the range the backfill inserted (rows the new table had already are not). */
  readonly rowsCopied: number;
  /** The worker holding the range, while its lease is live. */
  readonly worker: string | undefined;
  /** The range this one was split from, when an idle worker split it off. */
  readonly splitFrom: number | undefined;
}

/**
 * One worker that committed a batch in the last 10 s, as `status()` shows it to any process.
 *
 * @example
 * ```ts
 * for (const w of (await migration.backfillStatus())?.workers ?? []) {
 *   console.log(`${w.workerId}: ${w.rowsScanned} rows in ${w.batches} batches, ${Math.round(w.ratePerSecond)} rows/s`);
 * }
 * ```
 */
export interface BackfillWorkerStatus {
  /**
   * The worker's id (option `workerId`, or host, pid and a suffix, with its number), as in
   * `ranges[].worker`.
   */
  readonly workerId: string;
  /** Old rows this worker read since it started. */
  readonly rowsScanned: number;
  /** Batches this worker committed since it started. */
  readonly batches: number;
  /** Its smoothed rows per second over its last batches. */
  readonly ratePerSecond: number;
  /** When its last batch committed (the server's clock). */
  readonly lastBatchAt: Date;
}

/**
 * Progress of a migration's backfill, read from the control schema (so any process sees the
 * same figures, whoever runs the workers).
 *
 * @example
 * ```ts
 * const progress = await migration.backfillStatus();
 * if (progress) console.log(`${progress.percent.toFixed(1)}%, ETA ${progress.etaSeconds ?? '?'} s`);
 * ```
 */
export interface BackfillStatus {
  /**
   * `done` when every range is done; `paused` after `pauseBackfill()`; else `running`, also
   * while no worker runs (a stopped backfill waiting to be resumed: see `activeWorkers`).
   */
  readonly state: 'running' | 'paused' | 'done';
  /** When the plan was made (the first `backfill()` call). */
  readonly plannedAt: Date;
  /** When the last range was done; undefined until then. */
  readonly finishedAt: Date | undefined;
  /** Old rows when the plan was made (the fixed end of the backfill). */
  readonly rowsEstimated: number;
  /** Old rows read so far. */
  readonly rowsScanned: number;
  /** Rows inserted by the backfill (rows copied earlier by copy-on-write are not). */
  readonly rowsCopied: number;
  /** Rows left to read, estimated per range from the plan. */
  readonly rowsToGo: number;
  /** `rowsScanned` out of `rowsScanned + rowsToGo`, from 0 to 100. */
  readonly percent: number;
  /** Smoothed rows per second of the workers that committed a batch in the last 10 s. */
  readonly ratePerSecond: number;
  /**
   * Seconds to go at the workers' current smoothed rate; undefined when nothing is being
   * copied. {@link BackfillStatus.eta} is the better estimate: per range, with its range.
   */
  readonly etaSeconds: number | undefined;
  /**
   * When it will end and how sure that is, from each range's rows to go and observed rate
   * (settles as the same migration object is asked again: poll it).
   */
  readonly eta: BackfillEta;
  /** The rows-per-second ceiling shared by every worker; undefined when there is none. */
  readonly maxRowsPerSecond: number | undefined;
  /** Workers (of any process) that committed a batch in the last 10 s and are still running. */
  readonly activeWorkers: number;
  /** Every range of the plan, in range order. */
  readonly ranges: readonly BackfillRangeStatus[];
  /** The workers counted in `activeWorkers`, with what each has done. */
  readonly workers: readonly BackfillWorkerStatus[];
}

/**
 * Reads the backfill's progress, or undefined when it was never planned. `estimator` keeps
 * what earlier reads saw, so that the ETA settles (a fresh one gives a settling estimate).
 * @internal
 */
export async function readBackfillStatus(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  estimator: BackfillEtaEstimator = new BackfillEtaEstimator(),
): Promise<BackfillStatus | undefined> {
  const control = (name: string) => sql.id(options.controlSchema, name);
  const plan = await sql<{
    status: string;
    paused: boolean;
    planned_at: Date;
    finished_at: Date | null;
    rows_estimated: string;
    max_rows_per_second: number | null;
  }>`SELECT status, paused, planned_at, finished_at, rows_estimated::text, max_rows_per_second
     FROM ${control('backfill')} WHERE migration = ${options.name}`.execute(db);
  const head = plan.rows[0];
  if (!head) return undefined;
  const { rows } = await sql<{
    range_id: number;
    status: 'pending' | 'running' | 'done';
    rows_estimated: string;
    rows_scanned: string;
    rows_copied: string;
    worker: string | null;
    split_from: number | null;
  }>`SELECT range_id, status, rows_estimated::text, rows_scanned::text, rows_copied::text,
       CASE WHEN lease_expires_at > clock_timestamp() THEN lease_owner END AS worker, split_from
     FROM ${control('backfill_range')} WHERE migration = ${options.name}
     ORDER BY range_id`.execute(db);
  const ranges: BackfillRangeStatus[] = rows.map((r) => ({
    rangeId: r.range_id,
    status: r.status,
    rowsEstimated: Number(r.rows_estimated),
    rowsScanned: Number(r.rows_scanned),
    rowsCopied: Number(r.rows_copied),
    worker: r.worker ?? undefined,
    splitFrom: r.split_from ?? undefined,
  }));
  const rowsScanned = sum(ranges.map((r) => r.rowsScanned));
  const rowsToGo = sum(
    ranges
      .filter((r) => r.status !== 'done')
      .map((r) => Math.max(0, r.rowsEstimated - r.rowsScanned)),
  );
  const workers = await readRecentWorkers(db, options);
  const done = head.status === 'done';
  // Killed workers linger in the worker table for up to 10 s: a finished backfill has none.
  const liveWorkers = done ? [] : workers;
  const ratePerSecond = head.paused ? 0 : sum(liveWorkers.map((w) => w.ratePerSecond));
  const progress = {
    state: done ? ('done' as const) : head.paused ? ('paused' as const) : ('running' as const),
    plannedAt: head.planned_at,
    finishedAt: head.finished_at ?? undefined,
    rowsEstimated: Number(head.rows_estimated),
    rowsScanned,
    rowsCopied: sum(ranges.map((r) => r.rowsCopied)),
    rowsToGo: done ? 0 : rowsToGo,
    percent: done ? 100 : (100 * rowsScanned) / Math.max(1, rowsScanned + rowsToGo),
    ratePerSecond,
    etaSeconds: done ? 0 : ratePerSecond > 0 ? rowsToGo / ratePerSecond : undefined,
    maxRowsPerSecond: head.max_rows_per_second ?? undefined,
    activeWorkers: liveWorkers.length,
    ranges,
    workers: liveWorkers,
  };
  return { ...progress, eta: estimator.estimate(progress) };
}

/** Workers that committed a batch in the last 10 s (one that died or finished drops out). */
async function readRecentWorkers(
  db: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<BackfillWorkerStatus[]> {
  const { rows } = await sql<{
    worker_id: string;
    rows_scanned: string;
    batches: number;
    rate: number;
    updated_at: Date;
  }>`
    SELECT worker_id, rows_scanned::text, batches, updated_at,
      CASE WHEN smoothed_seconds > 0 THEN smoothed_rows / smoothed_seconds ELSE 0 END AS rate
    FROM ${sql.id(options.controlSchema, 'backfill_worker')}
    WHERE migration = ${options.name} AND updated_at > clock_timestamp() - interval '10 seconds'
    ORDER BY worker_id`.execute(db);
  return rows.map((w) => ({
    workerId: w.worker_id,
    rowsScanned: Number(w.rows_scanned),
    batches: w.batches,
    ratePerSecond: w.rate,
    lastBatchAt: w.updated_at,
  }));
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

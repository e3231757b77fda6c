import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { integerIn, parseOptions } from '../util/parse-options.js';

const backfillOptionsSchema = z
  .object({
    /** Ranges copied at once by this process, 1 to 64 (default 2); keep it within the pool size. */
    workers: integerIn('workers', 1, 64).default(2),
    /** Rows of a worker's first batch (default 1000); then adapted to `targetBatchMs`. */
    batchSize: integerIn('batchSize', 1, 100_000).default(1_000),
    /** The most rows a batch adapts up to (default 20000). */
    maxBatchSize: integerIn('maxBatchSize', 1, 100_000).default(20_000),
    /** How long a batch should take, in ms (default 250); 0 keeps `batchSize` fixed. */
    targetBatchMs: integerIn('targetBatchMs', 0, 60_000).default(250),
    /**
     * Rows-per-second ceiling shared by every worker of every process; taken when this call
     * creates the plan (`setBackfillRate()` changes it live). Default: none.
     */
    maxRowsPerSecond: integerIn('maxRowsPerSecond', 1, 100_000_000).optional(),
    /**
     * Ranges the plan cuts the keys into (default: at least 16, about 50,000 rows each). Must
     * equal the existing plan's when resuming: omit it to resume.
     */
    ranges: integerIn('ranges', 1, 100_000).optional(),
    /**
     * How long a worker's claim on a range lasts unrenewed, in ms (default 30000): a dead worker's
     * range is taken over after it.
     */
    leaseMs: integerIn('leaseMs', 200, 3_600_000).default(30_000),
    /**
     * How long a batch waits for a lock held by a live write before it gives way and retries, in
     * ms (default 200); 0 keeps the session's `lock_timeout`.
     */
    batchLockTimeoutMs: integerIn('batchLockTimeoutMs', 0, 600_000).default(200),
    /**
     * Retries of a batch on a transient failure, and times a locked range is put off (default 5).
     */
    maxRetries: integerIn('maxRetries', 0, 100).default(5),
    /** First retry delay in ms (default 100), doubled at each retry, with jitter. */
    retryBaseMs: integerIn('retryBaseMs', 1, 60_000).default(100),
    /**
     * Wait while a standby in `pg_stat_replication` lags more than this, in ms. Default: no check.
     */
    maxReplicationLagMs: integerIn('maxReplicationLagMs', 1, 3_600_000).optional(),
    /** How a batch keeps deletes away from the rows it copies: see {@link BatchLockMode}. */
    lockMode: z
      .enum(['ranges', 'rows'], { error: "lockMode must be 'ranges' or 'rows'" })
      .default('ranges'),
    /**
     * Name of this process's workers in status and events (default: host, pid and a random suffix).
     */
    workerId: z
      .string({ error: 'workerId must be a string' })
      .min(1, { error: 'workerId must not be empty' })
      .max(200, { error: 'workerId must be at most 200 characters' })
      .optional(),
    /** Aborting it stops each worker after its current batch (resumable); the result says `aborted`. */
    signal: z
      .custom<AbortSignal>((v) => v instanceof AbortSignal, {
        error: 'signal must be an AbortSignal',
      })
      .optional(),
  })
  .strict()
  .refine((o) => o.batchSize <= o.maxBatchSize, {
    error: 'batchSize must not exceed maxBatchSize',
    path: ['batchSize'],
  });

/**
 * Options of `migration.backfill()`. All optional.
 *
 * @example
 * ```ts
 * const controller = new AbortController();
 * await migration.backfill({
 *   workers: 4,              // ranges copied at once by this process
 *   batchSize: 1_000,        // first batch; then adapted to targetBatchMs
 *   targetBatchMs: 250,
 *   maxRowsPerSecond: 20_000, // ceiling shared by every worker of every process
 *   batchLockTimeoutMs: 200,  // a batch that waits longer for a lock gives way and retries
 *   lockMode: 'ranges',       // the default; or 'rows': see BatchLockMode
 *   signal: controller.signal,
 * });
 * ```
 *
 * @useDeclaredType
 */
export type BackfillOptions = z.input<typeof backfillOptionsSchema>;

/**
 * How a backfill batch keeps deletes of the old rows it copies away (rule
 * `copy-excludes-delete` in docs/correctness.md; both are safe, and workers in different modes
 * can share one backfill):
 *
 * - `'ranges'` (default): each batch locks its own range's control row `FOR UPDATE` before it
 *   copies, and writes nothing into the old rows; a delete in `dual_read` locks the control
 *   row of the range that still has its key to copy `FOR KEY SHARE`. So a delete waits only
 *   when its key lies ahead of the checkpoint of a range with a batch in flight (up to one
 *   batch, about `targetBatchMs`), and a batch waits for the deletes in flight in its own
 *   range. Keep `batchLockTimeoutMs` above 0: a batch stuck behind a live write's uncommitted
 *   row holds its range, and that range's deletes wait for as long as it does.
 * - `'rows'`: each batch reads its old rows `FOR SHARE`, as gh-ost and pt-online-schema-change
 *   do; a delete waits only when its own row is in a batch in flight. Every copied old row
 *   gets a lock written into it (a WAL record, and a full-page image of every old page after a
 *   checkpoint: about 1.8x the WAL of one `INSERT ... SELECT`, and slower: see the README's
 *   benchmark). For a table whose deletes concentrate where the backfill is copying.
 *
 * @example
 * ```ts
 * await migration.backfill({ lockMode: 'rows' });
 * ```
 */
export type BatchLockMode = 'ranges' | 'rows';

/** Backfill options after validation, with a worker id. @internal */
export type ResolvedBackfillOptions = Readonly<
  z.output<typeof backfillOptionsSchema> & { workerId: string }
>;

/** @internal */
export function resolveBackfillOptions(input: unknown): ResolvedBackfillOptions {
  const parsed = parseOptions(backfillOptionsSchema, input, 'backfill()');
  return Object.freeze({
    ...parsed,
    workerId: parsed.workerId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
  });
}

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { integerIn, parseOptions } from '../migration/options.js';

const backfillOptionsSchema = z
  .object({
    workers: integerIn('workers', 1, 64).default(2),
    batchSize: integerIn('batchSize', 1, 100_000).default(1_000),
    maxBatchSize: integerIn('maxBatchSize', 1, 100_000).default(20_000),
    targetBatchMs: integerIn('targetBatchMs', 0, 60_000).default(250),
    maxRowsPerSecond: integerIn('maxRowsPerSecond', 1, 100_000_000).optional(),
    ranges: integerIn('ranges', 1, 100_000).optional(),
    leaseMs: integerIn('leaseMs', 200, 3_600_000).default(30_000),
    batchLockTimeoutMs: integerIn('batchLockTimeoutMs', 0, 600_000).default(200),
    maxRetries: integerIn('maxRetries', 0, 100).default(5),
    retryBaseMs: integerIn('retryBaseMs', 1, 60_000).default(100),
    maxReplicationLagMs: integerIn('maxReplicationLagMs', 1, 3_600_000).optional(),
    lockMode: z
      .enum(['fence', 'rows'], { error: "lockMode must be 'fence' or 'rows'" })
      .default('rows'),
    workerId: z
      .string({ error: 'workerId must be a string' })
      .min(1, { error: 'workerId must not be empty' })
      .max(200, { error: 'workerId must be at most 200 characters' })
      .optional(),
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
 *   lockMode: 'rows',         // or 'fence': see BatchLockMode
 *   signal: controller.signal,
 * });
 * ```
 */
export type BackfillOptions = z.input<typeof backfillOptionsSchema>;

/**
 * How a backfill batch keeps deletes of the old rows it copies away (rule 1 of the delete
 * protocol; both are safe, and workers in different modes can share one backfill):
 *
 * - `'rows'` (default): each batch reads its old rows `FOR SHARE`, as gh-ost and
 *   pt-online-schema-change do; a delete waits only when its own row is in a batch in flight.
 *   Every copied old row gets a lock written into it (a WAL record, and a full-page image of
 *   every old page after a checkpoint: about 1.8x the WAL of one `INSERT ... SELECT`).
 * - `'fence'`: each batch holds the control schema's delete fence (`SHARE` on an empty table
 *   that deletes in `dual_read` take `ROW EXCLUSIVE`) for its transaction, and writes nothing
 *   into the old rows: about a quarter less time than `'rows'` while nothing is deleted. But **every
 *   delete made while a batch is in flight waits for that batch** (up to one batch, about
 *   `targetBatchMs`; a smaller `targetBatchMs` such as 50 shortens the wait at little cost),
 *   and every batch waits for the deletes in flight, so under a steady stream of deletes (or
 *   merges, which delete) the fenced backfill loses most of its lead (bench/backfill.ts:
 *   1.30x its own time at 50 deletes a second, against 1.00x for `'rows'`). For backfills
 *   while deletes are rare. Creates, updates and reads never wait for the fence. Keep
 *   `batchLockTimeoutMs` above 0 in this mode: a batch stuck behind a lock (a live write's
 *   uncommitted row) holds the fence, so deletes wait for as long as it does.
 *
 * @example
 * ```ts
 * // a quiet night, few deletes: copy faster, deletes wait for the batch in flight
 * await migration.backfill({ lockMode: 'fence', targetBatchMs: 50 });
 * ```
 */
export type BatchLockMode = 'fence' | 'rows';

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

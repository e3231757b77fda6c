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
 *   signal: controller.signal,
 * });
 * ```
 */
export type BackfillOptions = z.input<typeof backfillOptionsSchema>;

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

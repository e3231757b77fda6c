import { z } from 'zod';
import { integerIn, parseOptions } from '../util/parse-options.js';

const prepareOptionsSchema = z
  .object({
    /**
     * Hash-partition the new table by `team_id` into this many partitions (2 to 1024). Default: not
     * partitioned.
     */
    partitions: integerIn('partitions', 2, 1024).optional(),
    /**
     * Run it all in a transaction that is rolled back: the DDL and the findings, nothing changed.
     */
    dryRun: z.boolean({ error: 'dryRun must be true or false' }).default(false),
  })
  .strict();

/**
 * Options of `migration.prepare()`.
 *
 * @example
 * ```ts
 * await migration.prepare({ partitions: 16 }); // new table hash-partitioned by team_id
 * const plan = await migration.prepare({ dryRun: true }); // the DDL and findings, nothing changed
 * ```
 *
 * @useDeclaredType
 */
export type PrepareOptions = z.input<typeof prepareOptionsSchema>;

/** Prepare options after validation. @internal */
export type ResolvedPrepareOptions = Readonly<z.output<typeof prepareOptionsSchema>>;

/** @internal */
export function resolvePrepareOptions(input: unknown): ResolvedPrepareOptions {
  return parseOptions(prepareOptionsSchema, input, 'prepare()');
}

import { z } from 'zod';
import { integerIn, parseOptions } from '../util/parse-options.js';

const prepareOptionsSchema = z
  .object({
    partitions: integerIn('partitions', 2, 1024).optional(),
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
 */
export type PrepareOptions = z.input<typeof prepareOptionsSchema>;

/** Prepare options after validation. @internal */
export type ResolvedPrepareOptions = Readonly<z.output<typeof prepareOptionsSchema>>;

/** @internal */
export function resolvePrepareOptions(input: unknown): ResolvedPrepareOptions {
  return parseOptions(prepareOptionsSchema, input, 'prepare()');
}

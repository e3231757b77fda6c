import { z } from 'zod';
import { identifier, integerIn, parseOptions } from '../util/parse-options.js';

const verifyOptionsSchema = z
  .object({
    method: z
      .enum(['join', 'checksum'], { error: "method must be 'join' or 'checksum'" })
      .default('join'),
    columns: z
      .array(identifier('columns[]'), {
        error: 'columns must be an array of column names',
      })
      .min(1, { error: 'columns must name at least one column' })
      .optional(),
    ranges: z
      .array(integerIn('ranges[]', 1, 1_000_000), {
        error: 'ranges must be an array of backfill range ids',
      })
      .min(1, { error: 'ranges must name at least one backfill range' })
      .optional(),
    chunkRows: integerIn('chunkRows', 1_000, 100_000_000).default(1_000_000),
    distinctIds: z.boolean({ error: 'distinctIds must be true or false' }).default(true),
    repair: z.boolean({ error: 'repair must be true or false' }).default(false),
    settleMs: integerIn('settleMs', 0, 600_000).default(500),
    recheckAttempts: integerIn('recheckAttempts', 0, 100).default(3),
    maxKeys: integerIn('maxKeys', 0, 1_000_000).default(1_000),
    leafRows: integerIn('leafRows', 1, 1_000_000).default(2_000),
    fanout: integerIn('fanout', 2, 1_024).default(16),
    signal: z
      .custom<AbortSignal>((v) => v instanceof AbortSignal, {
        error: 'signal must be an AbortSignal',
      })
      .optional(),
  })
  .strict();

/**
 * Options of `migration.verify()`. All optional.
 *
 * @example
 * ```ts
 * const result = await migration.verify({
 *   method: 'join',              // one server-side pass (default); 'checksum': checksum + bisect
 *   columns: ['properties', 'is_identified'], // content compared (default: all but key/version)
 *   ranges: [3, 4],              // only these backfill ranges (default: every key)
 *   repair: true,                // copy missing and stale rows found, then re-check them
 *   maxKeys: 100,                // keys returned inline; migration.mismatches(id) pages all
 *   signal: controller.signal,   // stops between chunks: verify() rejects, run stored 'aborted'
 * });
 * ```
 */
export type VerifyOptions = z.input<typeof verifyOptionsSchema>;

/** @internal */
export type ResolvedVerifyOptions = Readonly<z.output<typeof verifyOptionsSchema>>;

/** @internal */
export function resolveVerifyOptions(input: unknown): ResolvedVerifyOptions {
  return parseOptions(verifyOptionsSchema, input, 'verify()');
}

import { z } from 'zod';
import { identifier, integerIn, parseOptions } from '../util/parse-options.js';

const verifyOptionsSchema = z
  .object({
    /**
     * `join` (default): one server-side pass per chunk; `checksum`: checksums per chunk, bisected
     * where they differ.
     */
    method: z
      .enum(['join', 'checksum'], { error: "method must be 'join' or 'checksum'" })
      .default('join'),
    /** Columns whose content is compared (default: every column but the key and `version`). */
    columns: z
      .array(identifier('columns[]'), {
        error: 'columns must be an array of column names',
      })
      .min(1, { error: 'columns must name at least one column' })
      .optional(),
    /**
     * Check only these backfill ranges (the run is stored with `full: false`). Default: every key.
     */
    ranges: z
      .array(integerIn('ranges[]', 1, 1_000_000), {
        error: 'ranges must be an array of backfill range ids',
      })
      .min(1, { error: 'ranges must name at least one backfill range' })
      .optional(),
    /**
     * Keys per statement (default 1000000): bigger chunks mean fewer passes, smaller ones shorter
     * snapshots.
     */
    chunkRows: integerIn('chunkRows', 1_000, 100_000_000).default(1_000_000),
    /**
     * Also check the distinct ids (`orphan_distinct_id`, `person_without_distinct_id`); default
     * true.
     */
    distinctIds: z.boolean({ error: 'distinctIds must be true or false' }).default(true),
    /**
     * Copy `missing_in_new` rows and overwrite `older_in_new` ones, then re-check them (default
     * false).
     */
    repair: z.boolean({ error: 'repair must be true or false' }).default(false),
    /** How long a mismatched key is left to settle before it is re-checked, in ms (default 500). */
    settleMs: integerIn('settleMs', 0, 600_000).default(500),
    /** Re-checks of a key that keeps changing (default 3). */
    recheckAttempts: integerIn('recheckAttempts', 0, 100).default(3),
    /**
     * Mismatched keys returned in the result (default 1000); `migration.mismatches(id)` lists them
     * all.
     */
    maxKeys: integerIn('maxKeys', 0, 1_000_000).default(1_000),
    /** `checksum`: rows below which a differing part is compared key by key (default 2000). */
    leafRows: integerIn('leafRows', 1, 1_000_000).default(2_000),
    /** `checksum`: parts a differing chunk is cut into at each step (default 16). */
    fanout: integerIn('fanout', 2, 1_024).default(16),
    /**
     * Aborting it stops the run between chunks: `verify()` rejects and the run is stored as
     * `aborted`.
     */
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
 *
 * @useDeclaredType
 */
export type VerifyOptions = z.input<typeof verifyOptionsSchema>;

/** @internal */
export type ResolvedVerifyOptions = Readonly<z.output<typeof verifyOptionsSchema>>;

/** @internal */
export function resolveVerifyOptions(input: unknown): ResolvedVerifyOptions {
  return parseOptions(verifyOptionsSchema, input, 'verify()');
}

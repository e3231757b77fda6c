import type { PersonsMigration } from '../migration/persons-migration.js';
import { isAgreeing } from '../model/mismatch-class.js';
import type { VerifyOptions } from '../options/verify-options.js';
import type { VerificationResult } from '../verify/run-verify.js';

/**
 * Options of {@link assertVerifiesClean}: those of `migration.verify()`, plus how many keys
 * the failure message lists.
 *
 * @example
 * ```ts
 * await assertVerifiesClean(migration, { columns: ['properties'], keysInMessage: 5 });
 * ```
 */
export type AssertVerifiesCleanOptions = Omit<VerifyOptions, 'repair'> & {
  /** Mismatched keys named in the error message. Default 20. */
  readonly keysInMessage?: number;
};

/**
 * The error {@link assertVerifiesClean} throws: an `AssertionError`-named error (test runners
 * show it as a failed assertion) carrying the whole verification result.
 *
 * @example
 * ```ts
 * try { await assertVerifiesClean(migration); } catch (err) {
 *   if (err instanceof VerificationAssertionError) console.log(err.result.counts);
 * }
 * ```
 */
export class VerificationAssertionError extends Error {
  constructor(
    message: string,
    /** The whole result of the failed verification: counts, keys, the run's id. */
    readonly result: VerificationResult,
  ) {
    super(message);
    this.name = 'AssertionError';
  }
}

/**
 * For users' own test suites (vitest, jest, node:test): runs `migration.verify()` and throws a
 * {@link VerificationAssertionError} naming the first mismatched keys and the counts per class
 * when the new table does not agree with the old one. Resolves with the result when clean.
 * Never repairs, never prints row values.
 *
 * @example
 * ```ts
 * import { assertVerifiesClean } from 'pg-dual-read/testing';
 *
 * it('the backfill copied every person', async () => {
 *   await migration.backfill();
 *   await assertVerifiesClean(migration);
 * });
 * ```
 */
export async function assertVerifiesClean(
  migration: PersonsMigration,
  options: AssertVerifiesCleanOptions = {},
): Promise<VerificationResult> {
  const { keysInMessage = 20, ...verifyOptions } = options;
  const result = await migration.verify({
    ...verifyOptions,
    maxKeys: Math.max(keysInMessage, verifyOptions.maxKeys ?? 0),
  });
  if (result.clean) return result;
  const counts = Object.entries(result.counts)
    .filter(([cls, n]) => n && !isAgreeing(cls))
    .map(([cls, n]) => `${cls}: ${n}`)
    .join(', ');
  const shown = result.keys.slice(0, keysInMessage);
  const lines = shown.map((k) => `  ${k.class} team_id=${k.teamId} id=${k.personId}`);
  const more = result.mismatches + (result.counts.person_without_distinct_id ?? 0) - shown.length;
  throw new VerificationAssertionError(
    `Migration "${migration.options.name}" does not verify clean: ${result.mismatches} mismatched ` +
      `key(s) (${counts}). ${shown.length === 0 ? '' : 'First keys:\n'}${lines.join('\n')}` +
      (more > 0
        ? `\n  ... and ${more} more: migration.mismatches('${result.id}') lists them all.`
        : ''),
    result,
  );
}

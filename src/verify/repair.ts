import { setTimeout as sleep } from 'node:timers/promises';
import { setLocal } from '../db/local-settings.js';
import { isSqlState } from '../db/query-failed.js';
import { VerifyRefusedError } from '../errors.js';
import type { Key } from '../model/key.js';
import type { PersonColumns } from '../persons/person-columns.js';
import { PhaseStore } from '../phases/phase-store.js';
import { repairPage } from './repair-copy.js';
import { VerificationStore } from './verification-store.js';
import type { VerifyContext } from './verify-context.js';

/**
 * What a repair (`verify({ repair: true })`) changed. It never deletes, and leaves
 * `content_differs` and `resurrected` keys to a person to decide.
 *
 * @example
 * ```ts
 * const { repair } = await migration.verify({ repair: true });
 * console.log(`copied ${repair?.copied}, updated ${repair?.updated}`);
 * ```
 */
export interface RepairResult {
  /** Old rows copied into the new table (keys that were `missing_in_new`). */
  readonly copied: number;
  /** New rows overwritten by a newer old row (keys that were `older_in_new`). */
  readonly updated: number;
  /** Keys looked at whose rows had changed meanwhile and needed nothing. */
  readonly skipped: number;
}

const keysPerTransaction = 500;
/**
 * A page waits at most this long for a row lock held by a live write, then rolls back and is
 * retried: below `deadlock_timeout` (1 s), so when a repair and a merge would deadlock, the
 * repair gives way before Postgres has to pick a victim (which could be the merge).
 */
const pageLockTimeoutMs = 200;
const maxPageAttempts = 8;
const retryableStates = ['55P03', '40P01', '40001'];

/**
 * Repairs the run's open `missing_in_new` and `older_in_new` keys, a page of keys per
 * transaction, under rules `phase-fence` (a repair only writes in `dual_read`),
 * `copy-excludes-delete` (old rows read `FOR SHARE`) and `copy-never-overwrites` (copies with
 * `ON CONFLICT DO NOTHING`, overwrites only a new row still older than the old one). It never
 * deletes anything and never touches `content_differs` keys: which side is right there is the
 * operator's decision. Each page waits at most {@link pageLockTimeoutMs} for a live write's
 * locks, then gives way and retries.
 * @internal
 *
 * @example
 * ```ts
 * const { copied, updated } = await repairMismatches(context, await loadPersonColumns(db, options));
 * ```
 */
export async function repairMismatches(
  context: VerifyContext,
  columns: PersonColumns,
): Promise<RepairResult> {
  const store = new VerificationStore(context.options);
  const fence = new PhaseStore(context.options);
  let copied = 0;
  let updated = 0;
  let skipped = 0;
  let after: Key | undefined;
  for (;;) {
    const keys = await store.openRepairableKeys(
      context.db,
      context.verificationId,
      after,
      keysPerTransaction,
    );
    if (keys.length === 0) break;
    after = keys.at(-1);
    const done = await givingWay(() =>
      context.db.transaction().execute(async (trx) => {
        await setLocal(trx, { lock_timeout: `${pageLockTimeoutMs}ms` });
        const { phase } = await fence.fence(trx);
        if (phase !== 'dual_read') {
          throw new VerifyRefusedError(
            `The repair copies old rows while services read both tables, so it runs in phase ` +
              `dual_read only; migration "${context.options.name}" is now in phase ${phase}. ` +
              'Nothing of this page was changed.',
          );
        }
        const changed = await repairPage(trx, context, columns, keys);
        await store.markRepaired(trx, context.verificationId, keys);
        return changed;
      }),
    );
    copied += done.copied;
    updated += done.updated;
    skipped += keys.length - done.copied - done.updated;
  }
  return { copied, updated, skipped };
}

/** Runs a page transaction, retrying with backoff when it gave way to a live write. */
async function givingWay<T>(page: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await page();
    } catch (error) {
      const retryable = retryableStates.some((state) => isSqlState(error, state));
      if (!retryable || attempt >= maxPageAttempts) throw error;
      await sleep(50 * 2 ** attempt * (0.5 + Math.random()));
    }
  }
}

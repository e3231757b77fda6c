import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { isSqlState } from '../db/query-failed.js';
import { tagged } from '../db/statement-tag.js';
import { VerifyRefusedError } from '../errors.js';
import type { Key } from '../model/key.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import { PhaseStore } from '../phases/phase-store.js';
import { VerificationStore } from './verification-store.js';
import type { VerifyContext } from './verify-context.js';

/** What a repair changed. */
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
        await sql`SELECT set_config('lock_timeout', ${`${pageLockTimeoutMs}ms`}, true)`.execute(
          trx,
        );
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

/**
 * Copies the old rows of `keys` the new table lacks and overwrites the new rows still older
 * than their old row, reading the old rows `FOR SHARE` (rules `copy-never-overwrites` and
 * `copy-excludes-delete`).
 */
async function repairPage(
  trx: AnyDb,
  { tables }: VerifyContext,
  columns: PersonColumns,
  keys: readonly Key[],
): Promise<{ copied: number; updated: number }> {
  const copyable = columns.copyable;
  const settable = copyable.filter((c) => c !== 'team_id' && c !== 'id');
  const keySet = sql`SELECT k.team_id, k.person_id
    FROM unnest(${keys.map((k) => k.team)}::bigint[], ${keys.map((k) => k.id)}::bigint[])
      AS k(team_id, person_id)`;
  const inserted = await tagged(
    'repair-copy',
    sql`INSERT INTO ${tables.new} (${columnList(copyable)})
      SELECT ${columnList(copyable, 'o')} FROM ${tables.old} AS o
      WHERE (o.team_id, o.id) IN (${keySet})
        AND NOT EXISTS (SELECT 1 FROM ${tables.new} AS n WHERE n.team_id = o.team_id AND n.id = o.id)
      FOR SHARE OF o
      ON CONFLICT DO NOTHING`,
  ).execute(trx);
  const assignments = sql.join(settable.map((c) => sql`${sql.id(c)} = o.${sql.id(c)}`));
  const overwritten = await sql`UPDATE ${tables.new} AS n SET ${assignments}
    FROM (SELECT ${columnList(copyable, 'o0')} FROM ${tables.old} AS o0
          WHERE (o0.team_id, o0.id) IN (${keySet}) FOR SHARE OF o0) AS o
    WHERE n.team_id = o.team_id AND n.id = o.id
      AND coalesce(n.version, 0) < coalesce(o.version, 0)`.execute(trx);
  return {
    copied: Number(inserted.numAffectedRows ?? 0n),
    updated: Number(overwritten.numAffectedRows ?? 0n),
  };
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

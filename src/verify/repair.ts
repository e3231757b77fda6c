import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { isSqlState } from '../db/query-failed.js';
import { tagged } from '../db/statement-tag.js';
import { VerifyRefusedError } from '../errors.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import { repairableClasses } from './mismatch-class.js';
import { classArray, type VerifyContext } from './verify-context.js';

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
 * transaction, with the backfill's race protocol: the phase fence (`FOR KEY SHARE` on the
 * control row, so a repair only writes in `dual_read`), old rows read `FOR SHARE` (a delete
 * of the old row waits for this transaction, then removes the new row in a later statement,
 * so nothing deleted comes back), copies with `ON CONFLICT DO NOTHING`, and overwrites only
 * when the new row's version is still below the old row's (re-evaluated on the locked row,
 * so a newer write is never replaced). It never deletes anything and never touches
 * `content_differs` keys: which side is right there is the operator's decision. Each page
 * waits at most {@link pageLockTimeoutMs} for a live write's locks, then gives way and retries.
 * @internal
 */
export async function repairMismatches(
  context: VerifyContext,
  columns: PersonColumns,
): Promise<RepairResult> {
  const { tables, mismatchTable: mm, options } = context;
  const copyable = columns.copyable;
  const settable = copyable.filter((c) => c !== 'team_id' && c !== 'id');
  let copied = 0;
  let updated = 0;
  let skipped = 0;
  let after: { team: string; id: string } | undefined;
  for (;;) {
    const page = await sql<{ team_id: string; person_id: string }>`
      SELECT m.team_id::text AS team_id, m.person_id::text AS person_id
      FROM ${mm} AS m
      WHERE m.verification_id = ${context.verificationId}::bigint AND m.repaired_at IS NULL
        AND m.class = ANY(${classArray(repairableClasses)})
        AND (${after === undefined} OR (m.team_id, m.person_id) > (${after?.team ?? null}::bigint, ${after?.id ?? null}::bigint))
      GROUP BY m.team_id, m.person_id
      ORDER BY m.team_id, m.person_id -- qualified: the text aliases would sort as text
      LIMIT ${keysPerTransaction}`.execute(context.db);
    const keys = page.rows;
    if (keys.length === 0) break;
    const teams = keys.map((k) => k.team_id);
    const ids = keys.map((k) => k.person_id);
    const last = keys.at(-1);
    after = last ? { team: last.team_id, id: last.person_id } : undefined;
    const done = await givingWay(() =>
      context.db.transaction().execute(async (trx) => {
        await sql`SELECT set_config('lock_timeout', ${`${pageLockTimeoutMs}ms`}, true)`.execute(
          trx,
        );
        const fence = await sql<{ phase: string }>`
        SELECT phase FROM ${tables.control} WHERE name = ${options.name} FOR KEY SHARE`.execute(
          trx,
        );
        const phase = fence.rows[0]?.phase;
        if (phase !== 'dual_read') {
          throw new VerifyRefusedError(
            `The repair copies old rows while services read both tables, so it runs in phase ` +
              `dual_read only; migration "${options.name}" is now in phase ${phase ?? '(missing)'}. ` +
              'Nothing of this page was changed.',
          );
        }
        const keySet = sql`SELECT k.team_id, k.person_id
        FROM unnest(${teams}::bigint[], ${ids}::bigint[]) AS k(team_id, person_id)`;
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
        await sql`UPDATE ${mm} AS m SET repaired_at = clock_timestamp()
        WHERE m.verification_id = ${context.verificationId}::bigint AND m.repaired_at IS NULL
          AND m.class = ANY(${classArray(repairableClasses)})
          AND (m.team_id, m.person_id) IN (${keySet})`.execute(trx);
        return {
          copied: Number(inserted.numAffectedRows ?? 0n),
          updated: Number(overwritten.numAffectedRows ?? 0n),
        };
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

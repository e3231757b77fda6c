import createDebug from 'debug';
import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { regclassText } from '../db/identifiers.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { readTableShape } from '../db/table-shape.js';
import { BackfillRefusedError } from '../errors.js';
import type { Key } from '../model/key.js';
import { everyKey } from '../model/key.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { estimateRows, splitRange } from '../persons/key-range.js';
import { takeDeleteFence } from './delete-fence.js';

const debug = createDebug('pg-dual-read:backfill');

/** Rows per range when the caller does not choose the number of ranges. */
const rowsPerRangeByDefault = 50_000;
/** At least this many ranges by default, so several workers start at once on small tables. */
const minimumRangesByDefault = 16;

/** What `planBackfill` decided. @internal */
export interface PlanOutcome {
  /** True when this call wrote the plan; false when one existed already. */
  readonly created: boolean;
  readonly rangeCount: number;
  readonly rowsEstimated: number;
}

/**
 * Creates the backfill plan of a migration if it has none: splits the old table's keys into
 * ranges of about equal row counts, **planned from the real key distribution** (keys at equal
 * row-count steps of `(team_id, id)`, so a team holding half the persons is cut like any other
 * hot range), ending at the largest key that exists now. In `dual_read` no write adds rows to
 * the old table, so that end is fixed: the backfill always finishes. Runs under an advisory
 * lock: workers starting at once agree on one plan. Writes the ranges under the delete fence
 * (see `takeDeleteFence`): deletes look their key's range up. @internal
 */
export async function planBackfill(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  requestedRanges: number | undefined,
  maxRowsPerSecond: number | undefined,
): Promise<PlanOutcome> {
  return sanitizeErrors(`backfill planning of migration "${options.name}"`, () =>
    db.transaction().execute(async (trx) => {
      const control = (name: string) => sql.id(options.controlSchema, name);
      await sql`SELECT pg_advisory_xact_lock(${planLockKey(options)})`.execute(trx);
      const phase = await sql<{ phase: string }>`
        SELECT phase FROM ${control('migration')} WHERE name = ${options.name}`.execute(trx);
      const current = phase.rows[0]?.phase;
      if (current !== 'dual_read') {
        throw new BackfillRefusedError(
          current === undefined
            ? `Migration "${options.name}" is not prepared: run install(), prepare() and startDualRead() before backfill().`
            : `backfill() copies old rows while services read both tables, so it runs in phase dual_read only; migration "${options.name}" is in phase ${current}.` +
                (current === 'old'
                  ? ' Run startDualRead() first (once every service runs the repository).'
                  : ''),
        );
      }
      const existing = await sql<{ planned_ranges: number; rows_estimated: string }>`
        SELECT planned_ranges, rows_estimated::text FROM ${control('backfill')}
        WHERE migration = ${options.name}`.execute(trx);
      const plan = existing.rows[0];
      if (plan) {
        if (requestedRanges !== undefined && requestedRanges !== plan.planned_ranges) {
          throw new BackfillRefusedError(
            `Migration "${options.name}" already has a backfill plan of ${plan.planned_ranges} ranges, ` +
              `and ranges: ${requestedRanges} asks for another. Resume it by calling backfill() ` +
              'without the ranges option (any number of workers can join), or discard it with ' +
              'resetBackfill() when no worker is running, then plan again.',
          );
        }
        if (maxRowsPerSecond !== undefined) await setRate(trx, options, maxRowsPerSecond);
        return {
          created: false,
          rangeCount: plan.planned_ranges,
          rowsEstimated: Number(plan.rows_estimated),
        };
      }
      await requireKeyIndex(trx, options);
      const rows = await estimateRows(
        trx,
        sql.id(options.schema, options.oldTable),
        regclassText(options.schema, options.oldTable),
      );
      const rangeCount = Math.max(
        1,
        Math.min(
          requestedRanges ??
            Math.max(minimumRangesByDefault, Math.ceil(rows / rowsPerRangeByDefault)),
          Math.max(rows, 1),
        ),
      );
      const ends = rows === 0 ? [] : await rangeEnds(trx, options, rows, rangeCount);
      // From here on deletes look up the ranges (rule 1 of PersonWrites): the ones in flight
      // must finish before the plan exists, and later ones must see it.
      const fenced = await takeDeleteFence(trx, options.controlSchema, {
        waitMs: 100,
        attempts: 300,
        pauseMs: 20,
      });
      if (!fenced) {
        throw new BackfillRefusedError(
          `The backfill plan of migration "${options.name}" waits for the deletes in flight to ` +
            'finish, and a transaction that deleted a person through the repository stayed ' +
            'open for more than 30 s. Retry once it has ended (pg_stat_activity shows it).',
        );
      }
      await sql`INSERT INTO ${control('backfill')}
        (migration, range_count, planned_ranges, rows_estimated, max_rows_per_second)
        VALUES (${options.name}, ${ends.length}, ${requestedRanges ?? ends.length}, ${rows},
          ${maxRowsPerSecond ?? null})`.execute(trx);
      let start: Key | undefined;
      for (const [index, end] of ends.entries()) {
        await sql`INSERT INTO ${control('backfill_range')}
          (migration, range_id, start_team, start_id, end_team, end_id, rows_estimated)
          VALUES (${options.name}, ${index + 1}, ${start?.team ?? null}, ${start?.id ?? null},
            ${end.team}, ${end.id}, ${Math.ceil(rows / ends.length)})`.execute(trx);
        start = end;
      }
      if (ends.length === 0) {
        await sql`UPDATE ${control('backfill')} SET status = 'done', finished_at = now()
          WHERE migration = ${options.name}`.execute(trx);
      }
      debug('planned %d ranges over ~%d rows for %s', ends.length, rows, options.name);
      return { created: true, rangeCount: ends.length, rowsEstimated: rows };
    }),
  );
}

/**
 * The advisory lock key a migration's plan changes take turns on (planning, splits). @internal
 */
export function planLockKey(options: ResolvedMigrationOptions): RawBuilder<unknown> {
  return sql`hashtextextended(${`pg-dual-read:backfill:${options.controlSchema}.${options.name}`}, 0)`;
}

/** Stores the rows-per-second ceiling that every worker reads with its next batch. @internal */
export async function setRate(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  maxRowsPerSecond: number | null,
): Promise<void> {
  await sql`UPDATE ${sql.id(options.controlSchema, 'backfill')}
    SET max_rows_per_second = ${maxRowsPerSecond} WHERE migration = ${options.name}`.execute(db);
}

/** Keyset pagination on (team_id, id) needs an index that starts with those columns. */
async function requireKeyIndex(trx: AnyDb, options: ResolvedMigrationOptions): Promise<void> {
  const shape = await readTableShape(trx, options.schema, options.oldTable);
  if (!shape) {
    throw new BackfillRefusedError(
      `The old table ${options.schema}.${options.oldTable} does not exist.`,
    );
  }
  const { rows } = await sql<{ found: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM pg_index i
      WHERE i.indrelid = ${shape.oid} AND i.indpred IS NULL
        AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
             FROM unnest((i.indkey::int2[])[0:1]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
          = ARRAY['team_id', 'id']
    ) AS found`.execute(trx);
  if (!rows[0]?.found) {
    const table = regclassText(options.schema, options.oldTable);
    throw new BackfillRefusedError(
      `The old table has no index starting with (team_id, id), which the backfill's keyset ` +
        `batches need (without it each batch would scan the table). Create it, then retry: ` +
        `CREATE INDEX CONCURRENTLY ON ${table} (team_id, id);`,
    );
  }
}

/** Exact cuts up to this many rows (one pass over the key index); sampled quantiles beyond. */
const exactCutsUpTo = 1_000_000;

/**
 * The upper bound of each range, the last one the largest key. Up to `exactCutsUpTo` rows, the
 * exact keys at equal row-count steps of `(team_id, id)`, each found from the one before with
 * `OFFSET` on the key index: one index-only pass in all (0.12 s for 1,000,000 rows, measured;
 * the quantile query it replaces sorted every key through a window, several times longer);
 * beyond, the sampled quantiles `splitRange` cuts at. A cut at the largest key (the steps
 * reached the end) is dropped, so no range is empty by construction.
 */
async function rangeEnds(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  rows: number,
  rangeCount: number,
): Promise<Key[]> {
  const old = sql.id(options.schema, options.oldTable);
  const max = await sql<{ team: string; id: string }>`
    SELECT o.team_id::text AS team, o.id::text AS id FROM ${old} AS o
    ORDER BY o.team_id DESC, o.id DESC LIMIT 1`.execute(trx);
  const last = max.rows[0];
  if (!last) return [];
  const cuts: Key[] = [];
  if (rows <= exactCutsUpTo) {
    const step = Math.max(1, Math.ceil(rows / rangeCount));
    let after: Key | undefined;
    for (let i = 1; i < rangeCount; i++) {
      const from = after
        ? sql`WHERE (o.team_id, o.id) > (${after.team}::int8, ${after.id}::int8)`
        : sql``;
      // Cast after the LIMIT: inside, every skipped key would be cast too (2.4x the time).
      const { rows: found } = await sql<{ team: string; id: string }>`
        SELECT k.team_id::text AS team, k.id::text AS id FROM (
          SELECT o.team_id, o.id FROM ${old} AS o ${from}
          ORDER BY o.team_id, o.id OFFSET ${step - 1} LIMIT 1
        ) AS k`.execute(trx);
      const cut = found[0];
      if (!cut) break;
      cuts.push({ team: cut.team, id: cut.id });
      after = cut;
    }
  } else {
    const parts = await splitRange(trx, old, everyKey, rows, rangeCount);
    for (const part of parts) if (part.upTo) cuts.push(part.upTo);
  }
  // Every cut is a key at or below the largest one: drop the one that is the largest.
  return [...cuts.filter((cut) => cut.team !== last.team || cut.id !== last.id), last];
}

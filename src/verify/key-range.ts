import { type Kysely, type RawBuilder, sql } from 'kysely';
import type { Key } from '../backfill/backfill-plan.js';

// biome-ignore lint/suspicious/noExplicitAny: tables are named by configuration.
type AnyDb = Kysely<any>;

/**
 * A range of `(team_id, id)` keys: greater than `after` (from the first key when undefined)
 * and up to and including `upTo` (to the last key when undefined). The same convention as the
 * backfill's ranges, so consecutive ranges cover every key exactly once. @internal
 */
export interface KeyRange {
  readonly after: Key | undefined;
  readonly upTo: Key | undefined;
}

/** The whole key space. @internal */
export const everyKey: KeyRange = { after: undefined, upTo: undefined };

/** A predicate on `alias.team_id, alias.id` (or other key columns) for `range`. @internal */
export function inRange(range: KeyRange, alias: string, idColumn = 'id'): RawBuilder<unknown> {
  const key = sql`(${sql.ref(`${alias}.team_id`)}, ${sql.ref(`${alias}.${idColumn}`)})`;
  const lower = range.after
    ? sql`${key} > (${range.after.team}::bigint, ${range.after.id}::bigint)`
    : sql`true`;
  const upper = range.upTo
    ? sql`${key} <= (${range.upTo.team}::bigint, ${range.upTo.id}::bigint)`
    : sql`true`;
  return sql`${lower} AND ${upper}`;
}

/** Exact quantiles up to this many rows in a range, a sample beyond. */
const exactUpTo = 1_000_000;

/**
 * Cuts `range` of `table` into about `parts` ranges of equal row counts (quantiles of the real
 * keys), the first starting where `range` starts and the last ending where it ends: together
 * they cover exactly the keys of `range`, whatever rows are added later. @internal
 */
export async function splitRange(
  db: AnyDb,
  table: RawBuilder<unknown>,
  range: KeyRange,
  rows: number,
  parts: number,
): Promise<KeyRange[]> {
  if (parts <= 1 || rows <= 1) return [range];
  const source =
    rows <= exactUpTo
      ? sql`SELECT t.team_id, t.id FROM ${table} AS t WHERE ${inRange(range, 't')}`
      : sql`SELECT t.team_id, t.id FROM ${table} AS t TABLESAMPLE SYSTEM (${sql.lit(Math.max(0.01, Math.min(100, (100 * 200_000) / rows)))})
          WHERE ${inRange(range, 't')}`;
  const { rows: ends } = await sql<{ team: string; id: string }>`
    SELECT e.team_id::text AS team, e.id::text AS id FROM (
      SELECT b.team_id, b.id,
        row_number() OVER (PARTITION BY b.bucket ORDER BY b.team_id DESC, b.id DESC) AS from_end
      FROM (
        SELECT s.team_id, s.id, ntile(${parts}::int) OVER (ORDER BY s.team_id, s.id) AS bucket
        FROM (${source}) AS s
      ) AS b
    ) AS e
    WHERE e.from_end = 1
    ORDER BY e.team_id, e.id`.execute(db);
  const cuts = ends.slice(0, -1).map((r) => ({ team: r.team, id: r.id }));
  const result: KeyRange[] = [];
  let after = range.after;
  for (const cut of cuts) {
    result.push({ after, upTo: cut });
    after = cut;
  }
  result.push({ after, upTo: range.upTo });
  return result;
}

/** The planner's row estimate of a table (exact count when the estimate is small). @internal */
export async function estimateRows(
  db: AnyDb,
  table: RawBuilder<unknown>,
  regclass: string,
): Promise<number> {
  const estimate = await sql<{ rows: number }>`
    SELECT CASE WHEN c.relkind = 'p' THEN
        (SELECT coalesce(sum(greatest(p.reltuples, 0)), 0) FROM pg_inherits i
         JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = c.oid)
      ELSE c.reltuples END::float8 AS rows
    FROM pg_class c WHERE c.oid = ${regclass}::regclass`.execute(db);
  const guess = Number(estimate.rows[0]?.rows ?? -1);
  if (guess > exactUpTo) return Math.round(guess);
  const exact = await sql<{ rows: string }>`SELECT count(*)::text AS rows FROM ${table}`.execute(
    db,
  );
  return Number(exact.rows[0]?.rows ?? 0);
}

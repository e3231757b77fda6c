import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { Key, KeyRange } from '../model/key.js';

/**
 * The row value `(alias.team_id, alias.<idColumn>)` that keyset predicates compare: the
 * `(team_id, id)` index of a persons table serves it as one range. @internal
 *
 * @example
 * ```ts
 * sql`ORDER BY ${keyColumns('o')}`; // (o.team_id, o.id)
 * ```
 */
export function keyColumns(alias: string, idColumn = 'id'): RawBuilder<unknown> {
  return sql`(${sql.id(alias, 'team_id')}, ${sql.id(alias, idColumn)})`;
}

/**
 * A key as a row value of two int8 parameters, `($1::int8, $2::int8)`. @internal
 *
 * @example
 * ```ts
 * sql`${keyColumns('o')} <= ${keyValue(range.end)}`;
 * ```
 */
export function keyValue(key: Key): RawBuilder<unknown> {
  return sql`(${key.team}::int8, ${key.id}::int8)`;
}

/**
 * The keyset predicate `(alias.team_id, alias.id) > after`, or `true` when `after` is
 * undefined (from the first key). Keyset pagination on the real key, never id arithmetic:
 * chunk edges are where off-by-one errors hide. @internal
 *
 * @example
 * ```ts
 * sql`SELECT o.id FROM ${old} AS o WHERE ${keyAfter('o', checkpoint)} ORDER BY o.team_id, o.id`;
 * ```
 */
export function keyAfter(
  alias: string,
  after: Key | undefined,
  idColumn = 'id',
): RawBuilder<unknown> {
  return after ? sql`${keyColumns(alias, idColumn)} > ${keyValue(after)}` : sql`true`;
}

/**
 * The keyset predicate `(alias.team_id, alias.id) <= upTo`, or `true` when `upTo` is
 * undefined (to the last key). @internal
 *
 * @example
 * ```ts
 * sql`WHERE ${keyAfter('o', range.after)} AND ${keyAtMost('o', range.end)}`;
 * ```
 */
export function keyAtMost(
  alias: string,
  upTo: Key | undefined,
  idColumn = 'id',
): RawBuilder<unknown> {
  return upTo ? sql`${keyColumns(alias, idColumn)} <= ${keyValue(upTo)}` : sql`true`;
}

/**
 * A predicate on `alias.team_id, alias.id` (or another id column) for the keys of `range`.
 * @internal
 *
 * @example
 * ```ts
 * sql`SELECT count(*) FROM ${table} AS t WHERE ${inRange(chunk, 't')}`;
 * ```
 */
export function inRange(range: KeyRange, alias: string, idColumn = 'id'): RawBuilder<unknown> {
  return sql`${keyAfter(alias, range.after, idColumn)} AND ${keyAtMost(alias, range.upTo, idColumn)}`;
}

/** Exact quantiles up to this many rows in a range, a sample beyond. */
const exactUpTo = 1_000_000;

/**
 * Cuts `range` of `table` into about `parts` ranges of equal row counts (quantiles of the real
 * keys), the first starting where `range` starts and the last ending where it ends: together
 * they cover exactly the keys of `range`, whatever rows are added later. @internal
 *
 * @example
 * ```ts
 * const chunks = await splitRange(db, sql.id('public', 'posthog_person'), everyKey, 1_000_000, 4);
 * ```
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

/**
 * The planner's row estimate of a table (exact count when the estimate is small). @internal
 *
 * @example
 * ```ts
 * const rows = await estimateRows(db, sql.id('public', 'posthog_person'), regclassText('public', 'posthog_person'));
 * ```
 */
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

/**
 * The key `offset` keys past the start of `range` in `table`'s key order (0: the first key of
 * the range), or undefined when the range has fewer keys. One walk of the `(team_id, id)`
 * index; the key is cast to text after the `LIMIT`, not for every skipped key (2.4x the time).
 * @internal
 *
 * @example
 * ```ts
 * const middle = await keyAtOffset(trx, tables.old, { after: range.after, upTo: range.end }, half);
 * ```
 */
export async function keyAtOffset(
  db: AnyDb,
  table: RawBuilder<unknown>,
  range: KeyRange,
  offset: number,
): Promise<Key | undefined> {
  const { rows } = await sql<{ team: string; id: string }>`
    SELECT k.team_id::text AS team, k.id::text AS id FROM (
      SELECT o.team_id, o.id FROM ${table} AS o WHERE ${inRange(range, 'o')}
      ORDER BY o.team_id, o.id OFFSET ${offset} LIMIT 1
    ) AS k`.execute(db);
  const key = rows[0];
  return key ? { team: key.team, id: key.id } : undefined;
}

/**
 * The largest key of `table`, or undefined when it is empty. @internal
 *
 * @example
 * ```ts
 * const end = await lastKey(trx, tables.old);
 * ```
 */
export async function lastKey(db: AnyDb, table: RawBuilder<unknown>): Promise<Key | undefined> {
  const { rows } = await sql<{ team: string; id: string }>`
    SELECT o.team_id::text AS team, o.id::text AS id FROM ${table} AS o
    ORDER BY o.team_id DESC, o.id DESC LIMIT 1`.execute(db);
  const key = rows[0];
  return key ? { team: key.team, id: key.id } : undefined;
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { quoteIdent, regclassText } from '../db/identifiers.js';
import { errorField, sqlStateOf, toQueryFailedError } from '../db/query-failed.js';
import { readIndexes } from '../db/table-indexes.js';
import { readTableShape } from '../db/table-shape.js';
import { BackfillDataError } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { keyAfter, keyAtMost } from '../persons/key-range.js';
import { migrationTables } from '../persons/tables.js';
import type { LeasedRange } from './batch-statement.js';

/**
 * SQLSTATEs of a batch that failed on the data, whatever the timing: a `NOT NULL` (23502),
 * `CHECK` (23514) or foreign key (23503) violation, or a data exception (class 22: a value the
 * new table's type cannot hold).
 */
function isDataState(state: string): boolean {
  return state === '23502' || state === '23514' || state === '23503' || state.startsWith('22');
}

/**
 * When a failed batch failed on the data rather than on a race, the {@link BackfillDataError}
 * that says so: the range, the constraint and a statement that lists the old rows at fault.
 * A unique violation is data only when the violated index is not the new table's key and a
 * committed row of the new table already holds the values of an old row of the range under
 * another `(team_id, id)` (a copy-on-write of the same person in flight also fails the batch on
 * its `(team_id, uuid)` index, and is a race the retry resolves). Undefined otherwise: the
 * worker retries as before. @internal
 *
 * @example
 * ```ts
 * const dataError = await batchDataError(db, options, range, error);
 * if (dataError) throw dataError;
 * ```
 */
export async function batchDataError(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  range: LeasedRange,
  error: unknown,
): Promise<BackfillDataError | undefined> {
  const state = sqlStateOf(error);
  if (state === undefined) return undefined;
  const constraint = errorField(error, 'constraint');
  let listing: string | undefined;
  if (state === '23505') listing = await uniqueClash(db, options, range, constraint);
  else if (state === '23514') listing = await checkListing(db, options, range, constraint);
  else if (state === '23502') {
    const column = errorField(error, 'column');
    listing = listingOf(options, range, column ? `${quoteIdent(column)} IS NULL` : undefined);
  } else if (isDataState(state)) listing = listingOf(options, range, undefined);
  if (listing === undefined) return undefined;
  const what = constraint ?? errorField(error, 'column');
  const cause = toQueryFailedError(error, 'backfill batch', 0);
  return new BackfillDataError(
    `Backfill range ${range.rangeId} (keys after ${keyText(range.after)} up to ` +
      `${keyText(range.end)}) cannot be copied: old rows violate ` +
      `${what ? `"${what}" of ` : ''}the new table (SQLSTATE ${state}). This is the data, not ` +
      'a race: the backfill stopped at once, and the failing batch copied nothing. List the ' +
      `keys at fault: ${listing}; fix those rows (or the constraint), then run backfill() ` +
      'again: the range resumes from its checkpoint.',
    range.rangeId,
    what,
    state,
    listing,
    { cause },
  );
}

/**
 * The listing statement of a unique violation that is data: the old rows of the range whose
 * values of the violated index a committed new row holds under another key. Undefined when the
 * index is the new table's key, is not made of plain columns, or no such row exists (a race).
 */
async function uniqueClash(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  range: LeasedRange,
  constraint: string | undefined,
): Promise<string | undefined> {
  const shape = await readTableShape(db, options.schema, options.newTable);
  if (!shape || constraint === undefined) return undefined;
  const index = (await readIndexes(db, shape.oid)).find((i) => i.name === constraint);
  if (!index || index.primary || index.expression || index.partial) return undefined;
  const tables = migrationTables(options);
  const pair = (alias: string) => sql.join(index.columns.map((c) => sql.id(alias, c)));
  const { rows } = await sql<{ found: number }>`
    SELECT 1 AS found FROM ${tables.old} AS o
    JOIN ${tables.new} AS n ON (${pair('n')}) = (${pair('o')})
      AND (n.team_id, n.id) IS DISTINCT FROM (o.team_id, o.id)
    WHERE ${keyAfter('o', range.after)} AND ${keyAtMost('o', range.end)}
    LIMIT 1`.execute(db);
  if (rows.length === 0) return undefined;
  const on = index.columns.map((c) => `n.${quoteIdent(c)} = o.${quoteIdent(c)}`).join(' AND ');
  return (
    `SELECT o.team_id, o.id, n.team_id AS holder_team_id, n.id AS holder_id FROM ` +
    `${regclassText(options.schema, options.oldTable)} AS o JOIN ` +
    `${regclassText(options.schema, options.newTable)} AS n ON ${on} ` +
    `AND (n.team_id, n.id) IS DISTINCT FROM (o.team_id, o.id) WHERE ${rangeText(range, 'o.')}`
  );
}

/** The listing statement of a `CHECK` violation: the range's old rows the check refuses. */
async function checkListing(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  range: LeasedRange,
  constraint: string | undefined,
): Promise<string> {
  if (constraint === undefined) return listingOf(options, range, undefined);
  const { rows } = await sql<{ definition: string }>`
    SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c
    JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname = ${options.schema} AND c.conname = ${constraint} AND c.contype = 'c'
    LIMIT 1`.execute(db);
  const check = rows[0]?.definition.replace(/^CHECK /, '').replace(/ NOT VALID$/, '');
  return listingOf(options, range, check ? `NOT ${check}` : undefined);
}

/** `SELECT team_id, id FROM old WHERE <the range> [AND <condition>]`, keys as literals. */
function listingOf(
  options: ResolvedMigrationOptions,
  range: LeasedRange,
  condition: string | undefined,
): string {
  return (
    `SELECT team_id, id FROM ${regclassText(options.schema, options.oldTable)} WHERE ` +
    `${rangeText(range, '')}${condition ? ` AND ${condition}` : ''} ORDER BY team_id, id`
  );
}

/** The range as a predicate with literal keys (decimal strings read from the database). */
function rangeText(range: LeasedRange, prefix: string): string {
  const key = `(${prefix}team_id, ${prefix}id)`;
  const lower = range.after ? `${key} > (${range.after.team}, ${range.after.id}) AND ` : '';
  return `${lower}${key} <= (${range.end.team}, ${range.end.id})`;
}

function keyText(key: { team: string; id: string } | undefined): string {
  return key ? `(${key.team}, ${key.id})` : 'the first key';
}

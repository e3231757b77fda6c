import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { readTableShape } from '../db/table-shape.js';
import { NotInstalledError } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/**
 * The column facts the repository's, the backfill's and the repair's SQL is generated from,
 * read once. @internal
 *
 * @example
 * ```ts
 * const columns = await loadPersonColumns(db, options);
 * sql`INSERT INTO ${tables.new} (${columnList(columns.copyable)}) SELECT ...`;
 * ```
 */
export interface PersonColumns {
  /** Every column of the old table, in table order: what reads return and copies carry. */
  readonly all: readonly string[];
  /** Columns a copy inserts (generated columns excluded). */
  readonly copyable: readonly string[];
  readonly has: ReadonlySet<string>;
  readonly distinctIdHasVersion: boolean;
}

/**
 * Names the repository's statements give columns of their own, beside a person's columns in
 * the same result row (`fetchPersonsByDistinctIds`'s `distinct_id`, `createPerson`'s
 * `inserted_count`, the `pg_dual_read_*` markers of merged reads): a persons column of one of
 * these names would be confused with them, so `prepare()` refuses it. @internal
 *
 * @example
 * ```ts
 * const clash = shape.columns.filter((c) => reservedColumnNames.includes(c.name));
 * ```
 */
export const reservedColumnNames: readonly string[] = [
  'distinct_id',
  'inserted_count',
  'pg_dual_read_from_old',
  'pg_dual_read_epoch',
  'pg_dual_read_found',
];

/**
 * Reads the columns of the old persons table and of the distinct-ids table. @internal
 *
 * @example
 * ```ts
 * const { copyable } = await loadPersonColumns(handle.db, options);
 * ```
 */
export async function loadPersonColumns(
  db: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<PersonColumns> {
  const [persons, distinctIds] = await Promise.all([
    readTableShape(db, options.schema, options.oldTable),
    readTableShape(db, options.schema, options.distinctIdsTable),
  ]);
  if (!persons || !distinctIds) {
    throw new NotInstalledError(
      `The tables of migration "${options.name}" are missing: run migration.prepare() to check them.`,
    );
  }
  const generatedNames = new Set(persons.columns.filter((c) => c.generated).map((c) => c.name));
  const all = persons.columns.map((c) => c.name);
  return {
    all,
    copyable: all.filter((c) => !generatedNames.has(c)),
    has: new Set(all),
    distinctIdHasVersion: distinctIds.columns.some((c) => c.name === 'version'),
  };
}

/**
 * `alias.col1, alias.col2, ...` (or unqualified) for a column list. @internal
 *
 * @example
 * ```ts
 * sql`SELECT ${columnList(columns.all, 'o')} FROM ${tables.old} AS o`;
 * ```
 */
export function columnList(columns: readonly string[], alias?: string): RawBuilder<unknown> {
  return sql.join(columns.map((c) => (alias ? sql.id(alias, c) : sql.id(c))));
}

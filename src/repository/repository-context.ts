import { type Kysely, type RawBuilder, sql } from 'kysely';
import { NotInstalledError } from '../errors.js';
import type { ResolvedMigrationOptions } from '../migration/options.js';
import { readTableShape } from '../prepare/table-shape.js';

// biome-ignore lint/suspicious/noExplicitAny: tables are named by configuration.
type AnyDb = Kysely<any>;

/** The quoted tables one migration works on. @internal */
export interface MigrationTables {
  readonly old: RawBuilder<unknown>;
  readonly new: RawBuilder<unknown>;
  readonly distinctIds: RawBuilder<unknown>;
  readonly control: RawBuilder<unknown>;
  /** The delete fence of the control schema (control migration 4; see `PersonWrites`). */
  readonly deleteFence: RawBuilder<unknown>;
  /** The backfill's ranges, which deletes lock (see `PersonWrites`). */
  readonly backfillRange: RawBuilder<unknown>;
  /** The migration's name: its key in the control tables. */
  readonly migration: string;
}

/** The column facts the repository's SQL is generated from, read once per repository. @internal */
export interface PersonColumns {
  /** Every column of the old table, in table order: what reads return and copies carry. */
  readonly all: readonly string[];
  /** Columns a copy inserts (generated columns excluded). */
  readonly copyable: readonly string[];
  readonly has: ReadonlySet<string>;
  readonly distinctIdHasVersion: boolean;
}

/** @internal */
export function migrationTables(options: ResolvedMigrationOptions): MigrationTables {
  return {
    old: sql.id(options.schema, options.oldTable),
    new: sql.id(options.schema, options.newTable),
    distinctIds: sql.id(options.schema, options.distinctIdsTable),
    control: sql.id(options.controlSchema, 'migration'),
    deleteFence: sql.id(options.controlSchema, 'delete_fence'),
    backfillRange: sql.id(options.controlSchema, 'backfill_range'),
    migration: options.name,
  };
}

/** Reads the columns of the old persons table and of the distinct-ids table. @internal */
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
  const generated = await sql<{ name: string }>`
    SELECT attname AS name FROM pg_attribute
    WHERE attrelid = ${persons.oid} AND attgenerated <> ''`.execute(db);
  const generatedNames = new Set(generated.rows.map((r) => r.name));
  const all = persons.columns.map((c) => c.name);
  return {
    all,
    copyable: all.filter((c) => !generatedNames.has(c)),
    has: new Set(all),
    distinctIdHasVersion: distinctIds.columns.some((c) => c.name === 'version'),
  };
}

/** `alias.col1, alias.col2, ...` for a column list. @internal */
export function columnList(columns: readonly string[], alias?: string): RawBuilder<unknown> {
  return sql.join(columns.map((c) => (alias ? sql.ref(`${alias}.${c}`) : sql.id(c))));
}

import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';
import { regclassText } from './identifiers.js';

/**
 * Catalog reads: what the library needs to know about a table, from `pg_catalog` (names and
 * types only, never rows).
 */

/** One column of a table as Postgres describes it. @internal */
export interface ColumnShape {
  readonly name: string;
  /** `format_type()` of the column, e.g. `bigint`, `jsonb`, `character varying(200)`. */
  readonly type: string;
  readonly notNull: boolean;
  readonly defaultExpression: string | null;
  readonly identity: boolean;
  /** A generated column (`GENERATED ALWAYS AS ... STORED`): copies leave it out. */
  readonly generated: boolean;
}

/** What the library needs to know about a table. @internal */
export interface TableShape {
  readonly schema: string;
  readonly table: string;
  readonly oid: number;
  readonly partitioned: boolean;
  readonly columns: readonly ColumnShape[];
  /** Column lists of the table's unique indexes (primary key included). */
  readonly uniqueKeys: readonly (readonly string[])[];
}

/** Reads a table's shape, or `undefined` when it does not exist. @internal */
export async function readTableShape(
  db: AnyDb,
  schema: string,
  table: string,
): Promise<TableShape | undefined> {
  const found = await sql<{ oid: number | null; relkind: string | null }>`
    SELECT c.oid::int AS oid, c.relkind::text AS relkind
    FROM pg_class c WHERE c.oid = to_regclass(${regclassText(schema, table)})`.execute(db);
  const rel = found.rows[0];
  if (!rel?.oid || !rel.relkind || !['r', 'p'].includes(rel.relkind)) return undefined;
  const columns = await sql<{
    name: string;
    type: string;
    not_null: boolean;
    default_expression: string | null;
    identity: string;
    generated: string;
  }>`
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
      a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default_expression,
      a.attidentity::text AS identity, a.attgenerated::text AS generated
    FROM pg_attribute a
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = ${rel.oid} AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum`.execute(db);
  const keys = await sql<{ columns: string[] }>`
    SELECT array_agg(a.attname::text ORDER BY k.ord) AS columns
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = ${rel.oid} AND i.indisunique AND i.indpred IS NULL
    GROUP BY i.indexrelid`.execute(db);
  return {
    schema,
    table,
    oid: rel.oid,
    partitioned: rel.relkind === 'p',
    columns: columns.rows.map((c) => ({
      name: c.name,
      type: c.type,
      notNull: c.not_null,
      defaultExpression: c.default_expression,
      identity: c.identity !== '',
      generated: c.generated !== '',
    })),
    uniqueKeys: keys.rows.map((k) => k.columns),
  };
}

/** @internal */
export function columnNamed(shape: TableShape, name: string): ColumnShape | undefined {
  return shape.columns.find((c) => c.name === name);
}

/** True when some unique key of `shape` is exactly `columns`, in any order. @internal */
export function hasUniqueKey(shape: TableShape, columns: readonly string[]): boolean {
  return shape.uniqueKeys.some(
    (key) => key.length === columns.length && columns.every((c) => key.includes(c)),
  );
}

/**
 * True when `oid` has a non-partial index whose first columns are `columns`, in order (what
 * keyset pagination on those columns needs). @internal
 *
 * @example
 * ```ts
 * await hasIndexStartingWith(db, shape.oid, ['team_id', 'id']);
 * ```
 */
export async function hasIndexStartingWith(
  db: AnyDb,
  oid: number,
  columns: readonly string[],
): Promise<boolean> {
  const { rows } = await sql<{ found: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM pg_index i
      WHERE i.indrelid = ${oid} AND i.indpred IS NULL
        AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
             FROM unnest((i.indkey::int2[])[0:${sql.lit(columns.length - 1)}]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
          = ${[...columns]}::text[]
    ) AS found`.execute(db);
  return rows[0]?.found ?? false;
}

/**
 * How many partitions a partitioned table has. @internal
 *
 * @example
 * ```ts
 * const partitions = shape.partitioned ? await partitionCount(db, shape.oid) : 0;
 * ```
 */
export async function partitionCount(db: AnyDb, oid: number): Promise<number> {
  const { rows } = await sql<{ count: number }>`
    SELECT count(*)::int AS count FROM pg_inherits WHERE inhparent = ${oid}`.execute(db);
  return rows[0]?.count ?? 0;
}

/**
 * What holds a name in a schema, as {@link takenNames} finds it. @internal
 *
 * @example
 * ```ts
 * const taken: TakenName = { name: 'persons_new_p1', kind: 'view' };
 * ```
 */
export interface TakenName {
  readonly name: string;
  /** `table`, `index`, `view`, `sequence`, ... or `type` for a type of its own. */
  readonly kind: string;
}

const relationKinds: Record<string, string> = {
  r: 'table',
  p: 'partitioned table',
  i: 'index',
  I: 'partitioned index',
  S: 'sequence',
  v: 'view',
  m: 'materialized view',
  c: 'composite type',
  f: 'foreign table',
  t: 'TOAST table',
};

/**
 * Which of `relations` name a relation of `schema` (a table, index, sequence, view...), and
 * which of `tables` name a type there: a new table takes its name as a row type too. Array
 * types are left out (Postgres renames them out of the way). @internal
 *
 * @example
 * ```ts
 * const taken = await takenNames(db, 'public', ['persons_new', 'persons_new_pkey'], ['persons_new']);
 * ```
 */
export async function takenNames(
  db: AnyDb,
  schema: string,
  relations: readonly string[],
  tables: readonly string[],
): Promise<TakenName[]> {
  const { rows } = await sql<{ name: string; kind: string }>`
    SELECT c.relname::text AS name, c.relkind::text AS kind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relname = ANY(${[...relations]}::text[])
    UNION ALL
    SELECT t.typname::text, 'type'
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = ${schema} AND t.typname = ANY(${[...tables]}::text[])
      AND t.typrelid = 0 AND t.typcategory <> 'A'
    ORDER BY 1`.execute(db);
  return rows.map((r) => ({ name: r.name, kind: relationKinds[r.kind] ?? r.kind }));
}

import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';

/**
 * One index of a table as the catalog defines it. @internal
 *
 * @example
 * ```ts
 * const email = (await readIndexes(db, oid)).find((i) => i.body.includes("->> 'email'"));
 * ```
 */
export interface TableIndex {
  readonly name: string;
  readonly unique: boolean;
  readonly primary: boolean;
  /** `pg_get_indexdef()`: `CREATE [UNIQUE] INDEX name ON table USING method (...) [WHERE ...]`. */
  readonly definition: string;
  /**
   * The definition from `USING` on: method, keys and expressions, `INCLUDE`, predicate. Two
   * tables with the same column names index alike when their bodies are equal.
   */
  readonly body: string;
  /** Plain key columns (empty when every key is an expression). */
  readonly columns: readonly string[];
  readonly partial: boolean;
  readonly expression: boolean;
}

/**
 * Every index of the table `oid`, by name. @internal
 *
 * @example
 * ```ts
 * const indexes = await readIndexes(db, shape.oid);
 * ```
 */
export async function readIndexes(db: AnyDb, oid: number): Promise<TableIndex[]> {
  const { rows } = await sql<{
    name: string;
    unique: boolean;
    primary: boolean;
    definition: string;
    columns: string[] | null;
    partial: boolean;
    expression: boolean;
  }>`
    SELECT i.relname AS name, x.indisunique AS unique, x.indisprimary AS primary,
      pg_get_indexdef(x.indexrelid) AS definition,
      (SELECT array_agg(a.attname::text ORDER BY k.ord)
       FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
       WHERE k.attnum > 0 AND k.ord <= x.indnkeyatts) AS columns,
      x.indpred IS NOT NULL AS partial, x.indexprs IS NOT NULL AS expression
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = ${oid}
    ORDER BY i.relname`.execute(db);
  return rows.map((r) => ({
    name: r.name,
    unique: r.unique,
    primary: r.primary,
    definition: r.definition,
    body: indexBody(r.definition),
    columns: r.columns ?? [],
    partial: r.partial,
    expression: r.expression,
  }));
}

/** The part of an index definition from ` USING ` on. */
function indexBody(definition: string): string {
  const at = definition.indexOf(' USING ');
  return at < 0 ? definition : definition.slice(at + 1);
}

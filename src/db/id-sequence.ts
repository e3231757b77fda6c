import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';
import { regclassText } from './identifiers.js';

/**
 * The sequence that feeds `schema.table.column`, as a quoted, schema-qualified regclass text,
 * or undefined when none does. Found however the column got it: a `serial`/`bigserial` or an
 * identity column (the sequence the column owns), or a default that calls `nextval()` on a
 * sequence the table does not own (what a table that went through an earlier swap has, and the
 * new table this library creates): the catalog records the default's dependency on the
 * sequence. @internal
 *
 * @example
 * ```ts
 * await idSequenceOf(db, 'public', 'posthog_person', 'id'); // '"public"."posthog_person_id_seq"'
 * ```
 */
export async function idSequenceOf(
  db: AnyDb,
  schema: string,
  table: string,
  column: string,
): Promise<string | undefined> {
  const { rows } = await sql<{ sequence: string | null }>`
    SELECT coalesce(
      (SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname)
       FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
       WHERE s.oid = pg_get_serial_sequence(${regclassText(schema, table)}, ${column})::regclass),
      (SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname)
       FROM pg_attribute a
       JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
         AND dep.refclassid = 'pg_class'::regclass
       JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
       WHERE a.attrelid = to_regclass(${regclassText(schema, table)}) AND a.attname = ${column}
       ORDER BY s.oid LIMIT 1)
    ) AS sequence`.execute(db);
  return rows[0]?.sequence ?? undefined;
}

/**
 * Every sequence that a column default (or an identity) of these tables draws from, as
 * quoted, schema-qualified text, sorted: what a role that inserts rows needs `USAGE` on.
 * @internal
 *
 * @example
 * ```ts
 * await sequencesOfTables(db, 'public', ['posthog_person', 'posthog_persondistinctid']);
 * ```
 */
export async function sequencesOfTables(
  db: AnyDb,
  schema: string,
  tables: readonly string[],
): Promise<string[]> {
  const regclasses = tables.map((table) => regclassText(schema, table));
  // A default's dependency on the sequence (attrdef -> sequence), or the sequence's ownership
  // by a column (serial: 'a', identity: 'i'; sequence -> table).
  const { rows } = await sql<{ sequence: string }>`
    SELECT DISTINCT quote_ident(sn.nspname) || '.' || quote_ident(s.relname) AS sequence
    FROM pg_class s
    JOIN pg_namespace sn ON sn.oid = s.relnamespace
    WHERE s.relkind = 'S' AND (
      EXISTS (SELECT 1 FROM pg_depend dep JOIN pg_attrdef d ON d.oid = dep.objid
        WHERE dep.classid = 'pg_attrdef'::regclass AND dep.refclassid = 'pg_class'::regclass
          AND dep.refobjid = s.oid AND d.adrelid = ANY(${regclasses}::regclass[]))
      OR EXISTS (SELECT 1 FROM pg_depend dep
        WHERE dep.classid = 'pg_class'::regclass AND dep.objid = s.oid
          AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
          AND dep.refobjid = ANY(${regclasses}::regclass[])))
    ORDER BY 1`.execute(db);
  return rows.map((row) => row.sequence);
}

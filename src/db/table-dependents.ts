import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';

/**
 * What references or hangs off a table, read from the catalog (names and definitions, never
 * rows): what `prepare()` reports, and what a rename or a drop of the table would affect.
 * @internal
 *
 * @example
 * ```ts
 * const { referencingForeignKeys, views } = await readDependents(db, shape.oid);
 * ```
 */
export interface TableDependents {
  /** Foreign keys of other tables that reference this one. */
  readonly referencingForeignKeys: readonly {
    name: string;
    /** The referencing table, quoted and schema-qualified, and its oid. */
    table: string;
    tableOid: number;
    definition: string;
  }[];
  /** Foreign keys of this table to others (a table created `LIKE` it does not get them). */
  readonly foreignKeys: readonly { name: string; definition: string }[];
  /** Views and materialized views that read this table. */
  readonly views: readonly { name: string; materialized: boolean }[];
  /** Triggers of this table (not the internal ones of constraints). */
  readonly triggers: readonly { name: string; definition: string }[];
  /** Rules of this table. */
  readonly rules: readonly { name: string; definition: string }[];
  readonly rowSecurity: boolean;
  /** Row-level security policies, as `CREATE POLICY` parts. */
  readonly policies: readonly Policy[];
  /** Publications that publish this table (by name, by its schema, or all tables). */
  readonly publications: readonly string[];
  /** Tables this one inherits from, and tables that inherit from it (partitions included). */
  readonly parents: readonly string[];
  readonly children: readonly string[];
  /** Privileges granted on this table to roles other than its owner. */
  readonly grants: readonly { grantee: string; privilege: string; grantable: boolean }[];
}

/** A row-level security policy. @internal */
export interface Policy {
  readonly name: string;
  readonly permissive: boolean;
  /** Quoted role names, or `PUBLIC`. */
  readonly roles: readonly string[];
  /** `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`. */
  readonly command: string;
  readonly using: string | null;
  readonly withCheck: string | null;
}

/** Quoted `schema.name` of a relation, in SQL. */
const qualified = (oid: ReturnType<typeof sql.raw>) =>
  sql`(SELECT quote_ident(qn.nspname) || '.' || quote_ident(qc.relname)
    FROM pg_class qc JOIN pg_namespace qn ON qn.oid = qc.relnamespace WHERE qc.oid = ${oid})`;

/**
 * Reads everything that references or hangs off the table `oid`. @internal
 *
 * @example
 * ```ts
 * const dependents = await readDependents(db, shape.oid);
 * ```
 */
export async function readDependents(db: AnyDb, oid: number): Promise<TableDependents> {
  const [foreignKeys, views, triggers, rules, rowSecurity, policies, publications, family, grants] =
    await Promise.all([
      foreignKeysOf(db, oid),
      viewsOf(db, oid),
      triggersOf(db, oid),
      rulesOf(db, oid),
      rowSecurityOf(db, oid),
      policiesOf(db, oid),
      publicationsOf(db, oid),
      inheritanceOf(db, oid),
      grantsOf(db, oid),
    ]);
  return {
    ...foreignKeys,
    views,
    triggers,
    rules,
    rowSecurity,
    policies,
    publications,
    ...family,
    grants,
  };
}

async function foreignKeysOf(db: AnyDb, oid: number) {
  const { rows } = await sql<{
    name: string;
    table: string | null;
    table_oid: number;
    definition: string;
    outgoing: boolean;
  }>`
    SELECT c.conname AS name, ${qualified(sql.raw('c.conrelid'))} AS table,
      c.conrelid::int AS table_oid,
      pg_get_constraintdef(c.oid) AS definition, c.conrelid = ${oid} AS outgoing
    FROM pg_constraint c
    WHERE c.contype = 'f' AND (c.confrelid = ${oid} OR c.conrelid = ${oid})
    ORDER BY 2, 1`.execute(db);
  return {
    referencingForeignKeys: rows
      .filter((r) => !r.outgoing)
      .map((r) => ({
        name: r.name,
        table: r.table ?? '',
        tableOid: r.table_oid,
        definition: r.definition,
      })),
    foreignKeys: rows
      .filter((r) => r.outgoing)
      .map((r) => ({ name: r.name, definition: r.definition })),
  };
}

async function viewsOf(db: AnyDb, oid: number) {
  const { rows } = await sql<{ name: string; materialized: boolean }>`
    SELECT DISTINCT ${qualified(sql.raw('v.oid'))} AS name, v.relkind = 'm' AS materialized
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = ${oid} AND v.oid <> ${oid}
    ORDER BY 1`.execute(db);
  return rows;
}

async function triggersOf(db: AnyDb, oid: number) {
  const { rows } = await sql<{ name: string; definition: string }>`
    SELECT tgname AS name, pg_get_triggerdef(oid) AS definition FROM pg_trigger
    WHERE tgrelid = ${oid} AND NOT tgisinternal ORDER BY tgname`.execute(db);
  return rows;
}

async function rulesOf(db: AnyDb, oid: number) {
  const { rows } = await sql<{ name: string; definition: string }>`
    SELECT rulename AS name, pg_get_ruledef(oid) AS definition FROM pg_rewrite
    WHERE ev_class = ${oid} AND rulename <> '_RETURN' ORDER BY rulename`.execute(db);
  return rows;
}

async function rowSecurityOf(db: AnyDb, oid: number): Promise<boolean> {
  const { rows } = await sql<{ row_security: boolean }>`
    SELECT relrowsecurity AS row_security FROM pg_class WHERE oid = ${oid}`.execute(db);
  return rows[0]?.row_security ?? false;
}

async function policiesOf(db: AnyDb, oid: number): Promise<Policy[]> {
  const { rows } = await sql<{
    name: string;
    permissive: boolean;
    roles: string[];
    command: string;
    using: string | null;
    with_check: string | null;
  }>`
    SELECT p.polname AS name, p.polpermissive AS permissive,
      CASE WHEN p.polroles = '{0}' THEN ARRAY['PUBLIC']
        ELSE ARRAY(SELECT quote_ident(rolname) FROM pg_roles WHERE oid = ANY(p.polroles)
          ORDER BY rolname) END AS roles,
      CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
        WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
      pg_get_expr(p.polqual, p.polrelid) AS using,
      pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
    FROM pg_policy p WHERE p.polrelid = ${oid} ORDER BY p.polname`.execute(db);
  return rows.map((p) => ({
    name: p.name,
    permissive: p.permissive,
    roles: p.roles,
    command: p.command,
    using: p.using,
    withCheck: p.with_check,
  }));
}

async function publicationsOf(db: AnyDb, oid: number): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    SELECT p.pubname AS name FROM pg_publication p
    WHERE p.puballtables
      OR EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = ${oid})
      OR EXISTS (SELECT 1 FROM pg_publication_namespace pn JOIN pg_class c
        ON c.relnamespace = pn.pnnspid WHERE pn.pnpubid = p.oid AND c.oid = ${oid})
    ORDER BY p.pubname`.execute(db);
  return rows.map((r) => r.name);
}

async function inheritanceOf(db: AnyDb, oid: number) {
  const { rows } = await sql<{ name: string; parent: boolean }>`
    SELECT ${qualified(sql.raw('i.inhparent'))} AS name, true AS parent FROM pg_inherits i
    WHERE i.inhrelid = ${oid}
    UNION ALL
    SELECT ${qualified(sql.raw('i.inhrelid'))}, false FROM pg_inherits i WHERE i.inhparent = ${oid}
    ORDER BY 2, 1`.execute(db);
  return {
    parents: rows.filter((r) => r.parent).map((r) => r.name),
    children: rows.filter((r) => !r.parent).map((r) => r.name),
  };
}

async function grantsOf(db: AnyDb, oid: number) {
  const { rows } = await sql<{ grantee: string; privilege: string; grantable: boolean }>`
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
        ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
      a.privilege_type AS privilege, a.is_grantable AS grantable
    FROM pg_class c, aclexplode(c.relacl) AS a
    WHERE c.oid = ${oid} AND a.grantee <> c.relowner
    ORDER BY 1, 2`.execute(db);
  return rows;
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { relationName } from '../prepare/new-table-names.js';

/** Postgres cuts identifiers at 63 bytes: a longer name would not be the one asked for. */
const maxNameBytes = 63;

/**
 * Inside finalize()'s swap, after the renames of the tables: gives the consolidated table's
 * indexes the old table's names (`posthog_person_new_pkey` becomes `posthog_person_pkey`, its
 * constraint too), so that dashboards, runbooks and `pg_stat_user_indexes` queries that name
 * the old indexes find the live ones. A name the retired table's index holds is first moved
 * aside to `<name>_retired`. An index whose name does not contain the new table's name, or
 * whose old-style name would not fit in 63 bytes or is taken by another relation, keeps its
 * name. Catalog updates only: no index is rebuilt, and plans refer to indexes by OID.
 * @internal
 *
 * @example
 * ```ts
 * await renameConsolidatedIndexes(trx, { schema: 'public', oldTable: 'posthog_person',
 *   newTable: 'posthog_person_new', retiredTable: 'posthog_person_retired' });
 * ```
 */
export async function renameConsolidatedIndexes(
  trx: AnyDb,
  tables: { schema: string; oldTable: string; newTable: string; retiredTable: string },
): Promise<void> {
  const { schema, oldTable, newTable, retiredTable } = tables;
  const indexesOf = async (table: string) =>
    (
      await sql<{ name: string }>`
        SELECT i.relname::text AS name FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = ${schema} AND t.relname = ${table}
        ORDER BY i.relname`.execute(trx)
    ).rows.map((r) => r.name);
  const taken = new Set(
    (
      await sql<{ name: string }>`
        SELECT c.relname::text AS name FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ${schema}`.execute(trx)
    ).rows.map((r) => r.name),
  );
  const retired = new Set(await indexesOf(retiredTable));
  const rename = async (from: string, to: string) => {
    await sql`ALTER INDEX ${sql.id(schema, from)} RENAME TO ${sql.id(to)}`.execute(trx);
    taken.delete(from);
    taken.add(to);
  };
  // The consolidated table is now called oldTable; its indexes still carry newTable's name.
  for (const name of await indexesOf(oldTable)) {
    if (!name.includes(newTable)) continue;
    const target = name.replace(newTable, oldTable);
    if (Buffer.byteLength(target) > maxNameBytes) continue;
    if (retired.has(target)) {
      await rename(target, relationName(target, 'retired', taken));
      retired.delete(target);
    }
    if (!taken.has(target)) await rename(name, target);
  }
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { relationName } from '../prepare/new-table-names.js';

/** Postgres cuts identifiers at 63 bytes: a longer name would not be the one asked for. */
const maxNameBytes = 63;

/** One `ALTER INDEX ... RENAME` of the swap. @internal */
export interface IndexRename {
  readonly from: string;
  readonly to: string;
}

/**
 * The renames finalize()'s swap makes so that the consolidated table's indexes carry the old
 * table's names (`posthog_person_new_pkey` becomes `posthog_person_pkey`, its constraint too):
 * dashboards, runbooks and `pg_stat_user_indexes` queries that name the old indexes then find
 * the live ones. Where the old table's index holds the name, it is first moved aside to
 * `<name>_retired` (the old table is the retired one by then). An index whose name does not
 * contain the new table's name, or whose old-style name would not fit in 63 bytes or is taken
 * by another relation, keeps its name. Read before the swap (the swap's own transaction, which
 * holds the phase fence, only runs the renames).
 * @internal
 *
 * @example
 * ```ts
 * const renames = await planIndexRenames(db, { schema: 'public', oldTable: 'posthog_person',
 *   newTable: 'posthog_person_new' });
 * // [{ from: 'posthog_person_pkey', to: 'posthog_person_pkey_retired' },
 * //  { from: 'posthog_person_new_pkey', to: 'posthog_person_pkey' }, ...]
 * ```
 */
export async function planIndexRenames(
  db: AnyDb,
  tables: { schema: string; oldTable: string; newTable: string },
): Promise<IndexRename[]> {
  const { schema, oldTable, newTable } = tables;
  const { rows } = await sql<{ name: string; table: string }>`
    SELECT c.relname::text AS name, coalesce(t.relname::text, '') AS table
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_index x ON x.indexrelid = c.oid
    LEFT JOIN pg_class t ON t.oid = x.indrelid
    WHERE n.nspname = ${schema} ORDER BY c.relname`.execute(db);
  const taken = new Set(rows.map((r) => r.name));
  // Before the swap: the old table's indexes will be the retired table's, the new table's the
  // consolidated table's.
  const retiring = new Set(rows.filter((r) => r.table === oldTable).map((r) => r.name));
  const renames: IndexRename[] = [];
  const rename = (from: string, to: string) => {
    renames.push({ from, to });
    taken.delete(from);
    taken.add(to);
  };
  for (const { name } of rows.filter((r) => r.table === newTable)) {
    if (!name.includes(newTable)) continue;
    const target = name.replace(newTable, oldTable);
    if (Buffer.byteLength(target) > maxNameBytes) continue;
    if (retiring.has(target)) {
      rename(target, relationName(target, 'retired', taken));
      retiring.delete(target);
    }
    if (!taken.has(target)) rename(name, target);
  }
  return renames;
}

/**
 * Runs the renames of {@link planIndexRenames} inside the swap (catalog updates only: no index
 * is rebuilt, and plans refer to indexes by OID). @internal
 *
 * @example
 * ```ts
 * await renameIndexes(trx, 'public', renames);
 * ```
 */
export async function renameIndexes(
  trx: AnyDb,
  schema: string,
  renames: readonly IndexRename[],
): Promise<void> {
  for (const { from, to } of renames) {
    await sql`ALTER INDEX ${sql.id(schema, from)} RENAME TO ${sql.id(to)}`.execute(trx);
  }
}

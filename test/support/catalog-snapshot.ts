import { sql } from 'kysely';
import type { DatabaseHandle } from '../../src/db/database-handle.js';

/** Everything in `schemas` that a failed prepare() must leave as it was. */
export async function catalogSnapshot(handle: DatabaseHandle, ...schemas: string[]) {
  const { rows } = await sql<{ item: string }>`
    SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(${schemas}::text[])
    UNION ALL
    SELECT conrelid::regclass::text || ':' || conname FROM pg_constraint
    WHERE connamespace IN (SELECT oid FROM pg_namespace WHERE nspname = ANY(${schemas}::text[]))
    UNION ALL
    SELECT a.attrelid::regclass::text || '.' || a.attname || ' default ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = ANY(${schemas}::text[]) AND a.attnum > 0 AND c.relkind IN ('r', 'p')
    ORDER BY 1`.execute(handle.db);
  const control = await sql<{ row: string }>`
    SELECT to_jsonb(m)::text AS row FROM ${sql.id(schemas[1] ?? '', 'migration')} AS m`
    .execute(handle.db)
    .catch(() => ({ rows: [] as { row: string }[] }));
  return { catalog: rows.map((r) => r.item), control: control.rows.map((r) => r.row) };
}

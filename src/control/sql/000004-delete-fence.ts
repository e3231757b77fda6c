import { type RawBuilder, sql } from 'kysely';

/**
 * Control migration 4: the delete fence, an empty table that is only ever locked.
 *
 * In `dual_read` a delete takes it `ROW EXCLUSIVE` before removing the old row; what takes it
 * `SHARE` (since migration 5: backfill planning and range splits; before release, batches of
 * a whole-table fence mode) waits for the deletes in flight and holds up later ones. Deletes
 * never wait for each other (see `PersonWrites`). A table of its own, not the old persons
 * table: autovacuum and ANALYZE take `SHARE UPDATE EXCLUSIVE` on the tables they work on,
 * which conflicts with `SHARE`; this table never has a row, so they have nothing to do here
 * (and are told so).
 */
export function migration000004(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  return [
    sql`CREATE TABLE ${table('delete_fence')} () WITH (autovacuum_enabled = false)`,
    sql`COMMENT ON TABLE ${table('delete_fence')} IS
      'pg-dual-read: locked, never written. Deletes in dual_read take it ROW EXCLUSIVE, backfill batches SHARE.'`,
  ];
}

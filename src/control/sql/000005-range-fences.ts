import { type RawBuilder, sql } from 'kysely';

/**
 * Control migration 5: range fences.
 *
 * In `dual_read` a delete now also locks the backfill range that covers its key `FOR KEY
 * SHARE` (while the range still has that key to copy), and a batch in `lockMode: 'ranges'`
 * locks its own range row `FOR UPDATE` before the statement that copies: a delete waits only
 * for a batch of its own range (see `PersonWrites` and `RangeStore`). The index finds the
 * covering range of a key without reading every range of a large plan. The delete fence of
 * migration 4 stays: deletes still take it `ROW EXCLUSIVE`, and what takes it `SHARE` now is
 * what changes which range covers a key (a new plan, a split).
 */
export function migration000005(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  return [
    sql`CREATE INDEX backfill_range_end ON ${table('backfill_range')} (migration, end_team, end_id)`,
    sql`COMMENT ON TABLE ${table('delete_fence')} IS
      'pg-dual-read: locked, never written. Deletes in dual_read take it ROW EXCLUSIVE; backfill planning and range splits take it SHARE.'`,
  ];
}

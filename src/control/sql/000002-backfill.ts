import { type RawBuilder, sql } from 'kysely';

/**
 * Control migration 2: the backfill plan of a migration and its key ranges. Each range keeps
 * its checkpoint (`cursor_*`, the last key copied) and its lease; the batch that copies rows
 * updates the checkpoint in the same statement, so progress is exactly what committed.
 */
export function migration000002(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  return [
    sql`CREATE TABLE ${table('backfill')} (
      migration text PRIMARY KEY REFERENCES ${table('migration')} (name),
      status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
      paused boolean NOT NULL DEFAULT false,
      max_rows_per_second integer CHECK (max_rows_per_second > 0),
      range_count integer NOT NULL,
      -- ranges the plan was made with (range_count grows as idle workers split ranges)
      planned_ranges integer NOT NULL,
      rows_estimated bigint NOT NULL,
      planned_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz
    )`,
    // Bounds are (team_id, id) keys: a range covers keys > start (or all from the beginning
    // when start is NULL) and <= end. cursor is the last key copied, NULL before the first batch.
    sql`CREATE TABLE ${table('backfill_range')} (
      migration text NOT NULL REFERENCES ${table('backfill')} (migration) ON DELETE CASCADE,
      range_id integer NOT NULL,
      start_team bigint,
      start_id bigint,
      end_team bigint NOT NULL,
      end_id bigint NOT NULL,
      cursor_team bigint,
      cursor_id bigint,
      rows_estimated bigint NOT NULL,
      rows_scanned bigint NOT NULL DEFAULT 0,
      rows_copied bigint NOT NULL DEFAULT 0,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done')),
      lease_owner text,
      lease_expires_at timestamptz,
      batches integer NOT NULL DEFAULT 0,
      split_from integer,
      started_at timestamptz,
      updated_at timestamptz,
      done_at timestamptz,
      PRIMARY KEY (migration, range_id)
    )`,
    // One row per worker, written only by that worker's batches (no contention): its smoothed
    // rate across ranges is what the ETA is computed from.
    sql`CREATE TABLE ${table('backfill_worker')} (
      migration text NOT NULL REFERENCES ${table('backfill')} (migration) ON DELETE CASCADE,
      worker_id text NOT NULL,
      rows_scanned bigint NOT NULL DEFAULT 0,
      batches integer NOT NULL DEFAULT 0,
      -- exponentially smoothed rows and seconds between checkpoints; rate = rows / seconds
      smoothed_rows double precision NOT NULL DEFAULT 0,
      smoothed_seconds double precision NOT NULL DEFAULT 0,
      updated_at timestamptz NOT NULL,
      PRIMARY KEY (migration, worker_id)
    )`,
  ];
}

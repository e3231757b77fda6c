import { type RawBuilder, sql } from 'kysely';

/**
 * Control migration 3: verification runs and the keys they found, and the id high-water mark
 * of the old table when `dual_read` began (a new-table row without an old row and with an id
 * at or below it can only be a copy of a person deleted since: a resurrection).
 */
export function migration000003(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  return [
    sql`ALTER TABLE ${table('migration')} ADD COLUMN dual_read_id_high_water bigint`,
    sql`CREATE TABLE ${table('verification')} (
      id bigserial PRIMARY KEY,
      migration text NOT NULL REFERENCES ${table('migration')} (name),
      method text NOT NULL CHECK (method IN ('join', 'checksum')),
      status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'clean', 'mismatched', 'failed', 'aborted')),
      -- true when the run covered every key (cutover requires a clean full run)
      full_range boolean NOT NULL,
      range_description text NOT NULL,
      columns text[] NOT NULL,
      epoch bigint NOT NULL,
      started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      finished_at timestamptz,
      old_rows bigint NOT NULL DEFAULT 0,
      new_rows bigint NOT NULL DEFAULT 0,
      counts jsonb NOT NULL DEFAULT '{}'::jsonb,
      mismatches bigint NOT NULL DEFAULT 0,
      repaired jsonb
    )`,
    sql`CREATE INDEX ON ${table('verification')} (migration, id DESC)`,
    // Keys only, never row values: persons are personal data.
    sql`CREATE TABLE ${table('verification_mismatch')} (
      verification_id bigint NOT NULL REFERENCES ${table('verification')} (id) ON DELETE CASCADE,
      team_id bigint NOT NULL,
      person_id bigint NOT NULL,
      class text NOT NULL,
      repaired_at timestamptz,
      PRIMARY KEY (verification_id, team_id, person_id, class)
    )`,
  ];
}

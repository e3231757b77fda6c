import { type RawBuilder, sql } from 'kysely';
import { quoteIdent } from '../../db/identifiers.js';
import { ConfigurationError } from '../../errors.js';

const bodyQuote = '$pg_dual_read_stray$';

/**
 * Control migration 7: what cutover, rollback and finalize need.
 *
 * - `stray_write`: the keys of writes to the old table that did not come from the library
 *   since `dual_read` began (a service on an old repository, a script, someone in psql), one
 *   row per key and operation. `startDualRead()` installs a row trigger on the old table that
 *   calls `record_stray_write(migration name)`; a transaction of the library marks itself
 *   with the setting `pg_dual_read.writer` (set by `phase_fence()`, which every write of the
 *   library calls first), so its own deletes of old rows are not recorded. The function is
 *   `SECURITY DEFINER`: whoever writes the old table records into the control schema without
 *   a grant on it. A detector of mistakes, not of malice: any session can set the marker.
 * - `phase_change.actor` and `.forced`: who moved the migration and which guards were waived.
 * - `migration.retired_table`: the old table's name after `finalize()`.
 */
export function migration000007(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  const fn = sql.id(controlSchema, 'record_stray_write');
  const body = `
DECLARE
  key_team bigint;
  key_id bigint;
BEGIN
  IF current_setting('pg_dual_read.writer', true) IS NOT DISTINCT FROM TG_ARGV[0] THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'TRUNCATE' THEN
    key_team := 0; key_id := 0; -- the whole table: no key
  ELSIF TG_OP = 'DELETE' THEN
    key_team := OLD.team_id; key_id := OLD.id;
  ELSE
    key_team := NEW.team_id; key_id := NEW.id;
  END IF;
  INSERT INTO ${quoteIdent(controlSchema)}.stray_write AS s (migration, team_id, person_id, operation)
  VALUES (TG_ARGV[0], key_team, key_id, lower(TG_OP))
  ON CONFLICT (migration, team_id, person_id, operation)
  DO UPDATE SET last_at = clock_timestamp(), writes = s.writes + 1;
  RETURN NULL;
END`;
  if (body.includes(bodyQuote)) {
    throw new ConfigurationError(`controlSchema must not contain ${bodyQuote}.`);
  }
  return [
    sql`CREATE TABLE ${table('stray_write')} (
      migration text NOT NULL REFERENCES ${table('migration')} (name),
      team_id bigint NOT NULL,
      person_id bigint NOT NULL,
      operation text NOT NULL CHECK (operation IN ('insert', 'update', 'delete', 'truncate')),
      first_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      last_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      writes bigint NOT NULL DEFAULT 1,
      PRIMARY KEY (migration, team_id, person_id, operation)
    )`,
    sql`CREATE FUNCTION ${fn}() RETURNS trigger
      LANGUAGE plpgsql SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp
      AS ${sql.raw(`${bodyQuote}${body}${bodyQuote}`)}`,
    sql`REVOKE ALL ON FUNCTION ${fn}() FROM PUBLIC`,
    sql`ALTER TABLE ${table('phase_change')}
      ADD COLUMN actor text,
      ADD COLUMN forced text[] NOT NULL DEFAULT '{}'`,
    sql`ALTER TABLE ${table('migration')} ADD COLUMN retired_table text`,
  ];
}

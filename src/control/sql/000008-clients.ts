import { type RawBuilder, sql } from 'kysely';

/**
 * Control migration 8: the client registry. Every repository instance registers itself on first
 * use and heartbeats (service name, host, pid, library version and protocol, the epoch it has
 * applied, its read counters); a row whose heartbeat is older than three intervals is dead.
 * Correctness never depends on it (the phase fence and the epoch do that): it tells an operator,
 * and `cutover()`, who is still on an old epoch or an old library, and adds up the fleet's
 * fallback rate.
 */
export function migration000008(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  return [
    sql`CREATE TABLE ${table('client')} (
      migration text NOT NULL REFERENCES ${table('migration')} (name),
      instance_id text NOT NULL,
      service text NOT NULL,
      host text NOT NULL,
      pid integer NOT NULL,
      library_version text NOT NULL,
      protocol integer NOT NULL,
      phase text NOT NULL,
      epoch bigint NOT NULL,
      reads bigint NOT NULL DEFAULT 0,
      rows_read bigint NOT NULL DEFAULT 0,
      old_rows_read bigint NOT NULL DEFAULT 0,
      heartbeat_interval_ms integer NOT NULL,
      started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      last_heartbeat timestamptz NOT NULL DEFAULT clock_timestamp(),
      PRIMARY KEY (migration, instance_id)
    )`,
  ];
}

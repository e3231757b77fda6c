import { type RawBuilder, sql } from 'kysely';

/**
 * Control migration 1: one row per persons migration (its phase and epoch) and the history of
 * phase changes. Append-only: never edit a shipped migration, add the next number instead.
 */
export function migration000001(controlSchema: string): RawBuilder<unknown>[] {
  const table = (name: string) => sql.id(controlSchema, name);
  return [
    sql`CREATE TABLE ${table('migration')} (
      name text PRIMARY KEY,
      schema_name text NOT NULL,
      old_table text NOT NULL,
      new_table text NOT NULL,
      distinct_ids_table text NOT NULL,
      phase text NOT NULL DEFAULT 'old'
        CHECK (phase IN ('old', 'dual_read', 'new', 'finalized')),
      epoch bigint NOT NULL DEFAULT 1,
      phase_changed_at timestamptz NOT NULL DEFAULT now(),
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    sql`CREATE TABLE ${table('phase_change')} (
      id bigserial PRIMARY KEY,
      migration text NOT NULL REFERENCES ${table('migration')} (name),
      from_phase text NOT NULL,
      to_phase text NOT NULL,
      epoch bigint NOT NULL,
      changed_at timestamptz NOT NULL DEFAULT now()
    )`,
  ];
}

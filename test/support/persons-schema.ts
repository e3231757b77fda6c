import { sql } from 'kysely';
import type { DatabaseHandle } from '../../src/db/database-handle.js';

/**
 * A PostHog-like persons schema: `posthog_person` (serial id) and
 * `posthog_persondistinctid`, in `schema`. `withForeignKey` adds PostHog's foreign key from
 * distinct ids to persons, which preflight reports.
 */
export async function createPersonsSchema(
  handle: DatabaseHandle,
  schema: string,
  options: { withForeignKey?: boolean } = {},
): Promise<void> {
  const person = sql.id(schema, 'posthog_person');
  const distinctIds = sql.id(schema, 'posthog_persondistinctid');
  await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(schema)}`.execute(handle.db);
  await sql`CREATE TABLE ${person} (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    properties_last_updated_at jsonb NOT NULL DEFAULT '{}'::jsonb,
    properties_last_operation jsonb,
    team_id integer NOT NULL,
    is_user_id integer,
    is_identified boolean NOT NULL DEFAULT false,
    uuid uuid NOT NULL,
    version bigint,
    UNIQUE (team_id, uuid)
  )`.execute(handle.db);
  await sql`CREATE INDEX ON ${person} (team_id, id)`.execute(handle.db);
  await sql`CREATE TABLE ${distinctIds} (
    id bigserial PRIMARY KEY,
    distinct_id varchar(400) NOT NULL,
    person_id bigint NOT NULL ${
      options.withForeignKey
        ? sql`REFERENCES ${person} (id) DEFERRABLE INITIALLY DEFERRED`
        : sql``
    },
    team_id integer NOT NULL,
    version bigint,
    UNIQUE (team_id, distinct_id)
  )`.execute(handle.db);
  await sql`CREATE INDEX ON ${distinctIds} (person_id)`.execute(handle.db);
}

/**
 * Inserts `count` persons into the OLD table of `teamId` with one distinct id each
 * (`${prefix}-${i}`), straight in SQL (as ingestion did before the migration). Returns ids.
 */
export async function seedOldPersons(
  handle: DatabaseHandle,
  schema: string,
  teamId: number,
  count: number,
  prefix = 'seed',
): Promise<string[]> {
  const { rows } = await sql<{ id: string }>`
    WITH p AS (
      INSERT INTO ${sql.id(schema, 'posthog_person')} (team_id, uuid, properties, version)
      SELECT ${teamId}, gen_random_uuid(), jsonb_build_object('n', g, 'email', 'user' || g || '@example.com'), 0
      FROM generate_series(1, ${count}) AS g
      RETURNING id, (properties->>'n')::int AS n
    ), d AS (
      INSERT INTO ${sql.id(schema, 'posthog_persondistinctid')} (team_id, distinct_id, person_id, version)
      SELECT ${teamId}, ${prefix} || '-' || p.n, p.id, 0 FROM p
    )
    SELECT id::text AS id FROM p ORDER BY n`.execute(handle.db);
  return rows.map((r) => r.id);
}

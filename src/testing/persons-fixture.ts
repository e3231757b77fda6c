import { sql } from 'kysely';
import type { DatabaseHandle } from '../db/database-handle.js';

/**
 * Options of {@link createPostHogPersonsSchema}.
 *
 * @example
 * ```ts
 * await createPostHogPersonsSchema(db, { schema: 'demo', withForeignKey: true });
 * ```
 */
export interface PersonsSchemaOptions {
  /** Schema to create the tables in (created if missing). Default `public`. */
  readonly schema?: string;
  /** Add PostHog's foreign key from distinct ids to persons (which `prepare()` reports). */
  readonly withForeignKey?: boolean;
}

/**
 * Creates a PostHog-like persons schema: `posthog_person` (bigserial id, jsonb properties,
 * version) and `posthog_persondistinctid` (unique `(team_id, distinct_id)`), for demos and
 * tests.
 *
 * @example
 * ```ts
 * import { createPostHogPersonsSchema, seedPersons } from 'pg-dual-read/testing';
 * await createPostHogPersonsSchema(db, { schema: 'demo' });
 * await seedPersons(db, { schema: 'demo', teamId: 1, count: 1000 });
 * ```
 */
export async function createPostHogPersonsSchema(
  handle: DatabaseHandle,
  options: PersonsSchemaOptions = {},
): Promise<void> {
  const schema = options.schema ?? 'public';
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
      options.withForeignKey ? sql`REFERENCES ${person} (id) DEFERRABLE INITIALLY DEFERRED` : sql``
    },
    team_id integer NOT NULL,
    version bigint,
    UNIQUE (team_id, distinct_id)
  )`.execute(handle.db);
  await sql`CREATE INDEX ON ${distinctIds} (person_id)`.execute(handle.db);
}

/**
 * Options of {@link seedPersons}.
 *
 * @example
 * ```ts
 * await seedPersons(db, { schema: 'demo', teamId: 1, count: 10_000, propertiesBytes: 500 });
 * ```
 */
export interface SeedPersonsOptions {
  /** Schema of the tables made by {@link createPostHogPersonsSchema}. Default `public`. */
  readonly schema?: string;
  /** The team every seeded person belongs to. */
  readonly teamId: number;
  /** How many persons to insert. */
  readonly count: number;
  /** Distinct ids are `${prefix}-${n}` for n = 1..count. Default `seed`. */
  readonly prefix?: string;
  /** Approximate size of each person's generated properties, in bytes. Default ~80. */
  readonly propertiesBytes?: number;
}

/**
 * Inserts `count` generated persons straight into the OLD table (as ingestion did before the
 * migration), each with one distinct id `${prefix}-${n}` and version 0, in one statement.
 * Returns their ids in order of n.
 *
 * @example
 * ```ts
 * const ids = await seedPersons(db, { teamId: 1, count: 5_000, propertiesBytes: 500 });
 * ```
 */
export async function seedPersons(
  handle: DatabaseHandle,
  options: SeedPersonsOptions,
): Promise<string[]> {
  const schema = options.schema ?? 'public';
  const prefix = options.prefix ?? 'seed';
  const padding = Math.max(0, (options.propertiesBytes ?? 80) - 80);
  const { rows } = await sql<{ id: string }>`
    WITH p AS (
      INSERT INTO ${sql.id(schema, 'posthog_person')} (team_id, uuid, properties, version)
      SELECT ${options.teamId}, gen_random_uuid(),
        jsonb_build_object('n', g, 'email', 'user' || g || '@example.com', 'plan', 'free')
          || CASE WHEN ${padding}::int > 0
               THEN jsonb_build_object('notes', repeat(md5(g::text), ceil(${padding}::int / 32.0)::int))
               ELSE '{}'::jsonb END,
        0
      FROM generate_series(1, ${options.count}::int) AS g
      RETURNING id, (properties->>'n')::int AS n
    ), d AS (
      INSERT INTO ${sql.id(schema, 'posthog_persondistinctid')} (team_id, distinct_id, person_id, version)
      SELECT ${options.teamId}, ${prefix} || '-' || p.n, p.id, 0 FROM p
    )
    SELECT id::text AS id FROM p ORDER BY n`.execute(handle.db);
  return rows.map((r) => r.id);
}

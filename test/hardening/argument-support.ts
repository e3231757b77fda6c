/**
 * Helpers of the argument hardening suites: a migration on a database that fails every
 * statement (so a refusal can be shown to come before the first one), a snapshot of the
 * persons tables, and everything an error could carry a value in.
 */
import {
  type DatabaseConnection,
  type Driver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
} from 'kysely';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { createPersonsMigration, type PersonsMigration } from '../../src/index.js';
import type { MigrationFixture } from '../support/migration-fixture.js';

/** Every place an error could carry a value: message, issues, stack, cause, and its JSON. */
export function everythingIn(error: unknown): string {
  const e = error as Error & { cause?: unknown; issues?: unknown };
  return [e.message, e.stack, JSON.stringify(e.issues), JSON.stringify(e), String(e.cause)].join(
    '\n',
  );
}

/** A migration whose database fails every statement, counting the attempts. */
export interface OfflineMigration {
  readonly migration: PersonsMigration;
  readonly handle: DatabaseHandle;
  /** How many times a connection was asked for (one per statement or transaction). */
  attempts(): number;
}

/**
 * A migration on a database that fails every statement: a call refused with an
 * `InvalidOptionsError` and no attempt was checked before any statement.
 */
export function offlineMigration(): OfflineMigration {
  let attempts = 0;
  const refuse = async (): Promise<never> => {
    attempts++;
    throw new Error('offline database: no statement may run');
  };
  const driver: Driver = {
    init: async () => {},
    acquireConnection: refuse as () => Promise<DatabaseConnection>,
    beginTransaction: refuse,
    commitTransaction: refuse,
    rollbackTransaction: refuse,
    releaseConnection: async () => {},
    destroy: async () => {},
  };
  const db = new Kysely<Record<string, never>>({
    dialect: {
      createAdapter: () => new PostgresAdapter(),
      createDriver: () => driver,
      createIntrospector: (k) => new PostgresIntrospector(k),
      createQueryCompiler: () => new PostgresQueryCompiler(),
    },
  });
  const handle: DatabaseHandle = { db, backend: 'postgres', close: async () => {} };
  const migration = createPersonsMigration({ db: handle, phaseRefreshIntervalMs: 600_000 });
  return { migration, handle, attempts: () => attempts };
}

/** Row count and checksum of each persons table of a fixture (and its control row). */
export async function personsSnapshot(
  handle: DatabaseHandle,
  fixture: Pick<MigrationFixture, 'schema' | 'controlSchema'>,
): Promise<Record<string, unknown>> {
  const table = (name: string) => sql.id(fixture.schema, name);
  const { rows } = await sql<Record<string, unknown>>`
    SELECT
      (SELECT count(*)::int FROM ${table('posthog_person')}) AS old_rows,
      (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
         FROM ${table('posthog_person')} AS t) AS old_sum,
      (SELECT count(*)::int FROM ${table('posthog_person_new')}) AS new_rows,
      (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
         FROM ${table('posthog_person_new')} AS t) AS new_sum,
      (SELECT count(*)::int FROM ${table('posthog_persondistinctid')}) AS distinct_id_rows,
      (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
         FROM ${table('posthog_persondistinctid')} AS t) AS distinct_id_sum,
      (SELECT md5(coalesce(string_agg(t::text, '|'), ''))
         FROM ${sql.id(fixture.controlSchema, 'migration')} AS t) AS control_sum`.execute(
    handle.db,
  );
  return rows[0] ?? {};
}

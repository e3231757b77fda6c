import { sql } from 'kysely';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { createPersonsMigration, type PersonsMigration } from '../../src/index.js';
import type { PersonsMigrationOptions } from '../../src/options/migration-options.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { dropSchemas, uniqueSchemaName } from './test-database.js';

/** A persons schema, its control schema and a migration on them, made for one test. */
export interface MigrationFixture {
  readonly handle: DatabaseHandle;
  readonly schema: string;
  readonly controlSchema: string;
  readonly migration: PersonsMigration;
  /** Ids of the seeded persons of team 1 (distinct ids `seed-1`...). */
  readonly seededIds: string[];
  oldTable(): ReturnType<typeof sql.id>;
  newTable(): ReturnType<typeof sql.id>;
  /** Rows of `table` for `id` (0 or 1), straight from SQL. */
  rowsIn(table: 'old' | 'new', id: string): Promise<Record<string, unknown>[]>;
  /** Forces the stored phase (for routing tests of phases later issues reach). */
  forcePhase(phase: string): Promise<void>;
  drop(): Promise<void>;
}

/**
 * Creates a fresh persons schema with `seed` persons in team 1, installs the control schema
 * and prepares the migration (phase `old`); `dualRead` also enters `dual_read`.
 */
export async function createMigrationFixture(
  handle: DatabaseHandle,
  options: {
    seed?: number;
    dualRead?: boolean;
    prepare?: boolean;
  } & Partial<PersonsMigrationOptions> = {},
): Promise<MigrationFixture> {
  const { seed = 10, dualRead = false, prepare = true, ...migrationOptions } = options;
  const schema = uniqueSchemaName('t');
  const controlSchema = `${schema}_ctl`;
  await createPostHogPersonsSchema(handle, { schema });
  const seededIds = seed > 0 ? await seedPersons(handle, { schema, teamId: 1, count: seed }) : [];
  const migration = createPersonsMigration({
    db: handle,
    schema,
    controlSchema,
    ...migrationOptions,
  });
  if (prepare) {
    await migration.install();
    await migration.prepare();
  }
  if (dualRead) await migration.startDualRead();
  const tableOf = (which: 'old' | 'new') =>
    sql.id(schema, which === 'old' ? 'posthog_person' : 'posthog_person_new');
  return {
    handle,
    schema,
    controlSchema,
    migration,
    seededIds,
    oldTable: () => tableOf('old'),
    newTable: () => tableOf('new'),
    async rowsIn(which, id) {
      const { rows } = await sql<Record<string, unknown>>`
        SELECT id::text AS id, version::int AS version, properties FROM ${tableOf(which)}
        WHERE id = ${id}::bigint`.execute(handle.db);
      return rows;
    },
    async forcePhase(phase) {
      await sql`UPDATE ${sql.id(controlSchema, 'migration')}
        SET phase = ${phase}, epoch = epoch + 1 WHERE name = 'persons'`.execute(handle.db);
    },
    async drop() {
      await migration.close();
      await dropSchemas(handle, schema, controlSchema);
    },
  };
}

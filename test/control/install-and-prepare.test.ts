import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { controlMigrations, latestControlVersion } from '../../src/control/control-migrations.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  ControlSchemaTooNewError,
  createPersonsMigration,
  NotInstalledError,
  PreflightError,
} from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { catalogSnapshot } from '../support/catalog-snapshot.js';
import {
  availableBackends,
  describeOnRealServer,
  dropSchemas,
  openBackend,
  openDatabaseForTest,
  uniqueSchemaName,
} from '../support/test-database.js';

describe.each(availableBackends())('install and prepare on %s', (backend) => {
  let handle: DatabaseHandle;
  let schema: string;
  let controlSchema: string;

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await dropSchemas(handle, schema, controlSchema);
  });

  async function personsSchema(options: { withForeignKey?: boolean } = {}) {
    schema = uniqueSchemaName('p');
    controlSchema = `${schema}_ctl`;
    await createPostHogPersonsSchema(handle, { schema, ...options });
    await seedPersons(handle, { schema, teamId: 1, count: 3 });
    return createPersonsMigration({ db: handle, schema, controlSchema });
  }

  it('install() creates the control schema once and is idempotent', async () => {
    const migration = await personsSchema();
    const all = controlMigrations.map((m) => m.version);
    expect(await migration.install()).toEqual({
      fromVersion: 0,
      toVersion: latestControlVersion,
      applied: all,
    });
    expect(await migration.install()).toEqual({
      fromVersion: latestControlVersion,
      toVersion: latestControlVersion,
      applied: [],
    });
  });

  it('install() upgrades a control schema from version 1, applying only the newer migrations', async () => {
    const migration = await personsSchema();
    await sql`CREATE SCHEMA ${sql.id(controlSchema)}`.execute(handle.db);
    await sql`CREATE TABLE ${sql.id(controlSchema, 'schema_version')} (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`.execute(
      handle.db,
    );
    const first = controlMigrations[0];
    if (!first) throw new Error('no migrations');
    for (const statement of first.statements(controlSchema)) await statement.execute(handle.db);
    await sql`INSERT INTO ${sql.id(controlSchema, 'schema_version')} (version, name) VALUES (1, 'phases')`.execute(
      handle.db,
    );
    const result = await migration.install();
    expect(result).toEqual({
      fromVersion: 1,
      toVersion: latestControlVersion,
      applied: controlMigrations.slice(1).map((m) => m.version),
    });
    await migration.prepare();
    expect((await migration.status()).phase).toBe('old');
  });

  it('a migration in dual_read whose control schema predates the delete fence: backfill() and deletes are refused naming install(), nothing changes, and install() mends it', async () => {
    const migration = await personsSchema();
    await migration.install();
    await migration.prepare();
    await migration.startDualRead();
    // As installed by the version before control migration 4.
    await sql`DROP TABLE ${sql.id(controlSchema, 'delete_fence')}`.execute(handle.db);
    await sql`DROP INDEX ${sql.id(controlSchema, 'backfill_range_end')}`.execute(handle.db);
    await sql`DROP FUNCTION ${sql.id(controlSchema, 'phase_fence')}`.execute(handle.db);
    // ... and before migration 7 (the stray-write trigger, history columns, retired table).
    await sql`DROP TABLE ${sql.id(controlSchema, 'stray_write')}`.execute(handle.db);
    // CASCADE: the stray-write triggers on the old table go with their function.
    await sql`DROP FUNCTION ${sql.id(controlSchema, 'record_stray_write')} CASCADE`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${sql.id(controlSchema, 'phase_change')} DROP COLUMN actor, DROP COLUMN forced`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${sql.id(controlSchema, 'migration')} DROP COLUMN retired_table`.execute(
      handle.db,
    );
    // ... and before migration 8 (the client registry).
    await sql`DROP TABLE ${sql.id(controlSchema, 'client')}`.execute(handle.db);
    await sql`DELETE FROM ${sql.id(controlSchema, 'schema_version')} WHERE version >= 4`.execute(
      handle.db,
    );
    const repo = migration.repository();
    const { persons } = await repo.listPersons(1, { limit: 10 });
    expect(persons).toHaveLength(3);
    const victim = persons[0]?.id as string;

    const backfillError = await migration.backfill().catch((e: unknown) => e);
    expect(backfillError).toMatchObject({ code: 'NOT_INSTALLED' });
    expect((backfillError as Error).message).toContain('run migration.install()');
    const deleteError = await repo.deletePerson(1, victim).catch((e: unknown) => e);
    expect(deleteError).toMatchObject({ code: 'NOT_INSTALLED' });
    expect((deleteError as Error).message).toContain('run migration.install()');
    expect(await repo.countPersons(1)).toBe(3);
    await expect(migration.status()).rejects.toMatchObject({ code: 'NOT_INSTALLED' });

    // Every write takes the phase fence of control migration 6.
    const updateError = await repo
      .updatePerson(1, victim, { properties: { a: 1 } })
      .catch((e: unknown) => e);
    expect(updateError).toMatchObject({ code: 'NOT_INSTALLED' });
    expect(await migration.install()).toMatchObject({ fromVersion: 3, applied: [4, 5, 6, 7, 8] });
    expect(await repo.deletePerson(1, victim)).toBe(true);
    expect(await migration.backfill()).toMatchObject({ finished: true, rowsCopied: 2 });
    expect(await repo.countPersons(1)).toBe(2);
  });

  it('install() refuses a control schema newer than the code and changes nothing', async () => {
    const migration = await personsSchema();
    await migration.install();
    await sql`INSERT INTO ${sql.id(controlSchema, 'schema_version')} (version, name) VALUES (99, 'future')`.execute(
      handle.db,
    );
    const error = await migration.install().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ControlSchemaTooNewError);
    expect(error).toMatchObject({ code: 'CONTROL_SCHEMA_TOO_NEW', installedVersion: 99 });
  });

  it('prepare() before install() says to run install()', async () => {
    const migration = await personsSchema();
    const error = await migration.prepare().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotInstalledError);
    expect((error as Error).message).toContain('install()');
  });

  it('status(), startDualRead() and backfill() before install() throw NotInstalledError saying to run install()', async () => {
    const migration = await personsSchema();
    for (const call of [
      () => migration.status(),
      () => migration.startDualRead(),
      () => migration.backfill(),
    ]) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NotInstalledError);
      expect((error as Error).message).toContain('install()');
    }
  });

  it('prepare() with an invalid option rejects (not throws) naming the option', async () => {
    const migration = await personsSchema();
    const pending = migration.prepare({ partitions: 1 });
    await expect(pending).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(pending).rejects.toThrow('partitions must be an integer from 2 to 1024');
  });

  it('startDualRead() and status() before prepare() say what to run', async () => {
    const migration = await personsSchema();
    await migration.install();
    for (const call of [() => migration.startDualRead(), () => migration.status()]) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'NOT_INSTALLED' });
      expect((error as Error).message).toContain('prepare()');
    }
  });

  it('prepare() creates the new table with the same columns, hash partitions and the old id sequence', async () => {
    const migration = await personsSchema();
    await migration.install();
    const result = await migration.prepare({ partitions: 4 });
    expect(result).toMatchObject({ createdNewTable: true, partitions: 4, registered: true });
    const columns = await sql<{ table: string; names: string }>`
      SELECT c.relname AS table,
        string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum) AS names
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relname IN ('posthog_person', 'posthog_person_new')
        AND a.attnum > 0 AND NOT a.attisdropped
      GROUP BY c.relname ORDER BY c.relname`.execute(handle.db);
    expect(columns.rows[0]?.names).toBe(columns.rows[1]?.names);
    const defaults = await sql<{ old: string; new: string }>`
      SELECT pg_get_expr(o.adbin, o.adrelid) AS old, pg_get_expr(n.adbin, n.adrelid) AS new
      FROM pg_attrdef o, pg_attrdef n
      WHERE o.adrelid = ${`"${schema}".posthog_person`}::regclass
        AND n.adrelid = ${`"${schema}".posthog_person_new`}::regclass
        AND o.adnum = 1 AND n.adnum = 1`.execute(handle.db);
    expect(defaults.rows[0]?.new).toBe(defaults.rows[0]?.old);
    expect(defaults.rows[0]?.new).toContain('nextval');
    const again = await migration.prepare({ partitions: 4 });
    expect(again).toMatchObject({ createdNewTable: false, partitions: 4, registered: false });
    expect((await migration.status()).phase).toBe('old');
  });

  it('prepare() reports a foreign key to the old table with its fix and changes nothing', async () => {
    const migration = await personsSchema({ withForeignKey: true });
    await migration.install();
    const before = await catalogSnapshot(handle, schema, controlSchema);
    const error = await migration.prepare().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    const problems = (error as PreflightError).problems;
    expect(problems.map((p) => p.check)).toEqual(['foreign_key_to_old_table']);
    expect(problems[0]?.fix).toMatch(
      /ALTER TABLE "p_[0-9a-f]+"."posthog_persondistinctid" DROP CONSTRAINT "posthog_persondistinctid_person_id_fkey";/,
    );
    expect(await catalogSnapshot(handle, schema, controlSchema)).toEqual(before);
  });

  it('prepare() reports a missing old table, a missing distinct-ids table and changes nothing', async () => {
    await personsSchema();
    const migration = createPersonsMigration({
      db: handle,
      schema,
      controlSchema,
      oldTable: 'no_such_person',
      distinctIdsTable: 'no_such_distinct_ids',
    });
    await migration.install();
    const before = await catalogSnapshot(handle, schema, controlSchema);
    const error = await migration.prepare().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'PREFLIGHT_FAILED' });
    expect((error as PreflightError).problems.map((p) => p.check).sort()).toEqual([
      'distinct_ids_table_missing',
      'old_table_missing',
    ]);
    expect(await catalogSnapshot(handle, schema, controlSchema)).toEqual(before);
  });

  it('prepare() reports a column missing from an existing new table, and one of another type', async () => {
    const migration = await personsSchema();
    await migration.install();
    await sql`CREATE TABLE ${sql.id(schema, 'posthog_person_new')}
      (LIKE ${sql.id(schema, 'posthog_person')} INCLUDING DEFAULTS)`.execute(handle.db);
    await sql`ALTER TABLE ${sql.id(schema, 'posthog_person_new')} ADD PRIMARY KEY (team_id, id)`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${sql.id(schema, 'posthog_person_new')} DROP COLUMN is_identified`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${sql.id(schema, 'posthog_person_new')} ALTER COLUMN is_user_id TYPE bigint`.execute(
      handle.db,
    );
    const before = await catalogSnapshot(handle, schema, controlSchema);
    const error = (await migration.prepare().catch((e: unknown) => e)) as PreflightError;
    expect(error.problems.map((p) => p.check).sort()).toEqual([
      'column_missing_in_new',
      'column_type_mismatch',
    ]);
    expect(error.message).toContain('"is_identified"');
    expect(error.problems.find((p) => p.check === 'column_missing_in_new')?.fix).toContain(
      'ADD COLUMN "is_identified" boolean',
    );
    expect(await catalogSnapshot(handle, schema, controlSchema)).toEqual(before);
  });

  it('prepare() reports a new table without a unique (team_id, id) key', async () => {
    const migration = await personsSchema();
    await migration.install();
    await sql`CREATE TABLE ${sql.id(schema, 'posthog_person_new')}
      (LIKE ${sql.id(schema, 'posthog_person')} INCLUDING DEFAULTS)`.execute(handle.db);
    const error = (await migration.prepare().catch((e: unknown) => e)) as PreflightError;
    expect(error.problems.map((p) => p.check)).toEqual(['new_key_missing']);
  });

  it('prepare() of the same migration name with other tables is refused', async () => {
    const migration = await personsSchema();
    await migration.install();
    await migration.prepare();
    await sql`CREATE TABLE ${sql.id(schema, 'other_new')} (LIKE ${sql.id(schema, 'posthog_person')})`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${sql.id(schema, 'other_new')} ADD PRIMARY KEY (team_id, id)`.execute(
      handle.db,
    );
    const other = createPersonsMigration({
      db: handle,
      schema,
      controlSchema,
      newTable: 'other_new',
    });
    const error = (await other.prepare().catch((e: unknown) => e)) as PreflightError;
    expect(error.problems.map((p) => p.check)).toEqual(['migration_registered_with_other_tables']);
  });
});

describeOnRealServer('install() from many sessions at once on postgres', () => {
  it('the default control schema name is one a real server accepts', async () => {
    const db = await openDatabaseForTest(1);
    try {
      const { controlSchema } = createPersonsMigration({ db }).options;
      await db.db
        .transaction()
        .execute(async (trx) => {
          // Created inside a transaction that is rolled back: nothing is left behind.
          await sql`CREATE SCHEMA ${sql.id(controlSchema)}`.execute(trx);
          throw new Error('rollback');
        })
        .catch((e: Error) => {
          if (e.message !== 'rollback') throw e;
        });
    } finally {
      await db.close();
    }
  });

  it('ten concurrent install() calls apply each control migration exactly once', async () => {
    const controlSchema = uniqueSchemaName('ctl');
    const handles = await Promise.all(Array.from({ length: 10 }, () => openDatabaseForTest(1)));
    try {
      const results = await Promise.all(
        handles.map((db) => createPersonsMigration({ db, controlSchema }).install()),
      );
      expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
      expect(results.every((r) => r.toVersion === latestControlVersion)).toBe(true);
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM ${sql.id(controlSchema, 'schema_version')}`.execute(
        handles[0]?.db ?? (undefined as never),
      );
      expect(rows[0]?.n).toBe(controlMigrations.length);
    } finally {
      if (handles[0]) await dropSchemas(handles[0], controlSchema);
      await Promise.all(handles.map((h) => h.close()));
    }
  });
});

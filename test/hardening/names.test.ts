/**
 * Names that break (issue 13, item 5): every name Postgres accepts works or is refused up
 * front. Columns, tables and schemas named with dots, quotes, spaces, `as`, semicolons, upper
 * case and Unicode go through prepare(), the repository's reads and writes, the backfill,
 * verify() and diffTables(); a new table's name up to 63 bytes (of UTF-8) gets index and
 * partition names that fit and stay apart; a name already taken in the schema is a preflight
 * problem, and so is an old column named like one the repository adds to its rows; a name
 * over 63 bytes is refused before any statement.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  createPersonsMigration,
  type DiffTablesOptions,
  diffTables,
  InvalidOptionsError,
  type PersonsMigration,
  PreflightError,
} from '../../src/index.js';
import { reservedColumnNames } from '../../src/persons/person-columns.js';
import {
  maxNameBytes,
  newTableNames,
  relationName,
  truncateToBytes,
} from '../../src/prepare/new-table-names.js';
import { epochColumn, foundColumn, fromOldColumn } from '../../src/repository/person-reads.js';
import { catalogSnapshot } from '../support/catalog-snapshot.js';
import {
  availableBackends,
  dropSchemas,
  openBackend,
  uniqueSchemaName,
} from '../support/test-database.js';

const bytes = (name: string) => Buffer.byteLength(name, 'utf8');

/** Column names Postgres accepts that a naive `alias.column` reference splits or misreads. */
const hostileColumns = [
  'utm.source',
  'say "hi"',
  'with space',
  'x as y',
  'a;b',
  'UpperCase',
  'ünïcødé ✓',
] as const;

/** A persons table (and distinct ids) with the hostile columns, built with raw SQL. */
async function hostileTables(
  handle: DatabaseHandle,
  names: { schema: string; old: string; distinctIds: string },
): Promise<void> {
  const db = handle.db;
  const t = (name: string) => sql.id(names.schema, name);
  const extra = sql.join(
    hostileColumns.map((c) => sql`${sql.id(c)} text`),
    sql`, `,
  );
  await sql`CREATE SCHEMA ${sql.id(names.schema)}`.execute(db);
  await sql`CREATE TABLE ${t(names.old)} (
    id bigserial PRIMARY KEY, team_id integer NOT NULL, uuid uuid NOT NULL,
    properties jsonb NOT NULL DEFAULT '{}', version bigint, ${extra},
    UNIQUE (team_id, uuid))`.execute(db);
  await sql`CREATE INDEX ON ${t(names.old)} (team_id, id)`.execute(db);
  // Indexes on the hostile columns, which the new table mirrors.
  await sql`CREATE INDEX ${sql.id('by utm.source')} ON ${t(names.old)} (team_id, ${sql.id('utm.source')})`.execute(
    db,
  );
  await sql`CREATE UNIQUE INDEX ${sql.id('Unique "x as y"')} ON ${t(names.old)} (team_id, ${sql.id('x as y')})`.execute(
    db,
  );
  await sql`CREATE TABLE ${t(names.distinctIds)} (
    id bigserial PRIMARY KEY, distinct_id varchar(400) NOT NULL, person_id bigint NOT NULL,
    team_id integer NOT NULL, version bigint, UNIQUE (team_id, distinct_id))`.execute(db);
  const values = (n: number) => sql.join(hostileColumns.map((c, i) => sql`${`${c}=${i}:${n}`}`));
  for (let n = 1; n <= 20; n++) {
    await sql`INSERT INTO ${t(names.old)} (team_id, uuid, properties, version, ${sql.join(
      hostileColumns.map((c) => sql.id(c)),
    )})
      VALUES (1, gen_random_uuid(), ${JSON.stringify({ n })}::jsonb, 0, ${values(n)})`.execute(db);
    await sql`INSERT INTO ${t(names.distinctIds)} (team_id, distinct_id, person_id, version)
      VALUES (1, ${`d-${n}`}, ${n}, 0)`.execute(db);
  }
}

describe.each(availableBackends())('hostile names on %s', (backend) => {
  let handle: DatabaseHandle;
  let migration: PersonsMigration | undefined;
  const schemas: string[] = [];

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await migration?.close();
    migration = undefined;
    await dropSchemas(handle, ...schemas.splice(0));
  });

  /** A schema name with a dot, a quote and upper case, unique per test. */
  function hostileSchema(): { schema: string; controlSchema: string } {
    const unique = uniqueSchemaName('n');
    const schema = `Sch.${unique} "q"`;
    const controlSchema = `ctl;${unique}`;
    schemas.push(schema, controlSchema);
    return { schema, controlSchema };
  }

  it('columns, tables and schemas named with dots, quotes, spaces, "as", semicolons and Unicode work through prepare, writes, reads, backfill and verify', {
    timeout: 120_000,
  }, async () => {
    const { schema, controlSchema } = hostileSchema();
    const names = { schema, old: 'Persons.Old "v1"', distinctIds: 'distinct.ids; x' };
    await hostileTables(handle, names);
    migration = createPersonsMigration({
      db: handle,
      schema,
      controlSchema,
      oldTable: names.old,
      newTable: 'Persons.New "v2" ✓',
      distinctIdsTable: names.distinctIds,
    });
    await migration.install();
    const prepared = await migration.prepare({ partitions: 2 });
    expect(prepared.problems).toEqual([]);
    await migration.startDualRead();
    const repo = migration.repository();

    // Copy-on-write of an old row, then reads that merge both tables.
    const updated = await repo.updatePerson(1, '3', { properties: { plan: 'paid' } });
    expect(updated).toMatchObject({ id: '3', version: 1, 'utm.source': 'utm.source=0:3' });
    expect(await repo.fetchPerson(1, 'd-3')).toMatchObject({ 'x as y': 'x as y=3:3' });
    const created = await repo.createPerson({ teamId: 1, distinctIds: ['new-1'] });
    expect(created.status).toBe('created');
    expect(await repo.countPersons(1)).toBe(21);
    const page = await repo.listPersons(1, { limit: 100 });
    expect(page.persons.map((p) => p['ünïcødé ✓']).filter(Boolean)).toHaveLength(20);
    expect(await repo.deletePerson(1, '4')).toBe(true);

    const backfilled = await migration.backfill({ ranges: 2, batchSize: 5 });
    expect(backfilled).toMatchObject({ finished: true });
    const verified = await migration.verify();
    expect(verified).toMatchObject({ clean: true, mismatches: 0 });
    expect(verified.columns).toEqual(expect.arrayContaining([...hostileColumns]));
    const checksum = await migration.verify({ method: 'checksum', columns: ['utm.source'] });
    expect(checksum).toMatchObject({ clean: true });

    // Every hostile value reached the new table as it was in the old one.
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.id(schema, 'Persons.New "v2" ✓')} AS n
      JOIN ${sql.id(schema, names.old)} AS o USING (team_id, id)
      WHERE ${sql.join(
        hostileColumns.map((c) => sql`${sql.id('n', c)} IS NOT DISTINCT FROM ${sql.id('o', c)}`),
        sql` AND `,
      )}`.execute(handle.db);
    expect(rows[0]?.n).toBe(19);

    // diffTables() compares them too, hostile columns included.
    const diff = await diffTables({
      old: { db: handle, schema, table: names.old },
      new: { db: handle, schema, table: 'Persons.New "v2" ✓' },
    });
    expect(diff).toMatchObject({ clean: true });
  });

  it('a new table named with 63 bytes of multibyte UTF-8 and 12 partitions gets names that fit in 63 bytes and stay apart', {
    timeout: 120_000,
  }, async () => {
    const { schema, controlSchema } = hostileSchema();
    const names = { schema, old: 'posthog_person', distinctIds: 'posthog_persondistinctid' };
    await hostileTables(handle, names);
    // 31 two-byte characters and one more byte: 63 bytes, the most Postgres keeps.
    const newTable = `${'é'.repeat(31)}x`;
    expect(bytes(newTable)).toBe(63);
    migration = createPersonsMigration({ db: handle, schema, controlSchema, newTable });
    await migration.install();
    const result = await migration.prepare({ partitions: 12 });
    expect(result).toMatchObject({ createdNewTable: true, partitions: 12 });

    const { rows } = await sql<{ name: string; kind: string }>`
      SELECT c.relname::text AS name, c.relkind::text AS kind FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relname LIKE 'é%' ORDER BY 1`.execute(handle.db);
    const tables = rows.filter((r) => r.kind === 'r' || r.kind === 'p');
    expect(tables.map((r) => r.name)).toContain(newTable);
    expect(tables).toHaveLength(13);
    for (const { name } of rows) expect(bytes(name)).toBeLessThanOrEqual(maxNameBytes);

    await migration.startDualRead();
    expect(await migration.backfill()).toMatchObject({ finished: true, rowsCopied: 20 });
    expect(await migration.verify()).toMatchObject({ clean: true });
  });

  it('refuses, changing nothing, when a name prepare() would give a partition or the new table is taken in the schema', async () => {
    const { schema, controlSchema } = hostileSchema();
    const names = { schema, old: 'posthog_person', distinctIds: 'posthog_persondistinctid' };
    await hostileTables(handle, names);
    await sql`CREATE VIEW ${sql.id(schema, 'posthog_person_new_p1')} AS SELECT 1 AS one`.execute(
      handle.db,
    );
    migration = createPersonsMigration({ db: handle, schema, controlSchema });
    await migration.install();
    const before = await catalogSnapshot(handle, schema, controlSchema);
    const error = await migration.prepare({ partitions: 4 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    const problem = (error as PreflightError).problems.find(
      (p) => p.check === 'name_taken_in_schema',
    );
    expect(problem?.message).toContain('partition 1 of the new table');
    expect(problem?.message).toContain('posthog_person_new_p1');
    expect(problem?.message).toContain('view');
    expect(await catalogSnapshot(handle, schema, controlSchema)).toEqual(before);

    const dry = await migration.prepare({ partitions: 4, dryRun: true });
    expect(dry.problems.map((p) => p.check)).toContain('name_taken_in_schema');

    // The new table's own name held by a sequence: refused the same way, naming it.
    const other = createPersonsMigration({
      db: handle,
      schema,
      controlSchema,
      name: 'other',
      newTable: 'persons_seq_named',
    });
    await sql`CREATE SEQUENCE ${sql.id(schema, 'persons_seq_named')}`.execute(handle.db);
    const refused = await other.prepare().catch((e: unknown) => e);
    await other.close();
    expect(refused).toBeInstanceOf(PreflightError);
    expect((refused as PreflightError).message).toMatch(
      /would create the new table as .*persons_seq_named, but a sequence/,
    );
  });

  it('refuses, changing nothing, an old column named like a column the repository adds to its rows', async () => {
    // The names the repository's statements really use are all in the list prepare() refuses.
    expect(reservedColumnNames).toEqual(
      expect.arrayContaining([fromOldColumn, epochColumn, foundColumn, 'inserted_count']),
    );
    const { schema, controlSchema } = hostileSchema();
    const names = { schema, old: 'posthog_person', distinctIds: 'posthog_persondistinctid' };
    await hostileTables(handle, names);
    await sql`ALTER TABLE ${sql.id(schema, names.old)} ADD COLUMN inserted_count int`.execute(
      handle.db,
    );
    migration = createPersonsMigration({ db: handle, schema, controlSchema });
    await migration.install();
    const before = await catalogSnapshot(handle, schema, controlSchema);
    const error = await migration.prepare().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as PreflightError).problems).toEqual([
      expect.objectContaining({
        check: 'reserved_column_name',
        message: expect.stringContaining('Column "inserted_count"'),
      }),
    ]);
    expect(await catalogSnapshot(handle, schema, controlSchema)).toEqual(before);
  });

  it('refuses a table, schema or column name over 63 bytes, or with a lone surrogate, before any statement', async () => {
    const tooLong = 'é'.repeat(32); // 32 characters, 64 bytes
    for (const [option, value] of [
      ['newTable', tooLong],
      ['oldTable', `${'x'.repeat(63)}y`],
      ['schema', tooLong],
      ['controlSchema', tooLong],
      ['newTable', 'bad\uD800name'],
    ] as const) {
      expect(() => createPersonsMigration({ db: handle, [option]: value })).toThrow(
        InvalidOptionsError,
      );
      expect(() => createPersonsMigration({ db: handle, [option]: value })).toThrow(option);
    }
    // 63 bytes is fine, in any characters.
    await createPersonsMigration({ db: handle, newTable: `${'é'.repeat(31)}x` }).close();

    const side = { db: handle, table: 'posthog_person' };
    const refusals: [DiffTablesOptions, string][] = [
      [{ old: side, new: { ...side, table: tooLong } }, 'new.table must be at most 63 bytes'],
      [{ old: { ...side, schema: tooLong }, new: side }, 'old.schema must be at most 63 bytes'],
      [{ old: side, new: side, columns: [tooLong] }, 'columns[] must be at most 63 bytes'],
    ];
    for (const [options, message] of refusals) {
      const error = await diffTables(options).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect((error as Error).message).toContain(message);
    }
  });
});

describe('names prepare() derives for the new table', () => {
  it('are the plain ones while they fit, and cut with a hash, never inside a character, when they do not', () => {
    expect(newTableNames('posthog_person_new', 2)).toEqual({
      table: 'posthog_person_new',
      primaryKey: 'posthog_person_new_pkey',
      uuidIndex: 'posthog_person_new_team_id_uuid_key',
      partitions: ['posthog_person_new_p0', 'posthog_person_new_p1'],
    });
    for (const table of ['x'.repeat(63), 'x'.repeat(61), `${'é'.repeat(31)}x`, '✓'.repeat(21)]) {
      const names = newTableNames(table, 64);
      const all = [names.table, names.primaryKey, names.uuidIndex, ...names.partitions];
      expect(new Set(all).size).toBe(all.length);
      for (const name of all) {
        expect(bytes(name)).toBeLessThanOrEqual(maxNameBytes);
        expect(name).not.toMatch(/\p{Cs}|\uFFFD/u);
      }
      expect(names.partitions[10]).toMatch(/_[0-9a-f]{8}_p10$/);
      expect(newTableNames(table, 64)).toEqual(names);
    }
    expect(truncateToBytes('añb', 2)).toBe('a');
    expect(relationName('t', 'pkey', new Set(['t_pkey']))).toMatch(/^t_[0-9a-f]{8}_pkey$/);
  });
});

/**
 * prepare() on persons tables shaped the way production tables end up, built here with raw SQL
 * (never by the library): PostHog's full persons table with its expression and partial indexes
 * and a CHECK constraint, a table from an earlier swap (id default on a sequence it does not
 * own), an identity column, duplicates where the old table has no unique (team_id, uuid),
 * foreign keys from other tables, a view, a trigger, a policy, a publication, grants,
 * inheritance. Each is accepted, warned about or refused with its fix; a refusal and a dry run
 * change nothing.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  createPersonsMigration,
  type PersonsMigration,
  PreflightError,
  type PreflightProblem,
} from '../../src/index.js';
import { catalogSnapshot } from '../support/catalog-snapshot.js';
import {
  availableBackends,
  describeOnRealServer,
  dropSchemas,
  openBackend,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

const checks = (findings: readonly PreflightProblem[]) => findings.map((f) => f.check).sort();

/**
 * A schema for one test, the helpers that build production-shaped tables in it with raw SQL,
 * and its clean-up.
 */
function productionFixture(handle: () => DatabaseHandle) {
  const f = {
    schema: '',
    controlSchema: '',
    roles: [] as string[],
    t: (name: string) => sql.id(f.schema, name),
    /** PostHog's persons table as production has it, and its distinct ids; `id` from `idColumn`. */
    async posthogSchema(idColumn = sql`id bigserial PRIMARY KEY`): Promise<PersonsMigration> {
      const db = handle().db;
      f.schema = uniqueSchemaName('ps');
      f.controlSchema = `${f.schema}_ctl`;
      await sql`CREATE SCHEMA ${sql.id(f.schema)}`.execute(db);
      await sql`CREATE TABLE ${f.t('posthog_person')} (
        ${idColumn},
        created_at timestamptz NOT NULL DEFAULT now(),
        properties_last_updated_at jsonb,
        properties_last_operation jsonb,
        properties jsonb NOT NULL DEFAULT '{}',
        is_identified boolean NOT NULL DEFAULT false,
        team_id integer NOT NULL,
        is_user_id integer,
        uuid uuid NOT NULL,
        version bigint,
        CONSTRAINT version_not_negative CHECK (version IS NULL OR version >= 0)
      )`.execute(db);
      await sql`CREATE INDEX posthog_person_team_id_id ON ${f.t('posthog_person')} (team_id, id)`.execute(
        db,
      );
      await sql`CREATE INDEX posthog_person_email ON ${f.t('posthog_person')} ((properties ->> 'email'))`.execute(
        db,
      );
      await sql`CREATE INDEX posthog_person_identified ON ${f.t('posthog_person')} (team_id) WHERE is_identified`.execute(
        db,
      );
      await sql`CREATE TABLE ${f.t('posthog_persondistinctid')} (
        id bigserial PRIMARY KEY, distinct_id varchar(400) NOT NULL, person_id bigint NOT NULL,
        team_id integer NOT NULL, version bigint, UNIQUE (team_id, distinct_id))`.execute(db);
      const migration = createPersonsMigration({
        db: handle(),
        schema: f.schema,
        controlSchema: f.controlSchema,
      });
      await migration.install();
      return migration;
    },
    async uniqueUuid(): Promise<void> {
      await sql`CREATE UNIQUE INDEX posthog_person_team_uuid ON ${f.t('posthog_person')} (team_id, uuid)`.execute(
        handle().db,
      );
    },
    async seed(count: number, team = 1): Promise<void> {
      await sql`INSERT INTO ${f.t('posthog_person')} (team_id, uuid, properties, version)
        SELECT ${team}, gen_random_uuid(), jsonb_build_object('email', 'p' || g || '@example.com'), 0
        FROM generate_series(1, ${count}::int) AS g`.execute(handle().db);
    },
    async indexDefinitions(table: string): Promise<string[]> {
      const { rows } = await sql<{ def: string }>`
        SELECT indexdef AS def FROM pg_indexes WHERE schemaname = ${f.schema} AND tablename = ${table}
        ORDER BY indexname`.execute(handle().db);
      return rows.map((r) => r.def);
    },
    async cleanUp(): Promise<void> {
      const db = handle().db;
      await sql`DROP PUBLICATION IF EXISTS ${sql.id(`${f.schema}_pub`)}`.execute(db);
      await dropSchemas(handle(), f.schema, f.controlSchema);
      for (const role of f.roles.splice(0))
        await sql`DROP ROLE IF EXISTS ${sql.id(role)}`.execute(db);
    },
  };
  return f;
}

describe.each(availableBackends())('prepare() on production-shaped schemas on %s', (backend) => {
  let handle: DatabaseHandle;
  const f = productionFixture(() => handle);
  const { t, posthogSchema, uniqueUuid, seed, indexDefinitions } = f;

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await f.cleanUp();
  });

  it("PostHog's full table: the new table gets every index (expression and partial ones too), the CHECK constraint and the key; status() lacks nothing", async () => {
    const migration = await posthogSchema();
    await uniqueUuid();
    await seed(20);
    const dry = await migration.prepare({ dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, problems: [], createdNewTable: true });
    expect(dry.ddl.join('\n')).toContain("((properties ->> 'email'::text))");
    expect(await indexDefinitions('posthog_person_new')).toEqual([]);

    const result = await migration.prepare();
    expect(result).toMatchObject({ dryRun: false, problems: [], createdNewTable: true });
    expect(result.ddl).toEqual(dry.ddl);
    const definitions = (await indexDefinitions('posthog_person_new')).join('\n');
    expect(definitions).toContain("USING btree (((properties ->> 'email'::text)))");
    expect(definitions).toContain('USING btree (team_id) WHERE is_identified');
    expect(definitions).toMatch(/UNIQUE INDEX \S+ ON \S+ USING btree \(id\)/);
    expect(definitions).toMatch(/UNIQUE INDEX \S+ ON \S+ USING btree \(team_id, uuid\)/);
    const { rows } = await sql<{ name: string }>`
      SELECT conname AS name FROM pg_constraint
      WHERE conrelid = ${`"${f.schema}"."posthog_person_new"`}::regclass AND contype = 'c'`.execute(
      handle.db,
    );
    expect(rows.map((r) => r.name)).toEqual(['version_not_negative']);
    const status = await migration.status();
    expect(status.missingIndexes).toEqual([]);
    expect(checks(status.warnings)).toEqual([]);
  });

  it('a table from an earlier swap: the id default on a sequence it does not own is found, and startDualRead() marks its position', async () => {
    const migration = await posthogSchema(sql`id bigint PRIMARY KEY`);
    await uniqueUuid();
    await sql`CREATE SEQUENCE ${t('person_ids_from_the_last_swap')} START 1000`.execute(handle.db);
    await sql`ALTER TABLE ${t('posthog_person')} ALTER COLUMN id
      SET DEFAULT nextval(${sql.lit(`"${f.schema}".person_ids_from_the_last_swap`)}::regclass)`.execute(
      handle.db,
    );
    await seed(5);
    const result = await migration.prepare();
    expect(result.idSequence).toBe(`${f.schema}.person_ids_from_the_last_swap`);
    expect(result.problems).toEqual([]);
    await migration.startDualRead();
    const { rows } = await sql<{ mark: string }>`
      SELECT dual_read_id_high_water::text AS mark FROM ${sql.id(f.controlSchema, 'migration')}`.execute(
      handle.db,
    );
    expect(rows[0]?.mark).toBe('1004');
    const created = await migration.repository().createPerson({ teamId: 1, distinctIds: ['a'] });
    expect(created).toMatchObject({ status: 'created', person: { id: '1005' } });
  });

  it('an identity column: its sequence feeds the new table, which gets no identity of its own', async () => {
    const migration = await posthogSchema(
      sql`id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY`,
    );
    await uniqueUuid();
    await seed(3);
    const result = await migration.prepare();
    expect(result.idSequence).toMatch(/posthog_person_id_seq$/);
    const { rows } = await sql<{ identity: string; def: string | null }>`
      SELECT a.attidentity::text AS identity, pg_get_expr(d.adbin, d.adrelid) AS def
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = ${`"${f.schema}"."posthog_person_new"`}::regclass AND a.attname = 'id'`.execute(
      handle.db,
    );
    expect(rows[0]).toMatchObject({ identity: '' });
    expect(rows[0]?.def).toContain('posthog_person_id_seq');
  });

  it('duplicates where the old table has no unique (team_id, uuid): refused with their count and the statement that lists them; nothing created, a dry run says the same', async () => {
    const migration = await posthogSchema();
    await seed(10);
    await sql`UPDATE ${t('posthog_person')} SET uuid = (SELECT uuid FROM ${t('posthog_person')} ORDER BY id LIMIT 1)
      WHERE id IN (SELECT id FROM ${t('posthog_person')} ORDER BY id OFFSET 1 LIMIT 2)`.execute(
      handle.db,
    );
    const before = await catalogSnapshot(handle, f.schema, f.controlSchema);
    const error = await migration.prepare().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    const problem = (error as PreflightError).problems.find(
      (p) => p.check === 'duplicate_keys_in_old',
    );
    expect(problem?.message).toContain('1 group(s)');
    expect(problem?.message).toContain('(3 rows)');
    expect(problem?.fix).toContain('GROUP BY "team_id", "uuid" HAVING count(*) > 1');
    expect(await catalogSnapshot(handle, f.schema, f.controlSchema)).toEqual(before);
    const dry = await migration.prepare({ dryRun: true });
    expect(checks(dry.problems)).toEqual(['duplicate_keys_in_old']);
    expect(dry.ddl.length).toBeGreaterThan(0);
    expect(await catalogSnapshot(handle, f.schema, f.controlSchema)).toEqual(before);
  });

  it('foreign keys from two other tables are refused with a fix each; nothing created', async () => {
    const migration = await posthogSchema();
    await uniqueUuid();
    await sql`ALTER TABLE ${t('posthog_persondistinctid')} ADD FOREIGN KEY (person_id) REFERENCES ${t('posthog_person')} (id)`.execute(
      handle.db,
    );
    await sql`CREATE TABLE ${t('posthog_cohortpeople')} (id bigserial PRIMARY KEY,
      person_id bigint NOT NULL REFERENCES ${t('posthog_person')} (id))`.execute(handle.db);
    const before = await catalogSnapshot(handle, f.schema, f.controlSchema);
    const error = (await migration.prepare().catch((e: unknown) => e)) as PreflightError;
    expect(checks(error.problems)).toEqual([
      'foreign_key_to_old_table',
      'foreign_key_to_old_table',
    ]);
    const fixes = error.problems.map((p) => p.fix).join('\n');
    expect(fixes).toContain('posthog_persondistinctid" DROP CONSTRAINT');
    expect(fixes).toContain(`${f.schema}.posthog_cohortpeople DROP CONSTRAINT`);
    expect(error.message).toContain('posthog_cohortpeople');
    expect(await catalogSnapshot(handle, f.schema, f.controlSchema)).toEqual(before);
  });

  it('a view, a trigger, a rule and a publication are warnings with their fixes; a policy, row security and grants are given to the new table', async () => {
    const migration = await posthogSchema();
    await uniqueUuid();
    const role = `${f.schema}_svc`;
    f.roles.push(role);
    await sql`CREATE ROLE ${sql.id(role)}`.execute(handle.db);
    await sql`GRANT SELECT, INSERT ON ${t('posthog_person')} TO ${sql.id(role)}`.execute(handle.db);
    await sql`CREATE VIEW ${t('identified_persons')} AS SELECT id FROM ${t('posthog_person')} WHERE is_identified`.execute(
      handle.db,
    );
    await sql`CREATE FUNCTION ${t('audit')}() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'`.execute(
      handle.db,
    );
    await sql`CREATE TRIGGER person_audit AFTER UPDATE ON ${t('posthog_person')} FOR EACH ROW EXECUTE FUNCTION ${t('audit')}()`.execute(
      handle.db,
    );
    await sql`CREATE RULE no_truncate_like AS ON DELETE TO ${t('posthog_person')} WHERE false DO INSTEAD NOTHING`.execute(
      handle.db,
    );
    await sql`CREATE PUBLICATION ${sql.id(`${f.schema}_pub`)} FOR TABLE ${t('posthog_person')}`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${t('posthog_person')} ENABLE ROW LEVEL SECURITY`.execute(handle.db);
    await sql`CREATE POLICY own_team ON ${t('posthog_person')} FOR SELECT TO ${sql.id(role)} USING (team_id = 1)`.execute(
      handle.db,
    );

    const result = await migration.prepare();
    expect(checks(result.warnings)).toEqual([
      'publication_of_old_table',
      'rule_on_old_table',
      'trigger_on_old_table',
      'view_reads_old_table',
    ]);
    const publication = result.warnings.find((w) => w.check === 'publication_of_old_table');
    expect(publication?.fix).toContain('ADD TABLE "');
    const { rows: policies } = await sql<{ name: string; security: boolean }>`
      SELECT p.polname AS name, c.relrowsecurity AS security FROM pg_policy p
      JOIN pg_class c ON c.oid = p.polrelid
      WHERE p.polrelid = ${`"${f.schema}"."posthog_person_new"`}::regclass`.execute(handle.db);
    expect(policies).toEqual([{ name: 'own_team', security: true }]);
    const { rows: grants } = await sql<{ privilege: string }>`
      SELECT privilege_type AS privilege FROM information_schema.role_table_grants
      WHERE table_schema = ${f.schema} AND table_name = 'posthog_person_new' AND grantee = ${role}
      ORDER BY 1`.execute(handle.db);
    expect(grants.map((g) => g.privilege)).toEqual(['INSERT', 'SELECT']);
    expect(checks((await migration.status()).warnings)).toEqual(checks(result.warnings));
  });

  it('a new table created beforehand without the email index: a warning with a concurrent fix, and status() lists it until it exists', async () => {
    const migration = await posthogSchema();
    await uniqueUuid();
    await sql`CREATE TABLE ${t('posthog_person_new')} (LIKE ${t('posthog_person')} INCLUDING DEFAULTS)`.execute(
      handle.db,
    );
    await sql`ALTER TABLE ${t('posthog_person_new')} ADD PRIMARY KEY (team_id, id)`.execute(
      handle.db,
    );
    await sql`CREATE INDEX ON ${t('posthog_person_new')} (team_id) WHERE is_identified`.execute(
      handle.db,
    );
    await sql`CREATE UNIQUE INDEX ON ${t('posthog_person_new')} (team_id, uuid)`.execute(handle.db);
    await sql`CREATE UNIQUE INDEX ON ${t('posthog_person_new')} (id)`.execute(handle.db);
    const result = await migration.prepare();
    const missing = result.warnings.filter((w) => w.check === 'index_missing_in_new');
    expect(missing).toHaveLength(1);
    expect(missing[0]?.fix).toMatch(
      /^CREATE INDEX CONCURRENTLY .* USING btree \(\(\(properties ->> 'email'::text\)\)\);$/,
    );
    expect((await migration.status()).missingIndexes).toEqual(['posthog_person_email']);
    await sql`CREATE INDEX ON ${t('posthog_person_new')} ((properties ->> 'email'))`.execute(
      handle.db,
    );
    expect((await migration.status()).missingIndexes).toEqual([]);
  });

  it('a table other tables inherit from is refused: their rows would be read as persons', async () => {
    const migration = await posthogSchema();
    await uniqueUuid();
    await sql`CREATE TABLE ${t('archived_person')} () INHERITS (${t('posthog_person')})`.execute(
      handle.db,
    );
    const error = (await migration.prepare().catch((e: unknown) => e)) as PreflightError;
    expect(checks(error.problems)).toEqual(['old_table_has_children']);
    expect(error.message).toContain('archived_person');
  });
});

describeOnRealServer('pg-dual-read prepare --dry-run (real server)', () => {
  let handle: DatabaseHandle;
  const f = productionFixture(() => handle);

  beforeAll(async () => {
    handle = await openBackend('postgres');
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await f.cleanUp();
  });

  it('prints every finding and the DDL, changes nothing, and exits 1 when prepare would refuse', async () => {
    await f.posthogSchema();
    await f.seed(4);
    await sql`UPDATE ${f.t('posthog_person')} SET uuid = (SELECT min(uuid::text)::uuid FROM ${f.t('posthog_person')})`.execute(
      handle.db,
    );
    await sql`CREATE VIEW ${f.t('everyone')} AS SELECT id FROM ${f.t('posthog_person')}`.execute(
      handle.db,
    );
    const before = await catalogSnapshot(handle, f.schema, f.controlSchema);
    const out: string[] = [];
    const code = await runCli(
      ['prepare', '--dry-run', '--schema', f.schema, '--control-schema', f.controlSchema],
      {
        stdout: (l) => out.push(l),
        stderr: (l) => out.push(l),
        env: { DATABASE_URL: realServerUrl() ?? '' },
      },
    );
    const text = out.join('\n');
    expect(code).toBe(1);
    expect(text).toContain('nothing was changed');
    expect(text).toContain('problem [duplicate_keys_in_old]');
    expect(text).toContain('warning [view_reads_old_table]');
    expect(text).toContain('CREATE TABLE');
    expect(text).toContain("(properties ->> 'email'::text)");
    expect(text).toContain('prepare would refuse');
    expect(await catalogSnapshot(handle, f.schema, f.controlSchema)).toEqual(before);
  });
});

/**
 * prepare() on a persons table shaped the way production tables end up: an id default on a
 * sequence from an earlier swap, an index on `properties ->> 'email'`, a view and a trigger on
 * the old table, and two persons sharing a uuid (the table never had a unique (team_id, uuid)).
 * A dry run shows every finding and the DDL, changing nothing; the duplicate is fixed; the real
 * run creates the new table with every index of the old one.
 *
 *   npx tsx examples/prepare/main.ts                      # embedded PGlite
 *   DATABASE_URL=postgres://... npx tsx examples/prepare/main.ts
 */
import { sql } from 'kysely';
import { createPersonsMigration, openDatabase, type PreflightProblem } from '../../src/index.js';

const schema = process.env.DEMO_SCHEMA ?? 'dual_read_prepare_demo';
const controlSchema = `${schema}_control`;

async function main(): Promise<void> {
  const db = await openDatabase(process.env.DATABASE_URL);
  const t = (name: string) => sql.id(schema, name);
  try {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db.db);
    await sql`DROP SCHEMA IF EXISTS ${sql.id(controlSchema)} CASCADE`.execute(db.db);
    await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(db.db);
    // The shape years of migrations leave behind, in raw SQL.
    await sql`CREATE SEQUENCE ${t('person_ids_2019')}`.execute(db.db);
    await sql`CREATE TABLE ${t('posthog_person')} (
      id bigint PRIMARY KEY DEFAULT nextval(${sql.lit(`${schema}.person_ids_2019`)}::regclass),
      created_at timestamptz NOT NULL DEFAULT now(), properties jsonb NOT NULL DEFAULT '{}',
      properties_last_updated_at jsonb, properties_last_operation jsonb,
      team_id integer NOT NULL, is_user_id integer, is_identified boolean NOT NULL DEFAULT false,
      uuid uuid NOT NULL, version bigint)`.execute(db.db);
    await sql`CREATE INDEX posthog_person_team_id_id ON ${t('posthog_person')} (team_id, id)`.execute(
      db.db,
    );
    await sql`CREATE INDEX posthog_person_email ON ${t('posthog_person')} ((properties ->> 'email'))`.execute(
      db.db,
    );
    await sql`CREATE TABLE ${t('posthog_persondistinctid')} (id bigserial PRIMARY KEY,
      distinct_id varchar(400) NOT NULL, person_id bigint NOT NULL, team_id integer NOT NULL,
      version bigint, UNIQUE (team_id, distinct_id))`.execute(db.db);
    await sql`CREATE VIEW ${t('identified_persons')} AS
      SELECT id, team_id FROM ${t('posthog_person')} WHERE is_identified`.execute(db.db);
    await sql`INSERT INTO ${t('posthog_person')} (team_id, uuid, properties, version)
      SELECT 1, gen_random_uuid(), jsonb_build_object('email', 'p' || g || '@example.com'), 0
      FROM generate_series(1, 1000) AS g`.execute(db.db);
    // Two persons of team 1 that share a uuid.
    await sql`UPDATE ${t('posthog_person')} SET uuid = (SELECT uuid FROM ${t('posthog_person')} WHERE id = 1)
      WHERE id = 2`.execute(db.db);

    const migration = createPersonsMigration({ db, schema, controlSchema });
    await migration.install();
    const dry = await migration.prepare({ dryRun: true });
    console.log(
      `dry run: ${dry.problems.length} problem(s), ${dry.warnings.length} warning(s), nothing changed`,
    );
    show('problem', dry.problems);
    show('warning', dry.warnings);
    console.log(`DDL it would run (${dry.ddl.length} statements):`);
    for (const statement of dry.ddl) console.log(`  ${statement.replace(/\s+/g, ' ')};`);

    // The operator's fix: the second person gets a uuid of its own.
    await sql`UPDATE ${t('posthog_person')} SET uuid = gen_random_uuid() WHERE id = 2`.execute(
      db.db,
    );
    const result = await migration.prepare();
    console.log(
      `prepare(): new table ${result.createdNewTable ? 'created' : 'already there'}, ids from ${result.idSequence}, ${result.ddl.length} statements run`,
    );
    const status = await migration.status();
    console.log(
      `status(): indexes the new table lacks: ${status.missingIndexes.length === 0 ? 'none' : status.missingIndexes.join(', ')}`,
    );
    show('warning', status.warnings);
    await migration.close();
  } finally {
    await db.close();
  }
}

function show(kind: string, findings: readonly PreflightProblem[]): void {
  for (const f of findings) {
    console.log(`  ${kind} [${f.check}] ${f.message}`);
    if (f.fix) console.log(`    fix: ${f.fix}`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});

/**
 * Verification: prove the new table agrees with the old one, find every key that does not,
 * repair what can be repaired, and show the stored result any process can read.
 *
 *   npx tsx examples/verify/main.ts                      # embedded PGlite
 *   DATABASE_URL=postgres://... npx tsx examples/verify/main.ts
 */
import { sql } from 'kysely';
import { createPersonsMigration, openDatabase } from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';

const schema = process.env.DEMO_SCHEMA ?? 'dual_read_verify_demo';
const controlSchema = `${schema}_control`;
const persons = Number(process.env.DEMO_PERSONS ?? 10_000);

async function main(): Promise<void> {
  const db = await openDatabase(process.env.DATABASE_URL);
  const migration = createPersonsMigration({ db, schema, controlSchema });
  const newTable = sql.id(schema, 'posthog_person_new');
  try {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db.db);
    await sql`DROP SCHEMA IF EXISTS ${sql.id(controlSchema)} CASCADE`.execute(db.db);
    await createPostHogPersonsSchema(db, { schema });
    const ids = await seedPersons(db, { schema, teamId: 1, count: persons });
    await migration.install();
    await migration.prepare();
    await migration.startDualRead();
    await migration.backfill({ workers: 2 });

    const first = await migration.verify();
    console.log(
      `after the backfill: ${first.clean ? 'clean' : 'NOT clean'}, ${first.oldRows} old / ${first.newRows} new rows compared`,
    );

    // What a buggy script could do to the new table behind the library's back.
    const [lost, stale, edited, reordered] = ids;
    await sql`DELETE FROM ${newTable} WHERE id = ${lost}::bigint`.execute(db.db);
    await sql`UPDATE ${newTable} SET version = version - 1 WHERE id = ${stale}::bigint`.execute(
      db.db,
    );
    await sql`UPDATE ${newTable} SET properties = properties || '{"plan": "paid"}'
      WHERE id = ${edited}::bigint`.execute(db.db);
    // Same JSON, keys in another order: not a difference.
    await sql`UPDATE ${newTable} SET properties = (
        SELECT jsonb_object_agg(key, value) FROM (
          SELECT key, value FROM jsonb_each(properties) ORDER BY key DESC) AS e)
      WHERE id = ${reordered}::bigint`.execute(db.db);

    for (const method of ['join', 'checksum'] as const) {
      const found = await migration.verify({ method });
      console.log(
        `verify({ method: '${method}' }): ${found.clean ? 'clean' : 'NOT clean'}, ${found.mismatches} mismatched keys`,
      );
      for await (const key of migration.mismatches(found.id)) {
        console.log(`  ${key.class} team_id=${key.teamId} id=${key.personId}`);
      }
    }

    const repaired = await migration.verify({ repair: true });
    console.log(
      `verify({ repair: true }): copied ${repaired.repair?.copied}, updated ${repaired.repair?.updated}; ` +
        `left for a person to decide: ${repaired.mismatches} (${Object.keys(repaired.counts)
          .filter((c) => c === 'content_differs')
          .join(', ')})`,
    );

    const { verification } = await migration.status();
    console.log(
      `status().verification: #${verification?.id} ${verification?.status}, full=${verification?.full}, ` +
        `newer than the backfill=${verification?.newerThanBackfill}`,
    );
  } finally {
    await migration.close();
    await db.close();
  }
}

main().catch((err: unknown) => {
  const code = (err as { code?: unknown } | null)?.code;
  console.error(`error${typeof code === 'string' ? ` [${code}]` : ''}: ${(err as Error)?.message}`);
  process.exitCode = 1;
});

/**
 * A CI consistency test, as a service would keep one in its own repository: seed a persons
 * schema, prepare the migration, move to `dual_read`, run the service's OWN write code (here
 * `ingest.ts`) before and during the backfill, and end with `assertVerifiesClean`: if any write
 * path of the service leaves the new table disagreeing with the old one, CI fails, naming the
 * keys and their class, before the migration runs in production.
 *
 * This repository runs it in its suite (`npm test`) against the real server. In yours, import
 * from `pg-dual-read` and `pg-dual-read/testing`, and open `process.env.DATABASE_URL` with a
 * plain `describe`; keep it failing, not skipping, when CI has no database.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonsMigration,
} from '../../src/index.js';
import {
  assertVerifiesClean,
  createPostHogPersonsSchema,
  seedPersons,
  VerificationAssertionError,
} from '../../src/testing/index.js';
import {
  describeOnRealServer,
  dropSchemas,
  realServerUrl,
  uniqueSchemaName,
} from '../../test/support/test-database.js';
import { type IngestOutcome, ingest, type PersonEvent } from './ingest.js';

/**
 * Every kind of write the service makes, on seeded persons (still only in the old table) and
 * on persons it creates: `seed-<n>` are the seeded distinct ids, `new-<n>` the created ones.
 */
function eventsFor(teamId: number, from: number, to: number): PersonEvent[] {
  const events: PersonEvent[] = [];
  for (let n = from; n < to; n += 5) {
    events.push(
      { kind: 'set', teamId, distinctId: `seed-${n}`, properties: { plan: 'paid' } },
      { kind: 'set', teamId, distinctId: `new-${n}`, properties: { source: 'ci' } },
      { kind: 'alias', teamId, distinctId: `seed-${n + 1}`, alias: `device-${n}` },
      { kind: 'merge', teamId, source: `seed-${n + 2}`, target: `seed-${n + 3}` },
      { kind: 'merge', teamId, source: `new-${n}`, target: `seed-${n}` },
      { kind: 'delete', teamId, distinctId: `seed-${n + 4}` },
    );
  }
  return events;
}

async function ingestAll(
  migration: PersonsMigration,
  events: readonly PersonEvent[],
): Promise<IngestOutcome[]> {
  const outcomes: IngestOutcome[] = [];
  for (const event of events) outcomes.push(await ingest(migration.repository(), event));
  return outcomes;
}

describeOnRealServer('persons stay consistent while our ingestion code writes in dual_read', () => {
  const schema = uniqueSchemaName('ci_persons');
  const controlSchema = `${schema}_control`;
  let db: DatabaseHandle;
  let migration: PersonsMigration;

  beforeAll(async () => {
    db = await openDatabase(realServerUrl() ?? '', { maxConnections: 6 });
    await createPostHogPersonsSchema(db, { schema });
    await seedPersons(db, { schema, teamId: 1, count: 2_000 });
    await seedPersons(db, { schema, teamId: 2, count: 1_000 });
    migration = createPersonsMigration({ db, schema, controlSchema });
    await migration.install();
    await migration.prepare();
    await migration.startDualRead();
  });

  afterAll(async () => {
    await migration?.close();
    if (db) {
      await dropSchemas(db, schema, controlSchema);
      await db.close();
    }
  });

  it('our creates, updates, aliases, merges and deletes, before and during the backfill, leave the tables agreeing', async () => {
    const before = await ingestAll(migration, eventsFor(1, 1, 100));
    // The backfill and the service's writes at the same time, as in production.
    const [backfill, during] = await Promise.all([
      migration.backfill({ workers: 2, batchSize: 100, targetBatchMs: 0 }),
      ingestAll(migration, [...eventsFor(1, 1_000, 1_150), ...eventsFor(2, 1, 100)]),
    ]);
    expect(backfill.finished).toBe(true);

    // The service's own outcome first: every event did what it is meant to.
    expect([...before, ...during]).not.toContain('ignored');
    const persons = migration.repository();
    const merged = await persons.fetchPerson(1, 'seed-3');
    expect(merged?.id).toBe((await persons.fetchPerson(1, 'seed-4'))?.id);
    expect((await persons.fetchPerson(1, 'new-1'))?.id).toBe(
      (await persons.fetchPerson(1, 'seed-1'))?.id,
    );
    expect((await persons.fetchPerson(1, 'device-1'))?.id).toBe(
      (await persons.fetchPerson(1, 'seed-2'))?.id,
    );
    expect(await persons.fetchPerson(1, 'seed-5')).toBeUndefined();
    expect((await persons.fetchPerson(2, 'seed-1'))?.properties).toMatchObject({
      plan: 'paid',
      source: 'ci',
    });

    // Then the migration's invariant: throws, naming the keys, when any write path broke it.
    const result = await assertVerifiesClean(migration);
    expect(result.counts.newer_in_new).toBeGreaterThan(0);
    expect(result.counts.created_in_new ?? 0).toBe(0); // every created person was merged away
  });

  it('catches a write path that bypasses the repository and writes the old table directly', async () => {
    const person = await migration.repository().fetchPerson(2, 'seed-500');
    if (!person) throw new Error('seed-500 of team 2 is missing');
    await sql`UPDATE ${sql.id(schema, 'posthog_person')} SET version = version + 1
      WHERE team_id = 2 AND id = ${person.id}::bigint`.execute(db.db);

    const failure = await assertVerifiesClean(migration).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(VerificationAssertionError);
    expect((failure as VerificationAssertionError).message).toContain(
      `older_in_new team_id=2 id=${person.id}`,
    );
  });
});

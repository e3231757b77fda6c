/**
 * Quick start: what `npm start` runs.
 *
 * Creates a PostHog-like persons schema, seeds it, installs and prepares a migration (showing
 * the preflight guard on the way), then walks through phase `old` and phase `dual_read`,
 * printing where each read and write landed with counts taken straight from each table, then
 * the backfill, verification, cutover, a rollback, the cutover again and the consolidation
 * onto one table under the old name.
 *
 * Runs on an embedded PGlite when `DATABASE_URL` is unset, and on that server when it is set
 * (it drops and recreates its own two schemas, so it can run again).
 *
 *   npm start
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm start
 *
 * Only ids, versions and counts are printed: persons are personal data, even in a demo.
 */
import { sql } from 'kysely';
import {
  createPersonsMigration,
  type DatabaseHandle,
  DualReadError,
  openDatabase,
  type PersonsMigration,
  type PersonsRepository,
  PhaseTransitionError,
  PreflightError,
} from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';

// Not `pg_...`: PostgreSQL reserves that prefix for system schemas (PGlite does not check).
// DEMO_SCHEMA lets the test suite run the demo without touching a schema you are looking at.
const schema = process.env.DEMO_SCHEMA ?? 'dual_read_demo';
const controlSchema = `${schema}_control`;
const teams = [
  { teamId: 1, count: 2_500 },
  { teamId: 2, count: 1_500 },
  { teamId: 3, count: 1_000 },
] as const;
const team = 1; // the team every step below works on

const started = performance.now();

/** Runs one step and returns its result with how long it took, e.g. `12 ms`. */
async function timed<T>(fn: () => Promise<T>): Promise<[T, string]> {
  const t0 = performance.now();
  const result = await fn();
  return [result, `${Math.round(performance.now() - t0)} ms`];
}

function say(line = ''): void {
  console.log(line);
}

/**
 * Where one person is, counted in SQL on each table (not through the repository):
 * `[old: 1 row v0, new: 0]`.
 */
async function whereIs(db: DatabaseHandle, personId: string): Promise<string> {
  const parts: string[] = [];
  for (const [label, table] of [
    ['old', 'posthog_person'],
    ['new', 'posthog_person_new'],
  ] as const) {
    const { rows } = await sql<{ n: number; version: string | null }>`
      SELECT count(*)::int AS n, max(version)::text AS version FROM ${sql.id(schema, table)}
      WHERE team_id = ${team} AND id = ${personId}::bigint`.execute(db.db);
    const row = rows[0];
    parts.push(`${label}: ${row?.n ? `${row.n} row v${row.version}` : '0'}`);
  }
  return `[${parts.join(', ')}]`;
}

/** `count(*)` of the whole old and new tables. */
async function tableCounts(db: DatabaseHandle): Promise<{ old: number; new: number }> {
  const { rows } = await sql<{ old: number; new: number }>`
    SELECT (SELECT count(*)::int FROM ${sql.id(schema, 'posthog_person')}) AS old,
      (SELECT count(*)::int FROM ${sql.id(schema, 'posthog_person_new')}) AS new`.execute(db.db);
  return rows[0] ?? { old: 0, new: 0 };
}

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  const [db, openTime] = await timed(() => openDatabase(url));
  const where = db.backend === 'pglite' ? 'embedded PGlite (in memory)' : 'PostgreSQL server';
  say(`pg-dual-read quick start on ${where} (${openTime})`);

  // ----------------------------------------------------------------- setup
  const total = teams.reduce((n, t) => n + t.count, 0);
  const [, seedTime] = await timed(async () => {
    for (const s of [schema, controlSchema]) {
      await sql`DROP SCHEMA IF EXISTS ${sql.id(s)} CASCADE`.execute(db.db);
    }
    await createPostHogPersonsSchema(db, { schema, withForeignKey: true });
    for (const t of teams) await seedPersons(db, { schema, teamId: t.teamId, count: t.count });
  });
  say(
    `seeded ${total} persons in ${teams.length} teams into ${schema}.posthog_person (${seedTime})`,
  );

  const migration = createPersonsMigration({ db, schema, controlSchema });
  try {
    const [installed, installTime] = await timed(() => migration.install());
    say(`install(): control schema ${controlSchema} at v${installed.toVersion} (${installTime})`);

    // -------------------------------------------------------------- prepare, guarded
    say();
    say('prepare({ partitions: 4 }):');
    const [firstTry, failTime] = await timed(() =>
      migration.prepare({ partitions: 4 }).then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    if (!(firstTry instanceof PreflightError)) throw new Error('expected the foreign key guard');
    for (const problem of firstTry.problems) {
      say(`  refused [${problem.check}]: changed nothing (${failTime})`);
      say(`  fix: ${problem.fix ?? '(none given)'}`);
      // The fix is an SQL statement meant to be run as printed; run it.
      if (problem.check === 'foreign_key_to_old_table' && problem.fix) {
        await sql.raw(problem.fix).execute(db.db);
      }
    }
    const [prepared, prepareTime] = await timed(() => migration.prepare({ partitions: 4 }));
    say(
      `  after the fix: created posthog_person_new with ${prepared.partitions} hash partitions, ` +
        `ids from ${prepared.idSequence} (${prepareTime})`,
    );

    const repo = migration.repository();
    const atStart = await tableCounts(db);

    // -------------------------------------------------------------- phase old
    say();
    say(
      `phase old: reads and writes use the old table only [old: ${atStart.old}, new: ${atStart.new}]`,
    );
    const [p1, readOldTime] = await timed(() => repo.fetchPerson(team, 'seed-1'));
    if (!p1) throw new Error('seed-1 not found');
    say(
      `  fetchPerson(seed-1) -> person ${p1.id} v${p1.version} ${await whereIs(db, p1.id)} (${readOldTime})`,
    );

    // -------------------------------------------------------------- phase dual_read
    const [dual, dualTime] = await timed(() => migration.startDualRead());
    say();
    say(`startDualRead(): phase ${dual.phase}, epoch ${dual.epoch} (${dualTime})`);
    say('  reads: a row in the new table wins, else the old row; writes: new table only');

    const [a, readTime] = await timed(() => repo.fetchPerson(team, 'seed-2'));
    if (!a) throw new Error('seed-2 not found');
    say(
      `  read seed-2 -> person ${a.id} v${a.version}, answered from old ${await whereIs(db, a.id)} (${readTime})`,
    );

    const [updated, updateTime] = await timed(() =>
      repo.updatePerson(team, a.id, { properties: { plan: 'paid' } }),
    );
    say(
      `  update person ${a.id} -> v${updated?.version}, copied then updated in new ` +
        `${await whereIs(db, a.id)} (${updateTime})`,
    );

    const [created, createTime] = await timed(() =>
      repo.createPerson({ teamId: team, distinctIds: ['demo-new-1'] }),
    );
    if (created.status !== 'created') throw new Error('createPerson conflicted');
    const fresh = created.person;
    say(
      `  createPerson(demo-new-1) -> person ${fresh.id} from the shared id sequence ` +
        `${await whereIs(db, fresh.id)} (${createTime})`,
    );

    const before = await tableCounts(db);
    const [conflict, conflictTime] = await timed(() =>
      repo.createPerson({ teamId: team, distinctIds: ['seed-3'] }),
    );
    const after = await tableCounts(db);
    say(
      `  createPerson(seed-3) -> ${conflict.status} on [${conflict.distinctIds.join(', ')}], nothing ` +
        `written [old: ${before.old} -> ${after.old}, new: ${before.new} -> ${after.new}] (${conflictTime})`,
    );

    const [batch, batchTime] = await timed(() =>
      repo.fetchPersonsByDistinctIds(
        ['seed-4', 'seed-2', 'demo-new-1', 'no-such-id'].map((distinctId) => ({
          teamId: team,
          distinctId,
        })),
      ),
    );
    say(`  batch read of 4 distinct ids -> ${batch.length} rows, one statement (${batchTime})`);
    for (const row of batch) {
      say(
        `    ${row.distinct_id} -> person ${row.id} v${row.version} ${await whereIs(db, row.id)}`,
      );
    }

    const [count, countTime] = await timed(() => repo.countPersons(team));
    const { rows: sum } = await sql<{ n: number }>`SELECT
        (SELECT count(*)::int FROM ${sql.id(schema, 'posthog_person')} WHERE team_id = ${team})
      + (SELECT count(*)::int FROM ${sql.id(schema, 'posthog_person_new')} WHERE team_id = ${team}) AS n`.execute(
      db.db,
    );
    say(
      `  countPersons(team ${team}) = ${count}, exact (old + new would say ${sum[0]?.n}: ` +
        `person ${a.id} is in both) (${countTime})`,
    );

    const [deleted, deleteTime] = await timed(() => repo.deletePerson(team, a.id));
    const gone = await repo.fetchPerson(team, 'seed-2');
    say(
      `  deletePerson(${a.id}) -> ${deleted}, gone from both ${await whereIs(db, a.id)}; ` +
        `read seed-2 -> ${gone ? `person ${gone.id}` : 'nothing'} (${deleteTime})`,
    );

    const source = await repo.fetchPerson(team, 'seed-5');
    const target = await repo.fetchPerson(team, 'seed-6');
    if (!source || !target) throw new Error('seed-5 or seed-6 not found');
    const [moved, mergeTime] = await timed(() =>
      repo.inTransaction(async (tx) => {
        const result = await tx.moveDistinctIds(team, source.id, target.id);
        await tx.deletePerson(team, source.id);
        return result;
      }),
    );
    const merged = await repo.fetchPerson(team, 'seed-5');
    const movedCount = moved.status === 'moved' ? moved.distinctIds.length : 0;
    say(
      `  merge person ${source.id} into ${target.id} (moveDistinctIds + deletePerson, one ` +
        `transaction): ${movedCount} distinct id moved, seed-5 -> person ${merged?.id} (${mergeTime})`,
    );
    say(
      `    source ${source.id} ${await whereIs(db, source.id)}, target ${target.id} ${await whereIs(db, target.id)}`,
    );

    const [again, againTime] = await timed(() =>
      migration.startDualRead().then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    if (!(again instanceof PhaseTransitionError))
      throw new Error('expected a PhaseTransitionError');
    const status = await migration.status();
    say(
      `  startDualRead() again -> ${again.name} [${again.code}]: already in ${again.from}; ` +
        `still ${status.phase}, epoch ${status.epoch} (${againTime})`,
    );

    // -------------------------------------------------------------- backfill
    say();
    const beforeBackfill = await tableCounts(db);
    say(
      `backfill(): copy the old rows the new table lacks [old: ${beforeBackfill.old}, new: ${beforeBackfill.new}]`,
    );
    let batches = 0;
    const countBatch = () => {
      batches += 1;
    };
    migration.events.on('backfill:batch', countBatch);
    const [backfilled, backfillTime] = await timed(() =>
      migration.backfill({ workers: 2, batchSize: 500 }),
    );
    migration.events.off('backfill:batch', countBatch);
    const progress = await migration.backfillStatus();
    say(
      `  ${backfilled.rowsCopied} rows copied in ${batches} batches over ${progress?.ranges.length ?? 0} ranges, ` +
        `each batch and its checkpoint in one transaction (${backfillTime})`,
    );
    say(
      `  rows already in new (copy-on-write) kept their newer version; deleted persons stayed deleted; ` +
        `status: ${progress?.state}, ${progress?.percent.toFixed(0)}%, ${progress?.rowsToGo} to go`,
    );

    // -------------------------------------------------------------- verify
    say();
    const [verified, verifyTime] = await timed(() => migration.verify());
    say(
      `verify(): ${verified.clean ? 'clean' : 'NOT clean'}, ${verified.oldRows} old rows and ` +
        `${verified.newRows} new rows compared in Postgres, ${verified.mismatches} mismatched keys ` +
        `(${verified.counts.newer_in_new ?? 0} updated in new, ${verified.counts.created_in_new ?? 0} created in new) (${verifyTime})`,
    );

    // -------------------------------------------------------------- cutover, rollback, finalize
    say();
    const beforeCutover = await tableCounts(db);
    await cutoverRollbackFinalize(db, migration, repo);

    // -------------------------------------------------------------- summary
    const perTeam = await Promise.all(teams.map((t) => repo.countPersons(t.teamId)));
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.id(schema, 'posthog_person')}`.execute(db.db);
    say();
    say(
      `tables before the cutover: old ${beforeCutover.old} rows, new ${beforeCutover.new} rows; ` +
        `now one table, ${schema}.posthog_person, ${rows[0]?.n} rows; persons per team: ${perTeam.join(' / ')}`,
    );
    say(`done in ${Math.round(performance.now() - started)} ms`);
    if (db.backend === 'postgres') {
      say(`schemas ${schema} and ${controlSchema} are left to look at; the next run drops them`);
    }
  } finally {
    await migration.close();
    await db.close();
  }
}

/**
 * The end of the lifecycle: cutover (every guard met), a write in `new`, a rollback that keeps
 * it, the cutover again, and finalize (the new table takes the old table's name), then the
 * retired table dropped.
 */
async function cutoverRollbackFinalize(
  db: DatabaseHandle,
  migration: PersonsMigration,
  repo: PersonsRepository,
): Promise<void> {
  const ready = (await migration.status()).cutoverGuards;
  say(
    `cutover guards unmet: ${ready.length === 0 ? 'none' : ready.map((g) => g.guard).join(', ')}`,
  );
  const [cut, cutTime] = await timed(() => migration.cutover({ actor: 'quickstart' }));
  say(`cutover(): dual_read -> ${cut.phase}, reads and writes use the new table only (${cutTime})`);
  const person = await repo.fetchPerson(team, 'seed-10');
  if (!person) throw new Error('seed-10 is missing');
  await repo.updatePerson(team, person.id, { properties: { plan: 'updated in new' } });
  say(`  updated person ${person.id} in new ${await whereIs(db, person.id)}`);
  const [back, backTime] = await timed(() => migration.rollback({ actor: 'quickstart' }));
  const after = await repo.fetchPerson(team, 'seed-10');
  say(
    `rollback(): new -> ${back.phase}; the update made in new is still read: version ${after?.version} (${backTime})`,
  );
  await migration.cutover({ actor: 'quickstart' });
  const [finalized, finalizeTime] = await timed(() => migration.finalize({ actor: 'quickstart' }));
  say(
    `finalize(): new -> ${finalized.phase}; ${schema}.posthog_person is now the consolidated table, ` +
      `the old one is kept as ${schema}.${finalized.retiredTable} (${finalizeTime})`,
  );
  const { dropped } = await migration.dropRetiredTable({ confirm: finalized.retiredTable });
  say(`dropRetiredTable(): dropped ${dropped}; new persons still get ids from the same sequence`);
  const created = await repo.createPerson({ teamId: team, distinctIds: ['after-finalize'] });
  say(
    `  createPerson after finalize: ${created.status === 'created' ? `id ${created.person.id}` : created.status}`,
  );
}

main().catch((err: unknown) => {
  // Only the code and message: a driver error's other fields (`detail`) can hold row values.
  if (err instanceof DualReadError) console.error(`error [${err.code}]: ${err.message}`);
  else {
    const code = (err as { code?: unknown } | null)?.code;
    console.error(
      `error${typeof code === 'string' ? ` [${code}]` : ''}: ${(err as Error)?.message ?? String(err)}`,
    );
  }
  process.exitCode = 1;
});

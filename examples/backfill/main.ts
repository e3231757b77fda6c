/**
 * The backfill: start it, stop it halfway (as a crash or a deploy would), resume it, and watch
 * its progress and ETA from a second connection, as an operator's terminal would.
 *
 *   npx tsx examples/backfill/main.ts                      # embedded PGlite
 *   DATABASE_URL=postgres://... npx tsx examples/backfill/main.ts
 *
 * On a server, the watcher is a separate connection; on PGlite it shares the one session.
 */
import { sql } from 'kysely';
import { createPersonsMigration, type DatabaseHandle, openDatabase } from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';

const schema = process.env.DEMO_SCHEMA ?? 'dual_read_backfill_demo';
const controlSchema = `${schema}_control`;
const persons = Number(process.env.DEMO_PERSONS ?? 20_000);

async function oldAndNew(db: DatabaseHandle): Promise<string> {
  const { rows } = await sql<{ old: number; new: number }>`
    SELECT (SELECT count(*)::int FROM ${sql.id(schema, 'posthog_person')}) AS old,
           (SELECT count(*)::int FROM ${sql.id(schema, 'posthog_person_new')}) AS new`.execute(
    db.db,
  );
  return `[old: ${rows[0]?.old}, new: ${rows[0]?.new}]`;
}

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  const db = await openDatabase(url);
  const watcherDb = url ? await openDatabase(url, { maxConnections: 1 }) : db;
  const migration = createPersonsMigration({ db, schema, controlSchema });
  const watcher = createPersonsMigration({ db: watcherDb, schema, controlSchema });
  try {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db.db);
    await sql`DROP SCHEMA IF EXISTS ${sql.id(controlSchema)} CASCADE`.execute(db.db);
    await createPostHogPersonsSchema(db, { schema });
    for (const teamId of [1, 2, 3]) {
      // Team 1 holds half of the persons: the plan cuts it like any other hot range.
      const count = teamId === 1 ? persons / 2 : persons / 4;
      await seedPersons(db, { schema, teamId, count, prefix: `t${teamId}`, propertiesBytes: 300 });
    }
    await migration.install();
    await migration.prepare({ partitions: 4 });
    await migration.startDualRead();
    console.log(`${persons} persons in the old table, phase dual_read ${await oldAndNew(db)}`);

    // 1. Start, and stop halfway: the signal stops each worker after its current batch.
    const controller = new AbortController();
    migration.events.on('backfill:batch', () => {
      void watcher.backfillStatus().then((progress) => {
        if (progress && progress.percent >= 50) controller.abort();
      });
    });
    const first = await migration.backfill({
      workers: 2,
      batchSize: 250,
      maxRowsPerSecond: 40_000,
      signal: controller.signal,
    });
    const halfway = await watcher.backfillStatus();
    console.log(
      `stopped: aborted=${first.aborted}, ${first.rowsCopied} rows copied in ${first.batches} batches; ` +
        `${halfway?.percent.toFixed(0)}% done, ${halfway?.rowsToGo} to go ${await oldAndNew(db)}`,
    );
    console.log(
      `  ranges: ${halfway?.ranges.map((r) => `#${r.rangeId} ${r.status} ${r.rowsScanned}/${r.rowsEstimated}`).join(', ')}`,
    );

    // 2. Resume (any host could): the plan and each range's checkpoint are in the database.
    // One status() at a time, and the last one awaited before the databases close.
    let polling: Promise<void> | undefined;
    const ticker = setInterval(() => {
      polling ??= watcher
        .status()
        .then(({ backfill }) => {
          if (!backfill || backfill.state === 'done') return;
          const eta =
            backfill.etaSeconds === undefined ? '?' : `${backfill.etaSeconds.toFixed(1)} s`;
          console.log(
            `  watcher: ${backfill.percent.toFixed(0)}%, ${Math.round(backfill.ratePerSecond)} rows/s, ETA ${eta}, ${backfill.activeWorkers} workers`,
          );
        })
        .finally(() => {
          polling = undefined;
        });
    }, 200);
    const second = await migration.backfill({ workers: 2, maxRowsPerSecond: 10_000 });
    clearInterval(ticker);
    await polling;
    const done = await watcher.backfillStatus();
    console.log(
      `resumed and finished: ${second.rowsCopied} more rows; ${done?.state}, ${done?.rowsScanned} rows read in all, ` +
        `none twice ${await oldAndNew(db)}`,
    );
  } finally {
    await watcher.close();
    await migration.close();
    if (watcherDb !== db) await watcherDb.close();
    await db.close();
  }
}

main().catch((err: unknown) => {
  const code = (err as { code?: unknown } | null)?.code;
  console.error(`error${typeof code === 'string' ? ` [${code}]` : ''}: ${(err as Error)?.message}`);
  process.exitCode = 1;
});

/**
 * An ingestion service during the migration, with its metrics on Prometheus.
 *
 * The service (ingestion-service.ts) reads and writes persons through `PersonsRepository`; here
 * it is handed the migration's `repository()`. The OpenTelemetry SDK is installed globally
 * before the migration is created, so the library's metrics (`pg_dual_read_*`, see the
 * README's "Metrics (OpenTelemetry)") are served on `/metrics` next to the service's own.
 * Then a small migration runs while events keep coming: phase `old`, `startDualRead()`, the
 * backfill (with ingestion going on), `verify()`, and ingestion reading from the new table.
 *
 *   DATABASE_URL=postgres://... METRICS_PORT=9464 npx tsx examples/ingestion-service/main.ts
 *   curl -s localhost:9464/metrics | grep pg_dual_read
 *
 * Environment: `DATABASE_URL` (unset: embedded PGlite), `DEMO_SCHEMA` (its persons schema; the
 * control schema is `<DEMO_SCHEMA>_control`, both dropped and recreated), `DEMO_PERSONS`
 * (default 3000), `METRICS_PORT` (default 9464; 0: any free port, printed), `EXIT_AFTER_WORK=1`
 * (after the work, exit once `/metrics` has been scraped, or after 60 s; otherwise it serves
 * until Ctrl-C).
 *
 * Only counts are printed: persons are personal data, even in a demo.
 */
import { sql } from 'kysely';
import { createPersonsMigration, type DatabaseHandle, openDatabase } from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { type IngestedEvent, IngestionService } from './ingestion-service.js';
import { startTelemetry } from './telemetry.js';

const schema = process.env.DEMO_SCHEMA ?? 'dual_read_ingestion_demo';
const controlSchema = `${schema}_control`;
const persons = Number(process.env.DEMO_PERSONS ?? 3_000);
const metricsPort = Number(process.env.METRICS_PORT ?? 9464);
const exitAfterWork = process.env.EXIT_AFTER_WORK === '1';
const teams = [1, 2, 3];
const perTeam = Math.max(1, Math.floor(persons / teams.length));

/** Events of `count` users, a third of them never seen before (`prefix`), in batches of 50. */
function* eventBatches(count: number, prefix: string): Generator<IngestedEvent[]> {
  let batch: IngestedEvent[] = [];
  for (let n = 1; n <= count; n++) {
    const teamId = teams[n % teams.length] ?? 1;
    const seen = n % 3 !== 0;
    // Seeded distinct ids are `t<team>-<n>`, n from 1 to perTeam.
    const distinctId = seen ? `t${teamId}-${1 + ((n * 7) % perTeam)}` : `${prefix}-${n}`;
    batch.push({ teamId, distinctId, properties: { last_event: 'pageview', events_seen: n } });
    if (batch.length === 50) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

async function ingest(service: IngestionService, count: number, prefix: string) {
  const total = { created: 0, updated: 0, raced: 0 };
  for (const batch of eventBatches(count, prefix)) {
    const outcome = await service.ingest(batch);
    total.created += outcome.created;
    total.updated += outcome.updated;
    total.raced += outcome.raced;
  }
  return `${total.created} created, ${total.updated} updated`;
}

async function setUp(db: DatabaseHandle): Promise<void> {
  await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db.db);
  await sql`DROP SCHEMA IF EXISTS ${sql.id(controlSchema)} CASCADE`.execute(db.db);
  await createPostHogPersonsSchema(db, { schema });
  for (const teamId of teams) {
    await seedPersons(db, { schema, teamId, count: perTeam, prefix: `t${teamId}` });
  }
}

async function main(): Promise<void> {
  // First the SDK, then the migration: the library takes the global MeterProvider when it is
  // created (or pass `meterProvider` to createPersonsMigration()).
  const telemetry = await startTelemetry(metricsPort);
  console.log(`metrics on http://127.0.0.1:${telemetry.port}/metrics`);
  const db = await openDatabase(process.env.DATABASE_URL);
  const migration = createPersonsMigration({
    db,
    schema,
    controlSchema,
    name: 'persons',
    serviceName: 'ingestion-demo',
    // Every read is compared in this demo; a fraction of a percent is enough in production.
    shadowReads: { sampleRate: 1, timeoutMs: 1_000 },
  });
  try {
    await setUp(db);
    await migration.install();
    await migration.prepare({ partitions: 4 });
    // The swap: the service gets the migration's repository instead of its own.
    const service = new IngestionService(migration.repository());

    console.log(`phase old: ${await ingest(service, 300, 'old')}`);
    await migration.startDualRead();
    console.log(`phase dual_read, before the backfill: ${await ingest(service, 300, 'early')}`);
    const [backfill, during] = await Promise.all([
      migration.backfill({ workers: 2, batchSize: 200 }),
      ingest(service, 300, 'during'),
    ]);
    console.log(
      `backfill: ${backfill.rowsCopied} rows copied in ${backfill.batches} batches; ingestion meanwhile: ${during}`,
    );
    const verification = await migration.verify();
    console.log(
      `verify(): ${verification.clean ? 'clean' : 'NOT clean'}, ${verification.mismatches} mismatched keys`,
    );
    migration.repository().resetReadStats();
    console.log(`after the backfill: ${await ingest(service, 300, 'late')}`);
    const { fallbackRate, totals } = migration.repository().readStats();
    console.log(
      `reads after the backfill: ${totals.rows} persons, fallback rate ${fallbackRate} (0: ready for cutover)`,
    );
    console.log('work done');
    await (exitAfterWork
      ? Promise.race([
          telemetry.nextScrape(),
          new Promise((resolve) => setTimeout(resolve, 60_000).unref()),
        ])
      : new Promise((resolve) => process.once('SIGINT', resolve).once('SIGTERM', resolve)));
  } finally {
    await migration.close();
    await db.close();
    await telemetry.close();
  }
}

main().catch((err: unknown) => {
  const code = (err as { code?: unknown } | null)?.code;
  console.error(`error${typeof code === 'string' ? ` [${code}]` : ''}: ${(err as Error)?.message}`);
  process.exitCode = 1;
});

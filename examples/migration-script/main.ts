/**
 * A migration script an operator runs to drive the whole lifecycle from code, instead of typing
 * the CLI's commands one by one: install, prepare (if needed), start dual_read, backfill (with
 * progress lines), verify (stops here when the tables disagree), cutover and, only when
 * `FINALIZE=1`, finalize.
 *
 *   DATABASE_URL=postgres://... PERSONS_SCHEMA=public npx tsx examples/migration-script/main.ts
 *   DATABASE_URL=postgres://... SEED_PERSONS=20000 PERSONS_SCHEMA=demo npx tsx examples/migration-script/main.ts
 *
 * Kill-safe: the first SIGINT or SIGTERM stops the backfill after each worker's current batch
 * (or the verification between two chunks, or the script between two steps), closes the pool
 * and exits 130 or 143 saying how to resume; a second signal ends the process at once (still
 * safe: each batch commits with its checkpoint). Running it again resumes where it stopped:
 * every step reads the phase first and skips what is done, and the backfill goes on from its
 * checkpoints.
 *
 * Output: one JSON object per line (`time`, `level`, `step`, `event` and figures), for a log
 * pipeline. Never a row value: counts, phases, key classes, guard names.
 *
 * Environment:
 * - `DATABASE_URL` (required): `postgres://...`, or `pglite:///abs/dir` for an embedded one.
 *   Never printed (it may hold a password).
 * - `PERSONS_SCHEMA` (default `public`), `CONTROL_SCHEMA` (default `dual_read`),
 *   `MIGRATION_NAME` (default `persons`): where the tables and the control tables are.
 * - `SEED_PERSONS=N`: for a demo, create a PostHog-like persons schema with N persons in
 *   `PERSONS_SCHEMA` first, unless its persons table exists.
 * - `PARTITIONS=N`: hash-partition the new table by team (prepare).
 * - `BACKFILL_WORKERS` (default 2); `MAX_ROWS_PER_SECOND=N|none`: the ceiling of a new plan,
 *   or a new ceiling for a resumed one (`none` lifts it).
 * - `PROGRESS_INTERVAL_MS` (default 2000): how often the backfill logs its progress.
 * - `FINALIZE=1`: also finalize after the cutover (the new table takes the old one's name).
 * - `ACTOR` (default `migration-script@<host>`): recorded in the phase history.
 *
 * Exit status: 0 done, 1 a step failed or refused (the last line says why), 2 a bad
 * environment variable, 130/143 stopped by SIGINT/SIGTERM (run it again to resume).
 */
import { hostname } from 'node:os';
import { sql } from 'kysely';
import {
  createPersonsMigration,
  type DatabaseHandle,
  type DualReadEvents,
  mismatchClasses,
  NotInstalledError,
  openDatabase,
  type PersonsMigration,
  type Phase,
  TransitionRefusedError,
} from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';

// ------------------------------------------------------------------ logging

type Level = 'info' | 'warn' | 'error';

/** One JSON line on stdout. Callers pass counts, names and phases only: never row values. */
function log(step: string, event: string, fields: Record<string, unknown> = {}, level?: Level) {
  const line = { time: new Date().toISOString(), level: level ?? 'info', step, event, ...fields };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// ------------------------------------------------------------------ configuration

interface Config {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  readonly name: string;
  readonly seedPersons: number | undefined;
  readonly partitions: number | undefined;
  readonly workers: number;
  /** `null`: lift the ceiling of a resumed plan; undefined: leave it as planned. */
  readonly maxRowsPerSecond: number | null | undefined;
  readonly progressIntervalMs: number;
  readonly finalize: boolean;
  readonly actor: string;
}

/** A bad environment variable: exit 2 before anything connects. */
class UsageError extends Error {}

function integerVariable(name: string): number | undefined {
  const value = process.env[name];
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`${name} must be a whole number`);
  return Number(value);
}

function readConfig(): Config {
  const url = process.env.DATABASE_URL;
  if (!url) throw new UsageError('DATABASE_URL is required (postgres://... or pglite:///dir)');
  const rate = process.env.MAX_ROWS_PER_SECOND;
  return {
    url,
    schema: process.env.PERSONS_SCHEMA || 'public',
    controlSchema: process.env.CONTROL_SCHEMA || 'dual_read',
    name: process.env.MIGRATION_NAME || 'persons',
    seedPersons: integerVariable('SEED_PERSONS'),
    partitions: integerVariable('PARTITIONS'),
    workers: integerVariable('BACKFILL_WORKERS') ?? 2,
    maxRowsPerSecond: rate === 'none' ? null : integerVariable('MAX_ROWS_PER_SECOND'),
    progressIntervalMs: integerVariable('PROGRESS_INTERVAL_MS') ?? 2_000,
    finalize: process.env.FINALIZE === '1',
    actor: process.env.ACTOR || `migration-script@${hostname()}`,
  };
}

// ------------------------------------------------------------------ stopping

const stopExitCodes = { SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof stopExitCodes;

/** The first SIGINT/SIGTERM aborts `controller`; after it the signals have their default effect. */
class Stop {
  readonly controller = new AbortController();
  by: StopSignal | undefined;

  constructor() {
    const listeners = (Object.keys(stopExitCodes) as StopSignal[]).map((signal) => {
      const listener = () => {
        for (const [name, other] of listeners) process.off(name, other);
        this.by = signal;
        log('shutdown', 'signal', {
          signal,
          action: 'stopping after the current batch or step; a second signal ends the process now',
        });
        this.controller.abort(new Error(`stopped by ${signal}`));
      };
      process.on(signal, listener);
      return [signal, listener] as const;
    });
  }

  /** Between two steps: do not start the next one once a signal came. */
  check(): void {
    if (this.by) throw this.controller.signal.reason;
  }
}

/** A step refused to go on (unclean verification, unmet guards): already logged, exit 1. */
class Halt extends Error {}

// ------------------------------------------------------------------ steps

async function seedIfMissing(db: DatabaseHandle, config: Config, persons: number): Promise<void> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_tables
    WHERE schemaname = ${config.schema} AND tablename = 'posthog_person'`.execute(db.db);
  if (rows[0]?.n) {
    log('seed', 'skipped', { reason: 'the persons table exists' });
    return;
  }
  await createPostHogPersonsSchema(db, { schema: config.schema });
  // Team 1 holds half of the persons, like a hot team: the plan cuts its range like any other.
  const teams = [
    { teamId: 1, count: persons - 2 * Math.floor(persons / 4) },
    { teamId: 2, count: Math.floor(persons / 4) },
    { teamId: 3, count: Math.floor(persons / 4) },
  ];
  for (const team of teams) {
    if (team.count > 0) await seedPersons(db, { schema: config.schema, ...team });
  }
  log('seed', 'done', { persons, teams: teams.length });
}

/** The phase, or `unprepared` when the migration is not registered yet. */
async function currentPhase(migration: PersonsMigration): Promise<Phase | 'unprepared'> {
  try {
    return (await migration.status()).phase;
  } catch (error) {
    if (error instanceof NotInstalledError) return 'unprepared';
    throw error;
  }
}

async function prepare(migration: PersonsMigration, config: Config): Promise<void> {
  const result = await migration.prepare(
    config.partitions === undefined ? {} : { partitions: config.partitions },
  );
  log('prepare', 'done', {
    createdNewTable: result.createdNewTable,
    partitions: result.partitions,
    ddlStatements: result.ddl.length,
    warnings: result.warnings.map((w) => w.check),
  });
}

/** Logs the backfill's progress every `intervalMs`, one read at a time; returns the stop. */
function logProgress(migration: PersonsMigration, intervalMs: number): () => Promise<void> {
  let polling: Promise<void> | undefined;
  const timer = setInterval(() => {
    polling ??= migration
      .backfillStatus()
      .then((p) => {
        if (!p) return;
        log('backfill', 'progress', {
          state: p.state,
          percent: Math.round(p.percent * 10) / 10,
          rowsScanned: p.rowsScanned,
          rowsCopied: p.rowsCopied,
          rowsToGo: p.rowsToGo,
          rowsPerSecond: Math.round(p.ratePerSecond),
          etaSeconds: p.etaSeconds === undefined ? null : Math.round(p.etaSeconds * 10) / 10,
          activeWorkers: p.activeWorkers,
        });
      })
      .catch((error: unknown) => log('backfill', 'progress-failed', describe(error), 'warn'))
      .finally(() => {
        polling = undefined;
      });
  }, intervalMs);
  return async () => {
    clearInterval(timer);
    await polling;
  };
}

/** Logs what a worker ran into: retries, ranges put off, leases lost (all recoverable). */
function logTrouble(migration: PersonsMigration): () => void {
  const retry = (e: DualReadEvents['backfill:retry'][0]) =>
    log(
      'backfill',
      'retry',
      { worker: e.workerId, attempt: e.attempt, sqlState: e.sqlState },
      'warn',
    );
  const deferred = (e: DualReadEvents['backfill:range-deferred'][0]) =>
    log(
      'backfill',
      'range-deferred',
      { range: e.rangeId, times: e.times, retryInMs: e.retryInMs },
      'warn',
    );
  const leaseLost = (e: DualReadEvents['backfill:lease-lost'][0]) =>
    log('backfill', 'lease-lost', { range: e.rangeId, worker: e.workerId }, 'warn');
  migration.events.on('backfill:retry', retry);
  migration.events.on('backfill:range-deferred', deferred);
  migration.events.on('backfill:lease-lost', leaseLost);
  return () => {
    migration.events.off('backfill:retry', retry);
    migration.events.off('backfill:range-deferred', deferred);
    migration.events.off('backfill:lease-lost', leaseLost);
  };
}

async function backfill(migration: PersonsMigration, config: Config, stop: Stop): Promise<void> {
  const before = await migration.backfillStatus();
  if (before?.state === 'done') {
    log('backfill', 'skipped', { reason: 'done', rowsCopied: before.rowsCopied });
    return;
  }
  if (before && config.maxRowsPerSecond !== undefined) {
    // A resumed plan keeps its ceiling: change it live rather than silently ignore the variable.
    await migration.setBackfillRate(config.maxRowsPerSecond);
    log('backfill', 'rate-changed', { maxRowsPerSecond: config.maxRowsPerSecond });
  }
  log('backfill', before ? 'resuming' : 'starting', {
    workers: config.workers,
    percent: before ? Math.round(before.percent * 10) / 10 : 0,
  });
  const stopProgress = logProgress(migration, config.progressIntervalMs);
  const stopTrouble = logTrouble(migration);
  try {
    const result = await migration.backfill({
      workers: config.workers,
      ...(before || !config.maxRowsPerSecond ? {} : { maxRowsPerSecond: config.maxRowsPerSecond }),
      signal: stop.controller.signal,
    });
    const { finished, aborted, rowsScanned, rowsCopied, batches, rangesDone } = result;
    log('backfill', aborted ? 'stopped' : 'done', {
      finished,
      aborted,
      rowsScanned,
      rowsCopied,
      batches,
      rangesDone,
      ms: Math.round(result.ms),
    });
    if (aborted) stop.check();
    if (!finished) {
      log(
        'backfill',
        'unfinished',
        {
          reason: 'other workers still hold ranges: run this again once they are done',
        },
        'error',
      );
      throw new Halt();
    }
  } finally {
    stopTrouble();
    await stopProgress();
  }
}

async function verify(migration: PersonsMigration, stop: Stop): Promise<void> {
  const result = await migration.verify({ signal: stop.controller.signal });
  const byClass = Object.fromEntries(
    mismatchClasses.map((c) => [c, result.counts[c] ?? 0]).filter(([, n]) => n !== 0),
  );
  const figures = {
    verificationId: result.id,
    clean: result.clean,
    oldRows: result.oldRows,
    newRows: result.newRows,
    mismatches: result.mismatches,
    byClass,
    strayWrites: result.strayWrites,
    ms: Math.round(result.ms),
  };
  if (result.clean) {
    log('verify', 'clean', figures);
    return;
  }
  log(
    'verify',
    'mismatched',
    {
      ...figures,
      next: `list the keys with migration.mismatches('${result.id}') or pg-dual-read verify; fix them (verify({ repair: true }) copies the missing and stale ones), then run this again`,
    },
    'error',
  );
  throw new Halt();
}

async function cutover(migration: PersonsMigration, config: Config): Promise<void> {
  try {
    const state = await migration.cutover({ actor: config.actor });
    log('cutover', 'done', { phase: state.phase, epoch: state.epoch });
  } catch (error) {
    if (!(error instanceof TransitionRefusedError)) throw error;
    const unmet = error.unmet.map(({ guard, message, fix }) => ({ guard, message, fix }));
    log('cutover', 'refused', { unmet }, 'error');
    throw new Halt();
  }
}

async function finalize(migration: PersonsMigration, config: Config): Promise<void> {
  const { phase, retiredTable } = await migration.finalize({ actor: config.actor });
  log('finalize', 'done', {
    phase,
    retiredTable,
    next: 'the old table is kept under retiredTable: drop it with dropRetiredTable() when sure',
  });
}

/** Every step, each skipped when the phase says it is done: a second run resumes. */
async function runLifecycle(
  db: DatabaseHandle,
  migration: PersonsMigration,
  config: Config,
  stop: Stop,
): Promise<Phase> {
  if (config.seedPersons !== undefined) await seedIfMissing(db, config, config.seedPersons);
  stop.check();
  const installed = await migration.install();
  log('install', 'done', { fromVersion: installed.fromVersion, toVersion: installed.toVersion });
  stop.check();
  let phase = await currentPhase(migration);
  if (phase === 'unprepared') {
    await prepare(migration, config);
    phase = 'old';
  } else log('prepare', 'skipped', { phase });
  stop.check();
  if (phase === 'old') {
    const state = await migration.startDualRead();
    log('start-dual-read', 'done', { phase: state.phase, epoch: state.epoch });
    phase = state.phase;
  } else log('start-dual-read', 'skipped', { phase });
  stop.check();
  if (phase === 'dual_read') {
    await backfill(migration, config, stop);
    stop.check();
    await verify(migration, stop);
    stop.check();
    await cutover(migration, config);
    phase = 'new';
  } else log('cutover', 'skipped', { phase });
  stop.check();
  if (phase === 'new' && config.finalize) {
    await finalize(migration, config);
    phase = 'finalized';
  } else if (phase === 'new') log('finalize', 'skipped', { reason: 'FINALIZE=1 not set' });
  return phase;
}

// ------------------------------------------------------------------ main

/**
 * The error's name, code and message only: a driver error's other fields (`detail`) can hold
 * row values. The library's own errors never do; for the others (this script's seeding SQL, a
 * connection refused) the message is Postgres's or Node's sentence.
 */
function describe(error: unknown): Record<string, unknown> {
  const code = (error as { code?: unknown } | null)?.code;
  return {
    error: error instanceof Error ? error.name : typeof error,
    ...(typeof code === 'string' ? { code } : {}),
    ...(error instanceof Error ? { message: error.message } : {}),
  };
}

async function main(): Promise<number> {
  const stop = new Stop();
  let config: Config;
  try {
    config = readConfig();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    log('start', 'usage', { message: error.message }, 'error');
    return 2;
  }
  const db = await openDatabase(config.url, { maxConnections: config.workers + 2 });
  const migration = createPersonsMigration({
    db,
    name: config.name,
    schema: config.schema,
    controlSchema: config.controlSchema,
    serviceName: 'migration-script',
  });
  log('start', 'connected', { backend: db.backend, schema: config.schema, name: config.name });
  try {
    const phase = await runLifecycle(db, migration, config, stop);
    log('done', 'done', { phase });
    return 0;
  } catch (error) {
    if (stop.by) {
      log('shutdown', 'stopped', {
        signal: stop.by,
        resume:
          'run the same command again: each step checks the phase first, and the backfill resumes from its checkpoints',
      });
      return stopExitCodes[stop.by];
    }
    if (!(error instanceof Halt)) log('failed', 'error', describe(error), 'error');
    return 1;
  } finally {
    await migration.close();
    await db.close();
    log('shutdown', 'closed', {});
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    log('failed', 'error', describe(error), 'error');
    process.exitCode = 1;
  },
);

/**
 * Backfill benchmark: `migration.backfill()` against one `INSERT INTO new SELECT ... FROM old`,
 * on the same rows, in the same run, on a real server.
 *
 *   npx tsx bench/backfill.ts       (or `npm run bench:backfill`)
 *
 * Needs a real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
 * Creates three uniquely named schemas (uniform persons, skewed persons, the control schema)
 * and drops them at the end, also on failure and on Ctrl-C. Changes no server setting; it runs
 * CHECKPOINT before each measured copy (so every copy starts from the same state, and pays the
 * full-page images a long backfill pays).
 *
 * Setup: `createPostHogPersonsSchema` + `seedPersons` (~0.5 KB of properties). Uniform: the rows
 * spread evenly over BENCH_TEAMS teams, seeded in chunks of BENCH_CHUNK rows, the chunks of all
 * teams interleaved (ids grow over time across teams, as in production, so a team's keys are
 * not one heap run). Skewed: a copy of the very same rows (same ids, heap order, properties)
 * with the first half of the teams relabelled as one team, so the two differ only in the key
 * distribution. Then `install()`, `prepare()` (not partitioned; and a second migration of the
 * same old table with `prepare({ partitions: 8 })`), `startDualRead()`, VACUUM ANALYZE.
 *
 * Measured, each on an empty new table (TRUNCATE, `resetBackfill()`, CHECKPOINT before each):
 * - `baseline`: one `INSERT INTO new (columns) SELECT columns FROM old` (the backfill's column
 *   list), one statement, one transaction, on a connection of this process;
 * - `backfill`: `migration.backfill({ workers, lockMode })` with default options otherwise, in a
 *   child process (`bench/backfill-child.ts`) that also reports its peak RSS growth during the
 *   call. Its time is the call's, planning included, process start excluded. `lockMode` is
 *   'ranges' (the default: each batch holds its range's control row, and reads old rows
 *   without a row lock) or 'rows' (each batch reads its old rows `FOR SHARE`); every run is
 *   labelled.
 * Baseline, backfill (2 workers, ranges), the same on the skewed rows, the baseline on the
 * skewed rows (the data's own share of the skew), and backfill (2 workers, rows) alternate
 * BENCH_ROUNDS times; then, on the uniform rows, 4 and 1 workers, and 2 workers with 1% of
 * the rows copied into the new table before (as copy-on-write would: nearly every batch window
 * then holds a copy, so nearly every batch pre-checks the key index with ON CONFLICT, which a
 * batch into an empty window skips), and with BENCH_SYNC_OFF=1 2 workers with
 * `synchronous_commit=off` for every statement of the backfill's sessions (through
 * `options=-c ...` in the child's URL; batches already commit that way), in 'ranges' mode; on
 * the skewed rows, 4 workers in 'ranges' mode and 2 in 'rows' mode; then the partitioned table
 * (baseline and 2 workers, 'ranges').
 * Then EXPLAIN (ANALYZE, BUFFERS, WAL) of one batch statement as `RangeStore.batch` sends it
 * (built by `batchStatement()`, in 'ranges' mode, and in 'rows' mode too for the uniform
 * rows), custom and generic plans, and of variants of it, to show where the time goes.
 * The throughput goal is judged on medians over all rounds, and also on the median of each
 * 2-worker backfill against the baseline of its own round (the machine drifts between rounds).
 * Last (it deletes old rows, which the other runs' row checks count on), under live deletes: the
 * delete latency with no backfill running for ~3 s, then for each mode a 2-worker backfill of
 * the uniform rows while this process deletes random existing persons through the library's
 * repository (`repository().deletePerson()` of a second migration object on a handle of its
 * own) at BENCH_LIVE_DELETES_PER_S, up to 8 in flight, from the child's backfill() call until
 * it exits. Reported: the backfill's time against the baseline and against the same mode
 * without deletes, and the deletes' latency percentiles. Checked after each: no deleted person
 * left in either table, every remaining old row copied, no new row without an old row (the
 * tables are printed, then the bench fails if any check did not hold).
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_ROWS [1000000]     BENCH_TEAMS [100]       BENCH_PROPERTIES_BYTES [500]
 *   BENCH_CHUNK [1000]       rows per seedPersons call
 *   BENCH_ROUNDS [2]         baseline / 2-worker backfill pairs
 *   BENCH_PARTITIONS [8]     hash partitions of the second new table (0: skip it)
 *   BENCH_SKEW [1]           0 skips the skewed rows
 *   BENCH_SYNC_OFF [0]       1 adds the session-wide synchronous_commit=off run
 *   BENCH_ROWS_MODE [1]      0 skips the lockMode 'rows' runs (uniform, skewed, live deletes)
 *   BENCH_TARGET_BATCH_MS    the backfill's targetBatchMs (default: the library's, 250)
 *   BENCH_LIVE_DELETES_PER_S [50] deletes a second during the live-delete runs (0: skip them)
 *   BENCH_EXPLAIN [1]        0 none, 1 summary + the batch plan, 2 also the variants' plans
 *   BENCH_EXPLAIN_ROWS [5000] rows of the explained batch
 *   BENCH_TIMEOUT_S [150]    a backfill still running after this is stopped (signal) and reported
 *                            as such, with the rows it copied
 *   BENCH_PRE_COPIED_PERCENT [1] the pre-copied run's share of rows copied before it (0: skip it)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import pg from 'pg';
import { planBackfill } from '../src/backfill/backfill-plan.js';
import { batchStatement } from '../src/backfill/batch-statement.js';
import { RangeStore } from '../src/backfill/range-store.js';
import type { AnyDb } from '../src/db/any-db.js';
import {
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonsMigration,
  type PersonsRepository,
} from '../src/index.js';
import type { BatchLockMode } from '../src/options/backfill-options.js';
import { columnList, loadPersonColumns } from '../src/persons/person-columns.js';
import { migrationTables } from '../src/persons/tables.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import { type ChildConfig, type ChildReport, startedLine } from './backfill-child.js';
import { envNumber, interleavedSeedJobs } from './support.js';

const env = envNumber;

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROWS = Math.max(1_000, Math.round(env('BENCH_ROWS', 1_000_000)));
const TEAMS = Math.max(2, Math.round(env('BENCH_TEAMS', 100)));
const PROPERTIES_BYTES = env('BENCH_PROPERTIES_BYTES', 500);
const CHUNK = Math.max(100, Math.round(env('BENCH_CHUNK', 1_000)));
const ROUNDS = Math.max(1, Math.round(env('BENCH_ROUNDS', 2)));
const PARTITIONS = Math.round(env('BENCH_PARTITIONS', 8));
const SKEW = env('BENCH_SKEW', 1) > 0;
const SYNC_OFF = env('BENCH_SYNC_OFF', 0) > 0;
const ROWS_MODE = env('BENCH_ROWS_MODE', 1) > 0;
const LIVE_DELETES_PER_S = env('BENCH_LIVE_DELETES_PER_S', 50);
const EXPLAIN = env('BENCH_EXPLAIN', 1);
const EXPLAIN_ROWS = Math.max(100, Math.round(env('BENCH_EXPLAIN_ROWS', 5_000)));
const TIMEOUT_S = Math.max(1, env('BENCH_TIMEOUT_S', 150));
const PRE_COPIED = Math.min(0.5, Math.max(0, env('BENCH_PRE_COPIED_PERCENT', 1) / 100));

const GOAL = { ratio: 1.25, skew: 1.2, memoryMb: 100 };
/** A session setting the backfill's connections can be started with (`options=-c ...`). */
const SYNC_COMMIT_OFF = 'synchronous_commit=off';
/** What `batchTransaction` (src/backfill/range-store.ts) sets in every batch transaction. */
const BATCH_SETTINGS = ['enable_incremental_sort=off'];
/** Live deletes in flight at once; a tick finding this many still running is skipped. */
const DELETES_IN_FLIGHT = 8;
/** How long the delete latency is measured with no backfill running, for reference. */
const REFERENCE_DELETES_MS = 3_000;
const modeLabel = (mode: BatchLockMode) => `lockMode ${mode}`;

const stamp = `${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;
const uniformSchema = `bench_backfill_${stamp}`;
const skewedSchema = `bench_backfill_skew_${stamp}`;
const controlSchema = `bench_backfill_ctl_${stamp}`;
const schemas = [uniformSchema, skewedSchema, controlSchema];
const childPath = fileURLToPath(new URL('./backfill-child.ts', import.meta.url));

// ------------------------------------------------------------------ small helpers

const now = () => Number(process.hrtime.bigint()) / 1e6;
const seconds = (since: number) => `${((now() - since) / 1000).toFixed(1)} s`;
const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');
const median = (values: readonly number[]) => {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};
const mb = (bytes: number) => bytes / (1024 * 1024);
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => (ms / 1000).toFixed(1);

// ------------------------------------------------------------------ cleanup

let cleanedUp = false;
let runningChild: ChildProcess | undefined;
let baselineBackendPid: number | undefined;

async function dropSchemas(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  if (runningChild && runningChild.exitCode === null) runningChild.kill('SIGTERM');
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    // A baseline statement still running (Ctrl-C) would hold its locks until it ends.
    if (baselineBackendPid !== undefined) {
      await client.query('SELECT pg_cancel_backend($1)', [baselineBackendPid]).catch(() => {});
    }
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    log(`dropped schemas ${schemas.join(', ')}`);
  } catch (err) {
    log(`could not drop schemas ${schemas.join(', ')}: ${(err as Error).message}`);
  } finally {
    await client.end().catch(() => {});
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void dropSchemas().finally(() => process.exit(130));
  });
}

// ------------------------------------------------------------------ setup

async function seedUniform(handle: DatabaseHandle, schema: string): Promise<void> {
  await createPostHogPersonsSchema(handle, { schema });
  for (const job of interleavedSeedJobs(ROWS, TEAMS, CHUNK)) {
    await seedPersons(handle, {
      schema,
      teamId: job.teamId,
      count: job.count,
      prefix: `c${job.chunk}`,
      propertiesBytes: PROPERTIES_BYTES,
    });
  }
}

/** Teams 1..hotTeams of the uniform rows become team 1 of the skewed rows (half of them). */
const hotTeams = () => Math.floor(TEAMS / 2);

/**
 * The skewed rows: the uniform rows themselves (same ids, uuids, properties, heap order), with
 * teams 1..TEAMS/2 relabelled team 1 (half of the rows in one team) and the others renumbered
 * 2, 3, ... So the two data sets differ only in the key distribution. (The distinct ids are
 * not copied: the backfill does not read them.)
 */
async function copySkewed(handle: DatabaseHandle, from: string, schema: string): Promise<void> {
  await createPostHogPersonsSchema(handle, { schema });
  const columns = (
    await sql<{ name: string }>`
      SELECT attname AS name FROM pg_attribute
      WHERE attrelid = ${`"${from}"."posthog_person"`}::regclass AND attnum > 0 AND NOT attisdropped
      ORDER BY attnum`.execute(handle.db)
  ).rows.map((r) => r.name);
  const hot = hotTeams();
  const select = sql.join(
    columns.map((c) =>
      c === 'team_id'
        ? sql`CASE WHEN team_id <= ${hot} THEN 1 ELSE team_id - ${hot} + 1 END`
        : sql.id(c),
    ),
  );
  await sql`INSERT INTO ${sql.id(schema, 'posthog_person')} (${sql.join(columns.map((c) => sql.id(c)))})
    SELECT ${select} FROM ${sql.id(from, 'posthog_person')} ORDER BY id`.execute(handle.db);
  await sql`SELECT setval(pg_get_serial_sequence(${`"${schema}"."posthog_person"`}, 'id'),
    (SELECT max(id) FROM ${sql.id(schema, 'posthog_person')}))`.execute(handle.db);
}

interface Target {
  readonly label: string;
  readonly dataset: 'uniform' | 'skewed';
  readonly schema: string;
  readonly name: string;
  readonly newTable: string;
  readonly partitions: number;
  readonly migration: PersonsMigration;
}

// ------------------------------------------------------------------ measurements

interface Run {
  readonly kind: 'baseline' | 'backfill';
  readonly target: Target;
  readonly workers: number;
  /** The backfill's lock mode (undefined for a baseline). */
  readonly lockMode: BatchLockMode | undefined;
  /** Session settings of the backfill's connections (`synchronous_commit=off`). */
  readonly tweaks: readonly string[];
  readonly ms: number;
  readonly walBytes: number;
  readonly child: ChildReport | undefined;
  /** Stopped by BENCH_TIMEOUT_S before the end: its time is extrapolated (a lower bound). */
  readonly stopped: boolean;
  /** The alternating round it ran in (undefined outside the rounds). */
  readonly round: number | undefined;
  /** Share of the old rows copied into the new table before the backfill (0 for most runs). */
  readonly preCopied: number;
}

interface BackfillRunOptions {
  readonly lockMode?: BatchLockMode;
  /** Session settings of the backfill's connections. */
  readonly tweaks?: readonly string[];
  /** Stop the backfill after this long (BENCH_TIMEOUT_S by default). */
  readonly timeoutS?: number;
  /**
   * Copy this share of the old rows (every 1/share-th id) before the backfill, as copy-on-write
   * would: nearly every batch window then holds a copy, so nearly every batch pre-checks the
   * key index (ON CONFLICT).
   */
  readonly preCopied?: number;
}

/** The run's time for all rows: measured, or extrapolated from a stopped run (a lower bound). */
const fullMs = (r: Run) =>
  r.stopped ? (r.ms * ROWS) / Math.max(1, r.child?.rowsCopied ?? 0) : r.ms;

async function main(): Promise<void> {
  const t0 = now();
  const loadBefore = load();
  const handle = await openDatabase(url, { maxConnections: 4 });
  const db = handle.db as AnyDb;
  const baselineClient = new pg.Client({ connectionString: url });
  const targets: Target[] = [];
  try {
    await baselineClient.connect();
    baselineBackendPid = (await baselineClient.query('SELECT pg_backend_pid() AS pid')).rows[0]
      ?.pid as number;
    const facts = (
      await sql<Record<string, string>>`
        SELECT current_setting('server_version') AS version,
          current_setting('shared_buffers') AS shared_buffers,
          current_setting('max_wal_size') AS max_wal_size,
          current_setting('synchronous_commit') AS synchronous_commit,
          current_setting('full_page_writes') AS full_page_writes,
          current_setting('wal_level') AS wal_level`.execute(db)
    ).rows[0] as Record<string, string>;

    // ---------------------------------------------------------------- setup
    log(
      `seeding ${int(ROWS)} persons over ${TEAMS} teams (~${PROPERTIES_BYTES} B properties, chunks of ${CHUNK})` +
        (SKEW ? '; then the same rows with one team holding half of them' : ''),
    );
    await seedUniform(handle, uniformSchema);
    log(`seeded in ${seconds(t0)}`);
    if (SKEW) {
      const copyStart = now();
      await copySkewed(handle, uniformSchema, skewedSchema);
      log(`skewed copy in ${seconds(copyStart)}`);
    }

    const setupStart = now();
    const make = (
      label: string,
      dataset: Target['dataset'],
      schema: string,
      name: string,
      newTable: string,
      partitions: number,
    ): Target => ({
      label,
      dataset,
      schema,
      name,
      newTable,
      partitions,
      migration: createPersonsMigration({ db: handle, schema, controlSchema, name, newTable }),
    });
    targets.push(make('uniform', 'uniform', uniformSchema, 'uniform', 'posthog_person_new', 0));
    if (PARTITIONS > 0) {
      targets.push(
        make(
          `uniform, new table in ${PARTITIONS} hash partitions`,
          'uniform',
          uniformSchema,
          'uniform_partitioned',
          'posthog_person_new_hash',
          PARTITIONS,
        ),
      );
    }
    if (SKEW) {
      targets.push(make('skewed', 'skewed', skewedSchema, 'skewed', 'posthog_person_new', 0));
    }
    const [uniform] = targets as [Target];
    const partitioned = targets.find((t) => t.partitions > 0);
    const skewed = targets.find((t) => t.dataset === 'skewed');
    await uniform.migration.install();
    for (const target of targets) {
      await target.migration.prepare(
        target.partitions > 0 ? { partitions: target.partitions } : {},
      );
      await target.migration.startDualRead();
    }
    for (const schema of SKEW ? [uniformSchema, skewedSchema] : [uniformSchema]) {
      await sql`VACUUM ANALYZE ${sql.id(schema, 'posthog_person')}`.execute(db);
      await sql`VACUUM ANALYZE ${sql.id(schema, 'posthog_persondistinctid')}`.execute(db);
    }
    const columns = await loadPersonColumns(db, uniform.migration.options);
    const copyable = columnList(columns.copyable);
    const size = (
      await sql<{ table: string; indexes: string; properties: string }>`
        SELECT pg_size_pretty(pg_table_size(${`"${uniformSchema}"."posthog_person"`}::regclass)) AS table,
          pg_size_pretty(pg_indexes_size(${`"${uniformSchema}"."posthog_person"`}::regclass)) AS indexes,
          (SELECT round(avg(pg_column_size(properties)))::text
             FROM ${sql.id(uniformSchema, 'posthog_person')}) AS properties`.execute(db)
    ).rows[0] as { table: string; indexes: string; properties: string };
    log(`prepared + VACUUM ANALYZE in ${seconds(setupStart)}`);

    // Content check: the copy must equal the old rows (order-free sum of row hashes).
    const rowHash = async (schema: string, table: string) =>
      (
        await sql<{
          h: string;
        }>`SELECT count(*)::text || ':' || coalesce(sum(hashtext(t::text)::int8), 0)::text AS h
          FROM ${sql.id(schema, table)} AS t`.execute(db)
      ).rows[0]?.h;
    const oldHash = new Map<string, string | undefined>();
    for (const schema of SKEW ? [uniformSchema, skewedSchema] : [uniformSchema]) {
      oldHash.set(schema, await rowHash(schema, 'posthog_person'));
    }
    const checked = new Set<string>();

    const walLsn = async () =>
      (await sql<{ lsn: string }>`SELECT pg_current_wal_lsn()::text AS lsn`.execute(db)).rows[0]
        ?.lsn as string;
    const walSince = async (lsn: string) =>
      Number(
        (
          await sql<{
            d: string;
          }>`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), ${lsn}::pg_lsn)::text AS d`.execute(db)
        ).rows[0]?.d,
      );

    const reset = async (target: Target) => {
      await sql`TRUNCATE ${sql.id(target.schema, target.newTable)}`.execute(db);
      await target.migration.resetBackfill();
      await sql`CHECKPOINT`.execute(db);
    };
    const verify = async (target: Target, what: string) => {
      const key = `${target.schema}.${target.newTable}`;
      if (!checked.has(key)) {
        const got = await rowHash(target.schema, target.newTable);
        if (got !== oldHash.get(target.schema)) {
          throw new Error(
            `${what}: the new table differs from the old one (${got} vs ${oldHash.get(target.schema)})`,
          );
        }
        checked.add(key);
        return;
      }
      const count = Number(
        (
          await sql<{
            n: string;
          }>`SELECT count(*)::text AS n FROM ${sql.id(target.schema, target.newTable)}`.execute(db)
        ).rows[0]?.n,
      );
      if (count !== ROWS) throw new Error(`${what}: ${count} rows copied, expected ${ROWS}`);
    };

    const runs: Run[] = [];
    let currentRound: number | undefined;
    const baseline = async (target: Target): Promise<Run> => {
      await reset(target);
      const query = sql`INSERT INTO ${sql.id(target.schema, target.newTable)} (${copyable})
        SELECT ${copyable} FROM ${sql.id(target.schema, 'posthog_person')}`.compile(db);
      const lsn = await walLsn();
      const started = now();
      await baselineClient.query(query.sql, [...query.parameters]);
      const ms = now() - started;
      const walBytes = await walSince(lsn);
      await verify(target, `baseline on ${target.label}`);
      const run: Run = {
        kind: 'baseline',
        target,
        workers: 1,
        lockMode: undefined,
        tweaks: [],
        ms,
        walBytes,
        child: undefined,
        stopped: false,
        round: currentRound,
        preCopied: 0,
      };
      runs.push(run);
      log(
        `baseline, ${target.label}: ${secs(ms)} s, ${int(ROWS / (ms / 1000))} rows/s, WAL ${int(mb(walBytes))} MB`,
      );
      return run;
    };
    const childConfig = (
      target: Target,
      workers: number,
      lockMode: BatchLockMode,
      tweaks: readonly string[],
      timeoutS: number,
    ): ChildConfig => ({
      url: tweaks.reduce(withOption, url),
      schema: target.schema,
      controlSchema,
      name: target.name,
      newTable: target.newTable,
      workers,
      timeoutMs: Math.round(timeoutS * 1000),
      lockMode,
    });
    const describeChild = (child: ChildReport) =>
      `${secs(child.ms)} s, ${int(child.rowsCopied / (child.ms / 1000))} rows/s, ` +
      `${child.batches} batches (median ${child.batchSize.median} rows, ${Math.round(child.batchMs.median)} ms, p95 ${Math.round(child.batchMs.p95)} ms), ` +
      `first batch after ${Math.round(child.firstBatchMs)} ms, ${child.splits} splits, ${child.retries} retries, ` +
      `peak RSS +${mb(child.hwmGrowth ?? child.sampledGrowth).toFixed(1)} MB`;
    const backfill = async (
      target: Target,
      workers: number,
      {
        lockMode = 'ranges',
        tweaks = [],
        timeoutS = TIMEOUT_S,
        preCopied = 0,
      }: BackfillRunOptions = {},
    ): Promise<Run> => {
      await reset(target);
      let preCopiedRows = 0;
      if (preCopied > 0) {
        const every = Math.round(1 / preCopied);
        const copiedBefore =
          await sql`INSERT INTO ${sql.id(target.schema, target.newTable)} (${copyable})
          SELECT ${copyable} FROM ${sql.id(target.schema, 'posthog_person')} WHERE id % ${every} = 0`.execute(
            db,
          );
        preCopiedRows = Number(copiedBefore.numAffectedRows ?? 0);
        await sql`CHECKPOINT`.execute(db);
      }
      const lsn = await walLsn();
      const child = await runChild(childConfig(target, workers, lockMode, tweaks, timeoutS));
      const walBytes = await walSince(lsn);
      const stopped = child.aborted && !child.finished;
      if (!stopped && (!child.finished || child.rowsCopied !== ROWS - preCopiedRows)) {
        throw new Error(
          `backfill on ${target.label}: finished=${child.finished}, ${child.rowsCopied} rows copied`,
        );
      }
      if (tweaks.includes(SYNC_COMMIT_OFF) && child.settings.synchronousCommit !== 'off') {
        throw new Error(`session settings not applied: ${JSON.stringify(child.settings)}`);
      }
      if (!stopped) await verify(target, `backfill on ${target.label}`);
      const run: Run = {
        kind: 'backfill',
        target,
        workers,
        lockMode,
        tweaks,
        ms: child.ms,
        walBytes,
        child,
        stopped,
        round: currentRound,
        preCopied,
      };
      runs.push(run);
      log(
        `backfill, ${target.label}, ${workers} worker${workers === 1 ? '' : 's'}, ${modeLabel(lockMode)}${tweaks.length ? `, ${tweaks.join(', ')}` : ''}${preCopied ? `, ${int(preCopiedRows)} rows copied before` : ''}: ` +
          (stopped
            ? `STOPPED after ${Math.round(timeoutS)} s with ${int(child.rowsCopied)} of ${int(ROWS)} rows, `
            : '') +
          `${describeChild(child)}, WAL ${int(mb(walBytes))} MB, ` +
          `batch plans generic/custom ${child.batchPlans.generic}/${child.batchPlans.custom}`,
      );
      return run;
    };

    const of = (pred: (r: Run) => boolean) => runs.filter(pred);
    const baselineOf = (target: Target) => of((r) => r.kind === 'baseline' && r.target === target);
    const backfillOf = (
      target: Target | undefined,
      workers: number,
      lockMode: BatchLockMode = 'ranges',
      tweaks: readonly string[] = [],
      preCopied = 0,
    ) =>
      of(
        (r) =>
          r.kind === 'backfill' &&
          r.target === target &&
          r.workers === workers &&
          r.lockMode === lockMode &&
          r.tweaks.join() === tweaks.join() &&
          r.preCopied === preCopied,
      );
    const medianOf = (rs: Run[]) => median(rs.map(fullMs));

    // ---------------------------------------------------------------- timed runs
    const measured = now();
    const loadDuring = load();
    for (let round = 0; round < ROUNDS; round++) {
      currentRound = round;
      const copies = [
        () => baseline(uniform),
        () => backfill(uniform, 2),
        // The skew goal compares medians of runs taken side by side: one run each swings by
        // a third on a shared machine.
        // The skewed rows' own single statement: how much of the skew is the data's.
        ...(skewed ? [() => backfill(skewed, 2), () => baseline(skewed)] : []),
        ...(ROWS_MODE ? [() => backfill(uniform, 2, { lockMode: 'rows' })] : []),
      ];
      // Alternate the order, so that no copy always runs first (or right after a baseline).
      for (const copy of round % 2 === 0 ? copies : copies.reverse()) await copy();
    }
    currentRound = undefined;
    await backfill(uniform, 4);
    await backfill(uniform, 1);
    if (PRE_COPIED > 0) await backfill(uniform, 2, { preCopied: PRE_COPIED });
    if (SYNC_OFF) await backfill(uniform, 2, { tweaks: [SYNC_COMMIT_OFF] });
    if (skewed) {
      // A skewed run 1.5x slower than its uniform counterpart misses the 1.2x goal anyway: stop
      // it there.
      const cap = (workers: number, lockMode: BatchLockMode) =>
        Math.min(
          TIMEOUT_S,
          Math.max(20, (1.5 * medianOf(backfillOf(uniform, workers, lockMode))) / 1000),
        );
      await backfill(skewed, 4, { timeoutS: cap(4, 'ranges') });
      if (ROWS_MODE) await backfill(skewed, 2, { lockMode: 'rows', timeoutS: cap(2, 'rows') });
    }
    if (partitioned) {
      await baseline(partitioned);
      await backfill(partitioned, 2);
    }
    const loadAfterRuns = load();
    log(`measured in ${seconds(measured)}`);

    // ---------------------------------------------------------------- plans
    // Before the live deletes, so the plans are of the intact old table.
    const explained: ExplainSummary[] = [];
    if (EXPLAIN > 0) {
      explained.push(await explainBatch(uniform, handle, copyable, true));
      if (skewed) explained.push(await explainBatch(skewed, handle, copyable, false));
    }

    // ---------------------------------------------------------------- under live deletes
    // Last of all: these delete old rows, which the other runs' row checks count on.
    const liveRuns: LiveRun[] = [];
    let referenceDeletes: DeleteStats | undefined;
    const failures: string[] = [];
    const fail = (message: string) => {
      failures.push(message);
      log(`FAILED: ${message}`);
    };
    if (LIVE_DELETES_PER_S > 0) {
      const liveStart = now();
      const modes: BatchLockMode[] = ROWS_MODE ? ['ranges', 'rows'] : ['ranges'];
      // Keys for a backfill 3x slower than without deletes, plus 10 s; distinct per run, and
      // never more than a small share of the table.
      const keysFor = (forSeconds: number) =>
        Math.min(
          Math.floor(ROWS / (4 * (modes.length + 1))),
          Math.ceil(LIVE_DELETES_PER_S * forSeconds),
        );
      const budgets = [
        keysFor(REFERENCE_DELETES_MS / 1000 + 2),
        ...modes.map((mode) => keysFor((3 * medianOf(backfillOf(uniform, 2, mode))) / 1000 + 10)),
      ];
      const picked = (
        await sql<Key>`SELECT team_id::int AS team, id::text AS id
          FROM ${sql.id(uniform.schema, 'posthog_person')}
          ORDER BY random() LIMIT ${budgets.reduce((a, b) => a + b, 0)}`.execute(db)
      ).rows;
      let taken = 0;
      const take = (n: number) => {
        taken += n;
        return picked.slice(taken - n, taken);
      };
      const oldTable = sql.id(uniform.schema, 'posthog_person');
      const newTable = sql.id(uniform.schema, uniform.newTable);
      /** Deleted keys gone from both tables; with `copied`, every old row copied and no more. */
      const checkDeletes = async (what: string, stats: DeleteStats, copied: boolean) => {
        if (stats.errors.length > 0) {
          fail(`${what}: ${stats.errors.length} deletes failed, the first: ${stats.errors[0]}`);
        }
        if (stats.notFound > 0) fail(`${what}: ${stats.notFound} deletes found no person`);
        const teams = stats.deleted.map((k) => k.team);
        const ids = stats.deleted.map((k) => k.id);
        const counts = (
          await sql<{ in_old: string; in_new: string; uncopied: string; orphans: string }>`
            WITH gone AS (SELECT * FROM unnest(${teams}::int8[], ${ids}::int8[]) AS g (team_id, id))
            SELECT (SELECT count(*) FROM ${oldTable} AS o JOIN gone USING (team_id, id))::text AS in_old,
              (SELECT count(*) FROM ${newTable} AS n JOIN gone USING (team_id, id))::text AS in_new,
              (SELECT count(*) FROM ${oldTable} AS o WHERE NOT EXISTS (SELECT 1 FROM ${newTable} AS n
                WHERE n.team_id = o.team_id AND n.id = o.id))::text AS uncopied,
              (SELECT count(*) FROM ${newTable} AS n WHERE NOT EXISTS (SELECT 1 FROM ${oldTable} AS o
                WHERE o.team_id = n.team_id AND o.id = n.id))::text AS orphans`.execute(db)
        ).rows[0];
        const n = (v: string | undefined) => Number(v ?? Number.NaN);
        if (n(counts?.in_old) !== 0) {
          fail(`${what}: ${counts?.in_old} deleted keys still in the old table`);
        }
        if (n(counts?.in_new) !== 0) {
          fail(`${what}: ${counts?.in_new} deleted keys are in the new table`);
        }
        if (copied && n(counts?.uncopied) !== 0) {
          fail(`${what}: ${counts?.uncopied} old rows have no copy`);
        }
        if (copied && n(counts?.orphans) !== 0) {
          fail(`${what}: ${counts?.orphans} rows of the new table have no old row`);
        }
      };

      const deleteHandle = await openDatabase(url, { maxConnections: DELETES_IN_FLIGHT + 2 });
      const deleting = createPersonsMigration({
        db: deleteHandle,
        schema: uniform.schema,
        controlSchema,
        name: uniform.name,
        newTable: uniform.newTable,
      });
      try {
        const repo = deleting.repository();
        await reset(uniform);
        // One delete outside the measure warms the repository (column facts, phase).
        const [warmUp, ...referenceKeys] = take(budgets[0] as number);
        if (warmUp) await repo.deletePerson(warmUp.team, warmUp.id);
        const referenceLoop = startDeletes(repo, referenceKeys);
        await new Promise((resolve) => setTimeout(resolve, REFERENCE_DELETES_MS));
        referenceDeletes = await referenceLoop.stop();
        await checkDeletes('deletes without a backfill', referenceDeletes, false);
        log(`deletes without a backfill: ${describeDeletes(referenceDeletes)}`);

        for (const [index, mode] of modes.entries()) {
          await reset(uniform);
          const keys = take(budgets[index + 1] as number);
          // From the child's call to backfill() until the child exits.
          const running: { loop?: DeleteLoop } = {};
          let child: ChildReport;
          let deletes: DeleteStats | undefined;
          try {
            child = await runChild(childConfig(uniform, 2, mode, [], TIMEOUT_S), () => {
              running.loop = startDeletes(repo, keys);
            });
          } finally {
            deletes = await running.loop?.stop();
          }
          if (!deletes) throw new Error('the backfill child never reported its start');
          const what = `backfill under live deletes, ${modeLabel(mode)}`;
          if (!child.finished) {
            fail(`${what}: did not finish (${int(child.rowsCopied)} rows copied)`);
          }
          await checkDeletes(what, deletes, child.finished);
          liveRuns.push({ lockMode: mode, child, deletes });
          log(`${what}: ${describeChild(child)}; deletes: ${describeDeletes(deletes)}`);
        }
      } finally {
        await deleting.close().catch(() => {});
        await deleteHandle.close().catch(() => {});
      }
      log(`live deletes measured in ${seconds(liveStart)}`);
    }

    // ---------------------------------------------------------------- report
    const uniformBaseline = median(baselineOf(uniform).map(fullMs));
    const table = [
      '| copy | new table | rows | runs (s) | median | rows/s | vs baseline | WAL per run | batches (median rows, median ms) | until 1st batch | peak RSS growth |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    ];
    const row = (label: string, rs: Run[], against: number | undefined) => {
      if (rs.length === 0) return;
      const m = median(rs.map(fullMs));
      const ge = rs.some((r) => r.stopped) ? '>= ' : '';
      const target = (rs[0] as Run).target;
      const children = rs.map((r) => r.child).filter((c): c is ChildReport => c !== undefined);
      const batches = children.length
        ? `${Math.round(median(children.map((c) => c.batches)))} (${int(median(children.map((c) => c.batchSize.median)))}, ${Math.round(median(children.map((c) => c.batchMs.median)))} ms)`
        : '1 statement';
      const first = children.length
        ? `${secs(median(children.map((c) => c.firstBatchMs)))} s`
        : '-';
      const rss = children.length
        ? `${Math.max(...children.map((c) => mb(c.hwmGrowth ?? c.sampledGrowth))).toFixed(0)} MB`
        : '-';
      table.push(
        `| ${label} | ${target.partitions ? `${target.partitions} hash partitions` : 'plain'} | ${target.dataset} | ` +
          `${rs.map((r) => (r.stopped ? `stopped after ${secs(r.ms)} with ${int(r.child?.rowsCopied ?? 0)} rows` : secs(r.ms))).join(', ')} | ` +
          `${ge}${secs(m)} s | ${ge ? '<= ' : ''}${int(ROWS / (m / 1000))} | ` +
          `${against === undefined ? '-' : `${ge}${(m / against).toFixed(2)}x`} | ${int(mb(median(rs.map((r) => r.walBytes))))} MB | ${batches} | ${first} | ${rss} |`,
      );
    };
    const ranges = modeLabel('ranges');
    const rowsMode = modeLabel('rows');
    row('baseline: one INSERT ... SELECT', baselineOf(uniform), undefined);
    row(`backfill, 2 workers, ${ranges}`, backfillOf(uniform, 2), uniformBaseline);
    row(`backfill, 2 workers, ${rowsMode}`, backfillOf(uniform, 2, 'rows'), uniformBaseline);
    row(`backfill, 4 workers, ${ranges}`, backfillOf(uniform, 4), uniformBaseline);
    row(`backfill, 1 worker, ${ranges}`, backfillOf(uniform, 1), uniformBaseline);
    if (PRE_COPIED > 0) {
      row(
        `backfill, 2 workers, ${ranges}, ${PRE_COPIED * 100}% of the rows copied before (every batch pre-checks)`,
        backfillOf(uniform, 2, 'ranges', [], PRE_COPIED),
        uniformBaseline,
      );
    }
    row(
      `backfill, 2 workers, ${ranges}, ${SYNC_COMMIT_OFF}`,
      backfillOf(uniform, 2, 'ranges', [SYNC_COMMIT_OFF]),
      uniformBaseline,
    );
    if (skewed) row('baseline: one INSERT ... SELECT', baselineOf(skewed), undefined);
    row(`backfill, 2 workers, ${ranges}`, backfillOf(skewed, 2), uniformBaseline);
    row(`backfill, 4 workers, ${ranges}`, backfillOf(skewed, 4), uniformBaseline);
    row(`backfill, 2 workers, ${rowsMode}`, backfillOf(skewed, 2, 'rows'), uniformBaseline);
    if (partitioned) {
      const pb = median(baselineOf(partitioned).map(fullMs));
      row('baseline: one INSERT ... SELECT', baselineOf(partitioned), undefined);
      row(`backfill, 2 workers, ${ranges}`, backfillOf(partitioned, 2), pb);
    }

    const geOf = (rs: Run[]) => (rs.some((r) => r.stopped) ? '>= ' : '');
    const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
    const goals = ['| goal | measured | target | |', '|---|---|---|---|'];
    const ratioGoal = (label: string, rs: Run[], against: number) => {
      if (rs.length === 0) return;
      const r = medianOf(rs) / against;
      goals.push(
        `| ${label} | ${geOf(rs)}${r.toFixed(2)}x | <= ${GOAL.ratio}x | ${verdict(r <= GOAL.ratio)} |`,
      );
    };
    const skewGoal = (label: string, s: Run[], u: Run[]) => {
      if (s.length === 0 || u.length === 0) return;
      const r = medianOf(s) / medianOf(u);
      goals.push(
        `| ${label} | ${geOf(s)}${r.toFixed(2)}x | <= ${GOAL.skew}x | ${verdict(r <= GOAL.skew)} |`,
      );
    };
    ratioGoal(
      `backfill (2 workers, ${ranges}) / one INSERT ... SELECT`,
      backfillOf(uniform, 2),
      uniformBaseline,
    );
    // The machine drifts between rounds: each backfill against the baseline of its own round.
    const pairedGoal = (label: string, rs: Run[]) => {
      const ratios = rs.flatMap((r) => {
        const b = runs.find(
          (x) => x.kind === 'baseline' && x.target === uniform && x.round === r.round,
        );
        return r.round !== undefined && b ? [fullMs(r) / b.ms] : [];
      });
      if (ratios.length === 0) return;
      const m = median(ratios);
      goals.push(
        `| ${label} | ${geOf(rs)}${m.toFixed(2)}x (rounds: ${ratios.map((x) => `${x.toFixed(2)}x`).join(', ')}) | <= ${GOAL.ratio}x | ${verdict(m <= GOAL.ratio)} |`,
      );
    };
    pairedGoal(`same, each run against its round's baseline (median)`, backfillOf(uniform, 2));
    ratioGoal(`same, ${rowsMode}`, backfillOf(uniform, 2, 'rows'), uniformBaseline);
    pairedGoal(
      `same, ${rowsMode}, each run against its round's baseline (median)`,
      backfillOf(uniform, 2, 'rows'),
    );
    ratioGoal(`same, 4 workers, ${ranges}`, backfillOf(uniform, 4), uniformBaseline);
    skewGoal(
      `skewed / uniform, 2 workers, ${ranges}`,
      backfillOf(skewed, 2),
      backfillOf(uniform, 2),
    );
    skewGoal(
      `skewed / uniform, 4 workers, ${ranges}`,
      backfillOf(skewed, 4),
      backfillOf(uniform, 4),
    );
    skewGoal(
      `skewed / uniform, 2 workers, ${rowsMode}`,
      backfillOf(skewed, 2, 'rows'),
      backfillOf(uniform, 2, 'rows'),
    );
    if (skewed && baselineOf(skewed).length > 0 && backfillOf(skewed, 2).length > 0) {
      // The same single statement on both row sets: the rows' own share of the skew (a hot
      // team's (team_id, uuid) entries all go into one subtree of that index, which has less
      // locality than a team of ~10,000), and what is left for the backfill's own.
      const skewedBaseline = medianOf(baselineOf(skewed));
      const rows = skewedBaseline / uniformBaseline;
      goals.push(
        `| for reference: skewed / uniform, one INSERT ... SELECT (the rows' own share) | ${rows.toFixed(2)}x | - | - |`,
      );
      const own =
        medianOf(backfillOf(skewed, 2)) /
        skewedBaseline /
        (medianOf(backfillOf(uniform, 2)) / uniformBaseline);
      goals.push(
        `| skewed / uniform, 2 workers, ${ranges}, each against one INSERT ... SELECT of its own rows (the backfill's share) | ${own.toFixed(2)}x | <= ${GOAL.skew}x | ${verdict(own <= GOAL.skew)} |`,
      );
    }
    const allChildren = runs.map((r) => r.child).filter((c): c is ChildReport => c !== undefined);
    const peak = Math.max(...allChildren.map((c) => mb(c.hwmGrowth ?? c.sampledGrowth)));
    const peakSampled = Math.max(...allChildren.map((c) => mb(c.sampledGrowth)));
    goals.push(
      `| peak RSS growth of the backfill process (${int(ROWS)} rows, any run) | ${peak.toFixed(0)} MB (sampled ${peakSampled.toFixed(0)} MB) | < ${GOAL.memoryMb} MB | ${verdict(peak < GOAL.memoryMb)} |`,
    );

    const loadAfter = load();
    const machine = [
      `node ${process.version}, PostgreSQL ${facts.version} on the same host (shared_buffers ${facts.shared_buffers}, ` +
        `max_wal_size ${facts.max_wal_size}, synchronous_commit ${facts.synchronous_commit}, full_page_writes ${facts.full_page_writes}, wal_level ${facts.wal_level}), ` +
        `${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown cpu'}), ${Math.round(totalmem() / 2 ** 30)} GiB`,
      `load average (1 / 5 / 15 min): ${loadBefore} at start, ${loadDuring} when the timed runs began, ${loadAfterRuns} after them, ${loadAfter} at the end`,
      `old table: ${int(ROWS)} persons (${size.table} + ${size.indexes} of indexes, properties ~${size.properties} B stored); ` +
        `uniform: ${TEAMS} teams of ~${int(ROWS / TEAMS)}, seeded in chunks of ${CHUNK} rows, the teams' chunks interleaved (ids grow across teams); ` +
        `skewed: the same rows (same heap order) with teams 1-${hotTeams()} relabelled one team (${int((hotTeams() * ROWS) / TEAMS)} rows) and ${TEAMS - hotTeams()} teams of ~${int(ROWS / TEAMS)}`,
      'each copy into an empty new table (TRUNCATE, resetBackfill(), CHECKPOINT before each); baseline and the 2-worker backfills (uniform in both modes, skewed in the default one) alternated; ' +
        'backfill time = the backfill() call in a child process (planning included); WAL = pg_current_wal_lsn() difference (whole server); ' +
        `a skewed run still going at 1.5x its uniform counterpart (or ${TIMEOUT_S} s) is stopped: its time is extrapolated from the rows it copied, a lower bound`,
    ];
    console.log('\n## Backfill: migration.backfill() vs one INSERT ... SELECT\n');
    console.log(table.join('\n'));
    console.log('');
    console.log(goals.join('\n'));
    console.log(`\n${machine.map((m) => `- ${m}`).join('\n')}\n`);
    if (referenceDeletes)
      printLiveDeletes(referenceDeletes, liveRuns, uniformBaseline, (mode) =>
        medianOf(backfillOf(uniform, 2, mode)),
      );
    for (const e of explained) printExplain(e);
    log(`total ${seconds(t0)}`);
    if (failures.length > 0) {
      throw new Error(`correctness under live deletes:\n- ${failures.join('\n- ')}`);
    }
  } finally {
    for (const target of targets) await target.migration.close().catch(() => {});
    await baselineClient.end().catch(() => {});
    baselineBackendPid = undefined;
    await dropSchemas();
    await handle.close().catch(() => {});
  }
}

/** `url` with `-c name=value` added to its `options` parameter (read by pg at connect). */
function withOption(base: string, setting: string): string {
  const parsed = new URL(base);
  const previous = parsed.searchParams.get('options');
  parsed.searchParams.set('options', `${previous ? `${previous} ` : ''}-c ${setting}`);
  return parsed.toString();
}

/**
 * Runs one backfill child; `onStarted` is called when it reports that its backfill() call
 * starts (the report comes on exit).
 */
function runChild(config: ChildConfig, onStarted?: () => void): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', childPath, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    runningChild = child;
    let out = '';
    let err = '';
    let started = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && out.split('\n').slice(0, -1).includes(startedLine)) {
        started = true;
        onStarted?.();
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      runningChild = undefined;
      const line = out.trim().split('\n').at(-1);
      if (code !== 0 || !line || line === startedLine) {
        reject(new Error(`backfill child exited with ${code}: ${err.trim() || out.trim()}`));
        return;
      }
      resolve(JSON.parse(line) as ChildReport);
    });
  });
}

// ------------------------------------------------------------------ live deletes

/** A person's key as the repository takes it. */
interface Key {
  readonly team: number;
  readonly id: string;
}

interface DeleteStats {
  /** ms from call to result, of the deletes that returned. */
  readonly latencies: number[];
  /** Keys whose delete returned true. */
  readonly deleted: Key[];
  notFound: number;
  /** Messages of the deletes that threw. */
  readonly errors: string[];
  /** Ticks skipped because DELETES_IN_FLIGHT deletes were still running. */
  skipped: number;
  /** Ticks that found no key left to delete. */
  exhausted: number;
  /** How long the loop ran. */
  ms: number;
}

interface DeleteLoop {
  /** Stops issuing deletes, waits for those in flight, and returns what they did. */
  readonly stop: () => Promise<DeleteStats>;
}

interface LiveRun {
  readonly lockMode: BatchLockMode;
  readonly child: ChildReport;
  readonly deletes: DeleteStats;
}

/**
 * Deletes `keys` in order through `repo`, one every 1000 / BENCH_LIVE_DELETES_PER_S ms on a
 * fixed schedule (a slow delete does not push the next ones back), each awaited concurrently.
 */
function startDeletes(repo: PersonsRepository, keys: readonly Key[]): DeleteLoop {
  const interval = 1000 / LIVE_DELETES_PER_S;
  const stats: DeleteStats = {
    latencies: [],
    deleted: [],
    notFound: 0,
    errors: [],
    skipped: 0,
    exhausted: 0,
    ms: 0,
  };
  const inFlight = new Set<Promise<void>>();
  const started = now();
  let ticks = 0;
  let next = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    if (stopped) return;
    const key = keys[next];
    if (inFlight.size >= DELETES_IN_FLIGHT) stats.skipped += 1;
    else if (!key) stats.exhausted += 1;
    else {
      next += 1;
      const issued = now();
      const done: Promise<void> = repo.deletePerson(key.team, key.id).then(
        (found) => {
          stats.latencies.push(now() - issued);
          if (found) stats.deleted.push(key);
          else stats.notFound += 1;
        },
        (error: unknown) => {
          stats.errors.push(error instanceof Error ? error.message : String(error));
        },
      );
      inFlight.add(done);
      void done.finally(() => inFlight.delete(done));
    }
    ticks += 1;
    timer = setTimeout(tick, Math.max(0, started + ticks * interval - now()));
  };
  tick();
  let stopping: Promise<DeleteStats> | undefined;
  return {
    stop: () => {
      stopping ??= (async () => {
        stopped = true;
        clearTimeout(timer);
        stats.ms = now() - started;
        await Promise.all(inFlight);
        return stats;
      })();
      return stopping;
    },
  };
}

/** Nearest-rank percentile. */
const percentile = (values: readonly number[], q: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : (s[Math.max(0, Math.ceil(q * s.length) - 1)] as number);
};

const latencyCells = (d: DeleteStats) =>
  [0.5, 0.95, 0.99, 1]
    .map((q) => percentile(d.latencies, q).toFixed(q === 0.5 ? 1 : 0))
    .join(' | ');

const describeDeletes = (d: DeleteStats) =>
  `${d.deleted.length} deleted in ${secs(d.ms)} s, latency p50 / p95 / p99 / max ${latencyCells(d).replaceAll(' | ', ' / ')} ms` +
  (d.skipped ? `, ${d.skipped} ticks skipped (${DELETES_IN_FLIGHT} in flight)` : '') +
  (d.exhausted ? `, ${d.exhausted} ticks found no key left` : '') +
  (d.errors.length ? `, ${d.errors.length} FAILED` : '') +
  (d.notFound ? `, ${d.notFound} found no person` : '');

function printLiveDeletes(
  reference: DeleteStats,
  live: readonly LiveRun[],
  baselineMs: number,
  /** The median time of the timed 2-worker runs of a mode. */
  quietMs: (lockMode: BatchLockMode) => number,
): void {
  console.log('## Backfill under live deletes\n');
  const table = [
    '| backfill (uniform rows) | time (s) | vs baseline | vs same, no deletes | batches (retries) | deletes done | delete p50 (ms) | p95 | p99 | max |',
    '|---|---|---|---|---|---|---|---|---|---|',
    `| none (reference, ${secs(reference.ms)} s) | - | - | - | - | ${reference.deleted.length} | ${latencyCells(reference)} |`,
  ];
  for (const r of live) {
    const quiet = quietMs(r.lockMode);
    table.push(
      `| 2 workers, ${modeLabel(r.lockMode)} | ${secs(r.child.ms)} | ${(r.child.ms / baselineMs).toFixed(2)}x | ` +
        `${(r.child.ms / quiet).toFixed(2)}x | ${r.child.batches} (${r.child.retries}) | ${r.deletes.deleted.length} | ${latencyCells(r.deletes)} |`,
    );
  }
  console.log(table.join('\n'));
  const skipped = [reference, ...live.map((r) => r.deletes)].reduce((n, d) => n + d.skipped, 0);
  console.log(
    `\n- deletes through \`repository().deletePerson()\` of a second migration object in the bench process, ` +
      `${LIVE_DELETES_PER_S} a second on a fixed schedule, up to ${DELETES_IN_FLIGHT} in flight (ticks skipped for that: ${skipped}), ` +
      'random existing persons, distinct per run; latency = the call, pool wait included; during a backfill from its backfill() call until its process exits\n' +
      '- vs same, no deletes: against the median of the timed 2-worker runs of that mode; retries: batches retried (lock timeout while a delete held the range or a row)\n' +
      '- checked after each run: no deleted person in either table, every remaining old row copied, no new row without an old row\n',
  );
}

// ------------------------------------------------------------------ one batch, explained

interface Variant {
  readonly label: string;
  readonly sql: string;
  readonly params: readonly unknown[];
  /** `SET LOCAL` before the statement. */
  readonly settings: readonly string[];
  /** Run as a prepared statement with plan_cache_mode=force_generic_plan. */
  readonly generic: boolean;
}

interface VariantResult {
  readonly label: string;
  readonly ms: number[];
  wal: string;
  buffers: string;
  shape: string;
  plan: string;
}

interface ExplainSummary {
  readonly target: Target;
  readonly rows: number;
  readonly after: { readonly team: string; readonly id: string };
  readonly end: { readonly team: string; readonly id: string };
  readonly variants: VariantResult[];
}

/** One batch statement as `RangeStore.batch` sends it, with the range it was built for. */
interface CapturedBatch {
  /** The statement in each lock mode asked for (same range, same parameters). */
  readonly statements: readonly {
    readonly lockMode: BatchLockMode;
    readonly sql: string;
    readonly params: readonly unknown[];
  }[];
  readonly after: { readonly team: string; readonly id: string };
  readonly end: { readonly team: string; readonly id: string };
  /** Gives the range back and discards the plan. */
  readonly release: () => Promise<void>;
}

/**
 * Plans the backfill, leases its first range to `bench-explain`, and builds the batch
 * statement for keys BENCH_EXPLAIN_ROWS into that range (so it has both bounds, as most
 * batches do) in each of `lockModes`, with `batchStatement()`, the builder `RangeStore.batch`
 * runs. The range row is set as such a batch finds it (leased to us, running, its checkpoint at
 * that key), and the lease stays until `release()`, so the statements can be EXPLAIN ANALYZEd.
 * In 'ranges' mode the range row's lock is a statement before the batch statement, so it is not
 * in the captured SQL.
 */
async function captureBatch(
  target: Target,
  handle: DatabaseHandle,
  lockModes: readonly BatchLockMode[],
): Promise<CapturedBatch> {
  const db = handle.db;
  const options = target.migration.options;
  const oldTable = sql.id(target.schema, 'posthog_person');
  await sql`TRUNCATE ${sql.id(target.schema, target.newTable)}`.execute(db);
  await target.migration.resetBackfill();
  const columns = await loadPersonColumns(db, options);
  const store = new RangeStore(options, columns);
  await planBackfill(db, options, undefined, undefined);
  const claimed = await store.claim(db, 'bench-explain', 600_000);
  if (!claimed) throw new Error('capture: no range to claim');
  const after = (
    await sql<{ team: string; id: string }>`
      SELECT team_id::text AS team, id::text AS id FROM ${oldTable}
      WHERE (team_id, id) <= (${claimed.end.team}::int8, ${claimed.end.id}::int8)
      ORDER BY team_id, id
      OFFSET ${Math.max(0, Math.min(EXPLAIN_ROWS, claimed.rowsEstimated - 2 * EXPLAIN_ROWS))} LIMIT 1`.execute(
      db,
    )
  ).rows[0];
  if (!after) throw new Error('capture: range too small');
  await sql`UPDATE ${sql.id(options.controlSchema, 'backfill_range')}
    SET status = 'running', lease_owner = 'bench-explain', done_at = NULL,
      lease_expires_at = clock_timestamp() + interval '10 minutes',
      cursor_team = ${after.team}::int8, cursor_id = ${after.id}::int8
    WHERE migration = ${options.name} AND range_id = ${claimed.rangeId}`.execute(db);
  const statements = lockModes.map((lockMode) => {
    const { sql: text, parameters } = batchStatement({
      tables: migrationTables(options),
      columns: columns.copyable,
      workerId: 'bench-explain',
      range: { ...claimed, after },
      limit: EXPLAIN_ROWS,
      leaseMs: 600_000,
      lockMode,
      arbiter: 'when-needed',
    }).compile(db);
    // The labels say which mode a plan is of: make sure the SQL agrees.
    if (text.includes('FOR SHARE OF o') !== (lockMode === 'rows')) {
      throw new Error(`capture: the ${lockMode} batch statement does not read as expected`);
    }
    return { lockMode, sql: text, params: [...parameters] };
  });
  return {
    statements,
    after,
    end: claimed.end,
    release: async () => {
      await store.release(db, 'bench-explain', claimed.rangeId).catch(() => {});
      await target.migration.resetBackfill().catch(() => {});
    },
  };
}

/**
 * EXPLAIN (ANALYZE, BUFFERS, WAL) of the captured batch statement and of variants of it, each
 * on an empty new table (TRUNCATE in a transaction rolled back) after a CHECKPOINT,
 * alternating, 3 times each when `full` (once otherwise).
 */
async function explainBatch(
  target: Target,
  handle: DatabaseHandle,
  copyable: ReturnType<typeof columnList>,
  full: boolean,
): Promise<ExplainSummary> {
  const db = handle.db as AnyDb;
  const newTable = sql.id(target.schema, target.newTable);
  const oldTable = sql.id(target.schema, 'posthog_person');
  const captured = await captureBatch(
    target,
    handle,
    ROWS_MODE && full ? ['ranges', 'rows'] : ['ranges'],
  );
  const { after, end } = captured;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  baselineBackendPid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0]
    ?.pid as number;
  try {
    const replaced = (text: string, what: string, by: string) => {
      if (!text.includes(what)) throw new Error(`explain: "${what}" not found in the batch SQL`);
      return text.replace(what, by);
    };
    const conflictClause = 'ON CONFLICT (team_id, id) DO NOTHING';
    // The least a keyset batch can do: the same rows, no lock, no conflict check, no checkpoint.
    const minimal = sql`INSERT INTO ${newTable} (${copyable})
      SELECT ${copyable} FROM ${oldTable} AS o
      WHERE (o.team_id, o.id) > (${after.team}::int8, ${after.id}::int8)
        AND (o.team_id, o.id) <= (${end.team}::int8, ${end.id}::int8)
      ORDER BY o.team_id, o.id LIMIT ${EXPLAIN_ROWS}`.compile(db);
    const v = (
      label: string,
      text: string,
      params: readonly unknown[],
      generic = false,
    ): Variant => ({ label, sql: text, params, settings: BATCH_SETTINGS, generic });
    const variants: Variant[] = [];
    for (const s of captured.statements) {
      // In 'ranges' mode the range row's lock before the statement is not explained (it waits
      // for nothing here).
      const label = `as shipped, ${modeLabel(s.lockMode)}${s.lockMode === 'rows' ? ' (FOR SHARE OF o)' : ''}`;
      variants.push(v(label, s.sql, s.params));
      if (s.lockMode === 'ranges')
        variants.push(v(`${label}, generic plan`, s.sql, s.params, true));
    }
    const unlocked = captured.statements.find((s) => s.lockMode === 'ranges');
    if (full && unlocked) {
      // What a batch sends when its window already holds a copy, or after a 23505 in its range.
      const withArbiter = replaced(
        replaced(unlocked.sql, 'NOT (SELECT found FROM window_in_new)', 'false'),
        '(SELECT found FROM window_in_new)',
        'true',
      );
      variants.push(
        v(
          `${modeLabel('ranges')}, with the arbiter (${conflictClause}), as when the window holds a copy`,
          withArbiter,
          unlocked.params,
        ),
        v(
          `${modeLabel('ranges')}, with every unique index as arbiter (ON CONFLICT DO NOTHING)`,
          replaced(withArbiter, conflictClause, 'ON CONFLICT DO NOTHING'),
          unlocked.params,
        ),
        v(
          'plain keyset INSERT ... SELECT ... LIMIT (no lock, no conflict check, no checkpoint)',
          minimal.sql,
          [...minimal.parameters],
        ),
      );
    }

    const explainOnce = async (variant: Variant) => {
      await client.query('CHECKPOINT');
      await client.query('BEGIN');
      try {
        await client.query(`TRUNCATE ${quoted(target.schema, target.newTable)}`);
        for (const setting of variant.settings) {
          const [name, value] = setting.split('=');
          await client.query(`SET LOCAL ${name} = ${value}`);
        }
        let result: pg.QueryResult;
        if (variant.generic) {
          await client.query('SET LOCAL plan_cache_mode = force_generic_plan');
          await client.query(`PREPARE bench_backfill_batch AS ${variant.sql}`);
          result = await client.query(
            `EXPLAIN (ANALYZE, BUFFERS, WAL) EXECUTE bench_backfill_batch(${variant.params.map(literal).join(', ')})`,
          );
        } else {
          result = await client.query(`EXPLAIN (ANALYZE, BUFFERS, WAL) ${variant.sql}`, [
            ...variant.params,
          ]);
        }
        return result.rows.map((r: Record<string, unknown>) => String(r['QUERY PLAN'])).join('\n');
      } finally {
        await client.query('ROLLBACK');
        if (variant.generic) await client.query('DEALLOCATE ALL');
      }
    };
    const results: VariantResult[] = variants.map((x) => ({
      label: x.label,
      ms: [],
      wal: '',
      buffers: '',
      shape: '',
      plan: '',
    }));
    const repeats = full ? 3 : 1;
    for (let repeat = 0; repeat < repeats; repeat++) {
      for (let k = 0; k < variants.length; k++) {
        const i = (k + repeat) % variants.length;
        const r = results[i] as VariantResult;
        const plan = await explainOnce(variants[i] as Variant);
        r.ms.push(Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1] ?? Number.NaN));
        if (repeat === 0) {
          r.plan = plan;
          r.wal = /WAL: ([^\n]*)/.exec(plan)?.[1]?.trim() ?? '';
          r.buffers = /Buffers: ([^\n]*)/.exec(plan)?.[1]?.trim() ?? '';
          r.shape = scanShape(plan);
        }
      }
    }
    return { target, rows: EXPLAIN_ROWS, after, end, variants: results };
  } finally {
    await client.end().catch(() => {});
    baselineBackendPid = undefined;
    await captured.release();
    await sql`TRUNCATE ${newTable}`.execute(db).catch(() => {});
  }
}

/** How the batch reads the old table: which scan, how many rows, and whether it sorts them. */
function scanShape(plan: string): string {
  const scan =
    /(Index Only Scan|Index Scan|Seq Scan|Bitmap Heap Scan)(?: using (\S+))? on posthog_person o(?=\s)[^\n]*rows=(\d+) loops=\d+\)/.exec(
      plan,
    );
  // Never executed: the batch's lease check failed, so the figures are of an empty batch.
  const idle = / on posthog_person o\s[^\n]*\(never executed\)/.test(plan);
  const what = scan
    ? `${scan[1]}${scan[2] ? ` on ${scan[2]}` : ''}, ${int(Number(scan[3]))} rows read`
    : idle
      ? 'NOT EXECUTED (no lease)'
      : '?';
  const sort =
    /(Incremental Sort|Sort)\s+\(cost[^\n]*\n(?:[^\n]*\n)*?\s*Sort Key: o\.team_id, o\.id/.exec(
      plan,
    );
  if (!sort) return `${what}, no sort`;
  const disk = /Sort Method: external merge\s+(?:Average )?Disk: (\d+)kB/.exec(plan);
  return `${what}, then ${sort[1]}${disk ? ` (spills ${int(Number(disk[1]) / 1024)} MB to disk)` : ''}`;
}

const quoted = (schema: string, table: string) =>
  `"${schema.replaceAll('"', '""')}"."${table.replaceAll('"', '""')}"`;

/** A parameter as an SQL literal of unknown type (as pg sends it: the server infers the type). */
function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  return `'${String(value).replaceAll("'", "''")}'`;
}

/** The `CTE batch` part of a plan (the old-table read). */
function batchCte(plan: string): string {
  const lines = plan.split('\n');
  const start = lines.findIndex((l) => /^\s*CTE batch$/.test(l));
  if (start < 0) return plan;
  const indent = (lines[start] as string).search(/\S/);
  const end = lines.findIndex(
    (l, i) => i > start && /^\s*CTE /.test(l) && l.search(/\S/) === indent,
  );
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

function printExplain(e: ExplainSummary): void {
  console.log(
    `## One batch of ${int(e.rows)} rows, ${e.target.label} rows: EXPLAIN (ANALYZE, BUFFERS, WAL)\n`,
  );
  console.log(
    `- keys after (${e.after.team}, ${e.after.id}) up to (${e.end.team}, ${e.end.id}), the first range of the plan; ` +
      'each statement on an empty new table after a CHECKPOINT (the first change of an old page after a checkpoint ' +
      'writes a full-page image, as in a long backfill); alternating; generic plan = PREPARE + plan_cache_mode=force_generic_plan ' +
      '(what a named prepared statement may switch to after 5 executions); every statement with ' +
      `${BATCH_SETTINGS.join(', ')} (set by the batch's transaction); in ${modeLabel('ranges')} the batch locks its range row ` +
      'in a statement before this one, not explained\n',
  );
  const table = [
    '| statement | batch read of the old table | execution | WAL | buffers |',
    '|---|---|---|---|---|',
  ];
  for (const v of e.variants) {
    const ms =
      v.ms.length > 1
        ? `${v.ms.map((m) => m.toFixed(0)).join(', ')} ms (median ${median(v.ms).toFixed(0)})`
        : `${(v.ms[0] ?? Number.NaN).toFixed(0)} ms`;
    table.push(`| ${v.label} | ${v.shape} | ${ms} | ${v.wal} | ${v.buffers} |`);
  }
  console.log(table.join('\n'));
  if (EXPLAIN > 1) {
    for (const v of e.variants) {
      console.log(`\n### ${e.target.label}, ${v.label}\n\n\`\`\`\n${v.plan}\n\`\`\``);
    }
  } else {
    const generic = e.variants.find((v) => v.label.endsWith('generic plan'));
    if (generic) {
      console.log(
        `\n### ${e.target.label}, ${generic.label}: the batch read (CTE batch)\n\n\`\`\`\n${batchCte(generic.plan)}\n\`\`\``,
      );
    }
  }
  console.log('');
}

main().catch(async (err) => {
  console.error(err);
  await dropSchemas();
  process.exitCode = 1;
});

/**
 * ETA benchmark: how well the backfill's ETA predicts its end, on a real server.
 *
 *   npx tsx bench/eta.ts       (or `npm run bench:eta`)
 *
 * Needs a real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
 * Creates uniquely named schemas and drops them at the end, also on failure and on Ctrl-C.
 *
 * Setup: two old tables of BENCH_ROWS persons over BENCH_TEAMS teams (`seedPersons`, chunks of
 * the teams interleaved as in bench/backfill.ts). Uniform: ~0.5 KB of properties each. Skewed:
 * the first tenth of the teams (one tenth of the rows, the first ranges of the plan) hot, with
 * BENCH_HOT_BYTES of properties each, so ranges differ in cost per row.
 *
 * Cases, each on an empty new table (TRUNCATE, `resetBackfill()`, CHECKPOINT before), each a
 * `backfill({ workers: BENCH_WORKERS })` in this process while a second migration object on its
 * own connection pool (an operator's `status --watch`) polls `backfillStatus()` every
 * BENCH_SAMPLE_MS and records the predicted finish (`now + eta.seconds`) and its range:
 * - uniform: the uniform rows;
 * - skewed: the skewed rows;
 * - ceiling: the uniform rows with `maxRowsPerSecond` BENCH_CEILING_1, raised to
 *   BENCH_CEILING_2 (`setBackfillRate`) once 30% of the rows are read;
 * - pause: the uniform rows, paused (`pauseBackfill`) for BENCH_PAUSE_S once 30% are read;
 * - writes: the uniform rows while this process writes through a third migration object's
 *   repository at BENCH_WRITES_PER_S (updates of seeded persons 70%, creates 30%).
 *
 * Error of one prediction: |predicted finish - actual finish| / (actual finish - start), the
 * start being the backfill() call. Worst error over the predictions made once 10% (then 50%)
 * of the rows were read; for the ceiling and pause cases only over those made after the change
 * (no estimate can foresee an operator's decision; the ones made before are shown apart). The
 * same for the baseline in the same run: `etaSeconds`, rows to go / the workers' smoothed rate.
 * Goal: within 10% after 10% of the rows on uniform rows, within 20% in every other case.
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_ROWS [1000000]   BENCH_TEAMS [100]   BENCH_CHUNK [1000]   BENCH_HOT_BYTES [4000]
 *   BENCH_WORKERS [2]      BENCH_SAMPLE_MS [500]
 *   BENCH_CEILING_1 [15000]  BENCH_CEILING_2 [40000]  BENCH_PAUSE_S [10]  BENCH_WRITES_PER_S [300]
 *   BENCH_CASES [uniform,skewed,ceiling,pause,writes]
 *   BENCH_ROUNDS [1]: run every case this many times; the report adds, per case, each round's
 *   worst error after 10% and how many rounds met the goal (one run can be lucky or not).
 *   BENCH_TRACE [unset]: a directory; each case writes `<case>.json` there (`<case>-<round>.json`
 *   from the second round on): every status the watcher read with its time, and the batches,
 *   for `bench/eta-replay.ts` to replay estimators on offline.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import type { AnyDb } from '../src/db/any-db.js';
import {
  type BackfillStatus,
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonsMigration,
} from '../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import { envNumber, interleavedSeedJobs, rng } from './support.js';

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROWS = Math.max(1_000, Math.round(envNumber('BENCH_ROWS', 1_000_000)));
const TEAMS = Math.max(10, Math.round(envNumber('BENCH_TEAMS', 100)));
const CHUNK = Math.max(100, Math.round(envNumber('BENCH_CHUNK', 1_000)));
const HOT_BYTES = envNumber('BENCH_HOT_BYTES', 4_000);
const WORKERS = Math.max(1, Math.round(envNumber('BENCH_WORKERS', 2)));
const SAMPLE_MS = Math.max(100, envNumber('BENCH_SAMPLE_MS', 500));
const CEILING_1 = envNumber('BENCH_CEILING_1', 15_000);
const CEILING_2 = envNumber('BENCH_CEILING_2', 40_000);
const PAUSE_MS = envNumber('BENCH_PAUSE_S', 10) * 1_000;
const WRITES_PER_S = envNumber('BENCH_WRITES_PER_S', 300);
const CASES = (process.env.BENCH_CASES ?? 'uniform,skewed,ceiling,pause,writes').split(',');
const TRACE_DIR = process.env.BENCH_TRACE || undefined;
const ROUNDS = Math.max(1, Math.round(envNumber('BENCH_ROUNDS', 1)));

const tag = `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
const schemas = { uniform: `bench_eta_u_${tag}`, skewed: `bench_eta_s_${tag}` };
const controlSchema = `bench_eta_ctl_${tag}`;

const log = (line: string) => console.error(`[bench] ${line}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (x: number | undefined) => (x === undefined ? '-' : `${(x * 100).toFixed(1)}%`);

interface Prediction {
  /** ms since the backfill() call. */
  readonly t: number;
  readonly fraction: number;
  /** Predicted finish, ms since the call: now + eta.seconds (undefined while unknown). */
  readonly finish: number | undefined;
  readonly low: number | undefined;
  readonly high: number | undefined;
  readonly settling: boolean;
  /** The baseline: now + etaSeconds (rows to go / the smoothed rate). */
  readonly baseline: number | undefined;
  /** Taken after the case's change (ceiling raised, pause over); always true without one. */
  readonly afterChange: boolean;
}

/** One status the watcher read, for offline replay (bench/eta-replay.ts). */
export interface EtaTraceSample {
  /** ms since the backfill() call. */
  readonly t: number;
  readonly wallMs: number;
  /** Taken after the case's change (ceiling raised, pause over); always true without one. */
  readonly afterChange: boolean;
  readonly status: Omit<BackfillStatus, 'eta'>;
}

/** One batch of the backfill as its `backfill:batch` event told it (`t`: when it was emitted). */
export interface EtaTraceBatch {
  readonly t: number;
  readonly workerId: string;
  readonly rangeId: number;
  readonly scanned: number;
  readonly batchSize: number;
  readonly ms: number;
}

/** A case's trace: its statuses, its batches and when backfill() actually returned. */
export interface EtaTrace {
  readonly name: string;
  readonly ms: number;
  readonly rows: number;
  readonly workers: number;
  readonly samples: EtaTraceSample[];
  readonly batches?: EtaTraceBatch[];
}

interface CaseResult {
  readonly name: string;
  /** 1 for the first run of the case, 2 for the second (BENCH_ROUNDS), ... */
  readonly round: number;
  readonly ms: number;
  readonly predictions: Prediction[];
  readonly note: string;
}

// ------------------------------------------------------------------ setup

async function seed(handle: DatabaseHandle, schema: string, hot: boolean): Promise<void> {
  await createPostHogPersonsSchema(handle, { schema });
  for (const job of interleavedSeedJobs(ROWS, TEAMS, CHUNK)) {
    const isHot = hot && job.teamId <= TEAMS / 10;
    await seedPersons(handle, {
      schema,
      teamId: job.teamId,
      count: job.count,
      prefix: `c${job.chunk}`,
      propertiesBytes: isHot ? HOT_BYTES : 500,
    });
  }
  await sql`VACUUM ANALYZE ${sql.id(schema, 'posthog_person')}`.execute(handle.db);
}

function migrationOf(handle: DatabaseHandle, schema: string): PersonsMigration {
  return createPersonsMigration({
    db: handle,
    schema,
    controlSchema,
    name: schema === schemas.uniform ? 'uniform' : 'skewed',
  });
}

async function emptyNewTable(handle: DatabaseHandle, migration: PersonsMigration): Promise<void> {
  await migration.resetBackfill().catch(() => {});
  const { schema } = migration.options;
  await sql`TRUNCATE ${sql.id(schema, 'posthog_person_new')}`.execute(handle.db);
  await sql`CHECKPOINT`.execute(handle.db);
}

// ------------------------------------------------------------------ one case

/** What a case does while its backfill runs: `change` is called once the change is done. */
type OnSample = (fraction: number, m: PersonsMigration, change: () => void) => Promise<void>;

/**
 * Runs one backfill while a watcher polls its status; `onSample` may act (raise the ceiling,
 * pause) and says when the case's change is done.
 */
async function runCase(
  name: string,
  round: number,
  handle: DatabaseHandle,
  schema: string,
  maxRowsPerSecond: number | undefined,
  onSample: OnSample,
  load?: (signal: AbortSignal) => Promise<string>,
): Promise<CaseResult> {
  const migration = migrationOf(handle, schema);
  await emptyNewTable(handle, migration);
  const watcherHandle = await openDatabase(url, { maxConnections: 2 });
  const watcher = migrationOf(watcherHandle, schema);
  const predictions: Prediction[] = [];
  const trace: EtaTraceSample[] = [];
  const batches: EtaTraceBatch[] = [];
  const stopLoad = new AbortController();
  const loadDone = load?.(stopLoad.signal);
  log(
    `${name}${round > 1 ? ` (round ${round})` : ''}: backfill of ${int(ROWS)} rows, ${WORKERS} workers`,
  );
  const start = performance.now();
  if (TRACE_DIR) {
    migration.events.on('backfill:batch', (b) => {
      batches.push({ t: performance.now() - start, ...b });
    });
  }
  let finished = false;
  let changed = false;
  let acting = false;
  const backfill = migration
    .backfill({ workers: WORKERS, ...(maxRowsPerSecond ? { maxRowsPerSecond } : {}) })
    .finally(() => {
      finished = true;
    });
  const sampler = (async () => {
    while (!finished) {
      await sleep(SAMPLE_MS);
      const s = await watcher.backfillStatus();
      if (finished || !s) continue;
      const t = performance.now() - start;
      const { eta: _eta, ...snapshot } = s;
      trace.push({ t, wallMs: Date.now(), afterChange: changed, status: snapshot });
      const fraction = s.rowsScanned / Math.max(1, s.rowsEstimated);
      const finish = s.eta.seconds === undefined ? undefined : t + s.eta.seconds * 1_000;
      predictions.push({
        t,
        fraction,
        finish,
        low: s.eta.lowSeconds === undefined ? undefined : t + s.eta.lowSeconds * 1_000,
        high: s.eta.highSeconds === undefined ? undefined : t + s.eta.highSeconds * 1_000,
        settling: s.eta.settling,
        baseline: s.etaSeconds === undefined ? undefined : t + s.etaSeconds * 1_000,
        afterChange: changed,
      });
      if (!changed && !acting) {
        // Not awaited: the watcher goes on polling during a pause, as an operator's would.
        acting = true;
        void onSample(fraction, migration, () => {
          changed = true;
        }).finally(() => {
          acting = false;
        });
      }
    }
  })();
  const result = await backfill;
  const ms = performance.now() - start;
  await sampler;
  stopLoad.abort();
  const note = (await loadDone) ?? '';
  await watcher.close();
  await watcherHandle.close();
  await migration.close();
  log(`${name}: ${(ms / 1_000).toFixed(1)} s, ${int(result.rowsCopied)} rows copied ${note}`);
  if (TRACE_DIR) {
    mkdirSync(TRACE_DIR, { recursive: true });
    const file: EtaTrace = { name, ms, rows: ROWS, workers: WORKERS, samples: trace, batches };
    const fileName = round > 1 ? `${name}-${round}.json` : `${name}.json`;
    writeFileSync(join(TRACE_DIR, fileName), JSON.stringify(file));
  }
  return { name, round, ms, predictions, note };
}

/** Writes through the repository at WRITES_PER_S until aborted; returns a summary. */
async function writeLoad(
  handle: DatabaseHandle,
  schema: string,
  signal: AbortSignal,
): Promise<string> {
  const writerHandle = await openDatabase(url, { maxConnections: 8 });
  const writer = migrationOf(writerHandle, schema);
  const repo = writer.repository();
  const { rows } = await sql<{ team_id: number; id: string }>`
    SELECT team_id, id::text AS id FROM ${sql.id(schema, 'posthog_person')}
    TABLESAMPLE BERNOULLI (1) REPEATABLE (7) LIMIT 5000`.execute(handle.db as AnyDb);
  const random = rng(7);
  let done = 0;
  let failed = 0;
  let inFlight = 0;
  let n = 0;
  const tickMs = 10;
  const perTick = (WRITES_PER_S * tickMs) / 1_000;
  let owed = 0;
  while (!signal.aborted) {
    await sleep(tickMs);
    owed += perTick;
    for (; owed >= 1 && inFlight < 16; owed--) {
      inFlight++;
      const person = rows[Math.floor(random() * rows.length)];
      const write =
        random() < 0.7 && person
          ? repo.updatePerson(person.team_id, person.id, { properties: { n: n++ } })
          : repo.createPerson({ teamId: 1 + (n % TEAMS), distinctIds: [`eta-${tag}-${n++}`] });
      write
        .then(
          () => done++,
          () => failed++,
        )
        .finally(() => inFlight--);
    }
    owed = Math.min(owed, perTick);
  }
  while (inFlight > 0) await sleep(10);
  await writer.close();
  await writerHandle.close();
  return `(${int(done)} writes during it, ${failed} failed)`;
}

// ------------------------------------------------------------------ report

function worstError(
  c: CaseResult,
  pick: (p: Prediction) => number | undefined,
  from: number,
  afterChangeOnly: boolean,
): number | undefined {
  let worst: number | undefined;
  for (const p of c.predictions) {
    const predicted = pick(p);
    if (predicted === undefined || p.fraction < from) continue;
    if (afterChangeOnly && !p.afterChange) continue;
    const error = Math.abs(predicted - c.ms) / c.ms;
    worst = Math.max(worst ?? 0, error);
  }
  return worst;
}

function coverage(c: CaseResult, afterChangeOnly: boolean): string {
  const judged = c.predictions.filter(
    (p) => p.fraction >= 0.1 && p.low !== undefined && (!afterChangeOnly || p.afterChange),
  );
  const inside = judged.filter((p) => (p.low ?? 0) <= c.ms && c.ms <= (p.high ?? 0));
  return judged.length ? `${Math.round((100 * inside.length) / judged.length)}%` : '-';
}

function report(all: CaseResult[]): void {
  const results = all.filter((c) => c.round === 1);
  console.log('\n## ETA benchmark (bench/eta.ts)\n');
  console.log(
    `${int(ROWS)} rows per table, ${WORKERS} workers, a prediction every ${SAMPLE_MS} ms; ` +
      `${cpus().length} cores, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' / ')} at the end.\n`,
  );
  console.log(
    '| case | took | worst error after 10% | after 30% | after 50% | baseline after 10% | after 30% | after 50% | actual end inside the range | goal |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const c of results) {
    const changeCase = c.name === 'ceiling' || c.name === 'pause';
    const goal = c.name === 'uniform' ? 0.1 : 0.2;
    const e10 = worstError(c, (p) => p.finish, 0.1, changeCase);
    const e30 = worstError(c, (p) => p.finish, 0.3, changeCase);
    const e50 = worstError(c, (p) => p.finish, 0.5, changeCase);
    const b10 = worstError(c, (p) => p.baseline, 0.1, changeCase);
    const b30 = worstError(c, (p) => p.baseline, 0.3, changeCase);
    const b50 = worstError(c, (p) => p.baseline, 0.5, changeCase);
    const met = e10 !== undefined && e10 <= goal ? 'met' : 'missed';
    console.log(
      `| ${c.name} | ${(c.ms / 1_000).toFixed(1)} s | ${pct(e10)} | ${pct(e30)} | ${pct(e50)} | ${pct(b10)} | ${pct(b30)} | ${pct(b50)} | ${coverage(c, changeCase)} | within ${goal * 100}%: ${met} |`,
    );
  }
  for (const c of results) {
    if (c.name === 'ceiling' || c.name === 'pause') {
      const before = worstError(
        { ...c, predictions: c.predictions.filter((p) => !p.afterChange) },
        (p) => p.finish,
        0.1,
        false,
      );
      console.log(
        `\n${c.name}: predictions made before the change were off by up to ${pct(before)} (they cannot know it).`,
      );
    }
    if (c.note) console.log(`${c.name}: ${c.note}`);
  }
  console.log(
    '\nPredicted duration (elapsed + ETA) at each tenth of the rows, against the actual:\n',
  );
  console.log(
    `| case | actual | ${[1, 2, 3, 4, 5, 6, 7, 8, 9].map((d) => `${d * 10}%`).join(' | ')} |`,
  );
  console.log(`|---|---|${'---|'.repeat(9)}`);
  for (const c of results) {
    const cells = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((d) => {
      const p = c.predictions.find((q) => q.fraction >= d / 10 && q.finish !== undefined);
      return p?.finish === undefined
        ? '-'
        : `${(p.finish / 1_000).toFixed(1)}${p.settling ? '*' : ''}`;
    });
    console.log(`| ${c.name} | ${(c.ms / 1_000).toFixed(1)} s | ${cells.join(' | ')} |`);
  }
  console.log('\n(* still settling)');
  if (ROUNDS > 1) reportRounds(all);
}

/** Per case: each round's worst error after 10% (the goal's measure), and how many met it. */
function reportRounds(all: CaseResult[]): void {
  console.log(`\nEach case ${ROUNDS} times, worst error after 10% of the rows in each round:\n`);
  console.log('| case | each round | median | worst | rounds within the goal |');
  console.log('|---|---|---|---|---|');
  for (const name of [...new Set(all.map((c) => c.name))]) {
    const changeCase = name === 'ceiling' || name === 'pause';
    const goal = name === 'uniform' ? 0.1 : 0.2;
    const errors = all
      .filter((c) => c.name === name)
      .map((c) => worstError(c, (p) => p.finish, 0.1, changeCase) ?? Number.POSITIVE_INFINITY);
    const sorted = [...errors].sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    const met = errors.filter((e) => e <= goal).length;
    console.log(
      `| ${name} | ${errors.map((e) => pct(e)).join(', ')} | ${pct(median)} | ${pct(sorted.at(-1))} | ${met} of ${errors.length} (within ${goal * 100}%) |`,
    );
  }
}

// ------------------------------------------------------------------ main

async function cleanup(): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    for (const s of [schemas.uniform, schemas.skewed, controlSchema]) {
      await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    }
    log('dropped the bench schemas');
  } finally {
    await client.end().catch(() => {});
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void cleanup().finally(() => process.exit(130));
  });
}

async function prepared(handle: DatabaseHandle, schema: string, hot: boolean): Promise<void> {
  const t0 = performance.now();
  await seed(handle, schema, hot);
  const migration = migrationOf(handle, schema);
  await migration.install();
  await migration.prepare();
  await migration.startDualRead();
  await migration.close();
  log(`seeded and prepared ${schema} in ${((performance.now() - t0) / 1_000).toFixed(1)} s`);
}

/** One run of every case asked for. */
async function runRound(handle: DatabaseHandle, round: number): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  const never: OnSample = async () => {};
  if (CASES.includes('uniform')) {
    results.push(await runCase('uniform', round, handle, schemas.uniform, undefined, never));
  }
  if (CASES.includes('skewed')) {
    results.push(await runCase('skewed', round, handle, schemas.skewed, undefined, never));
  }
  if (CASES.includes('ceiling')) {
    results.push(
      await runCase(
        'ceiling',
        round,
        handle,
        schemas.uniform,
        CEILING_1,
        async (fraction, m, change) => {
          if (fraction < 0.3) return;
          await m.setBackfillRate(CEILING_2);
          change();
        },
      ),
    );
  }
  if (CASES.includes('pause')) {
    results.push(
      await runCase(
        'pause',
        round,
        handle,
        schemas.uniform,
        undefined,
        async (fraction, m, change) => {
          if (fraction < 0.3) return;
          await m.pauseBackfill();
          await sleep(PAUSE_MS);
          await m.resumeBackfill();
          change();
        },
      ),
    );
  }
  if (CASES.includes('writes')) {
    results.push(
      await runCase('writes', round, handle, schemas.uniform, undefined, never, (signal) =>
        writeLoad(handle, schemas.uniform, signal),
      ),
    );
  }
  return results;
}

async function main(): Promise<void> {
  const handle = await openDatabase(url, { maxConnections: WORKERS + 4 });
  const results: CaseResult[] = [];
  try {
    await prepared(handle, schemas.uniform, false);
    if (CASES.includes('skewed')) await prepared(handle, schemas.skewed, true);
    for (let round = 1; round <= ROUNDS; round++) {
      results.push(...(await runRound(handle, round)));
    }
    report(results);
  } finally {
    await handle.close().catch(() => {});
    await cleanup();
  }
}

await main();

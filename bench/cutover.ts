/**
 * Cutover benchmark: what writers see while the migration switches phases under load.
 *
 *   npx tsx bench/cutover.ts        (or `npm run bench:cutover`)
 *
 * Needs a real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
 * Creates two uniquely named schemas (the persons tables, the control schema) and drops them at
 * the end, also on failure and on Ctrl-C / SIGTERM (the writer processes are stopped first).
 * Changes no server setting.
 *
 * Setup: `createPostHogPersonsSchema` + `seedPersons` (BENCH_ROWS persons over BENCH_TEAMS teams,
 * ~0.5 KB of properties, seeded in chunks with the teams' chunks interleaved, as in
 * bench/backfill.ts), `install()`, `prepare()`, VACUUM ANALYZE; each writer is given
 * BENCH_OWNED seeded persons of its own (a random sample).
 *
 * Load: BENCH_WRITERS writer processes (`bench/cutover-writer.ts`), each a service instance with
 * its own pool and its own `createPersonsMigration` on the same schemas, writing through
 * `repository()` on a fixed schedule (10 ms ticks, BENCH_WRITES_PER_S in all, at most
 * BENCH_IN_FLIGHT writes in flight per process: a tick finding that many is skipped and
 * counted). The mix: createPerson 30%, updatePerson 40%, addDistinctId 15%, deletePerson 10%, a
 * merge 5% (moveDistinctIds + deletePerson in one `inTransaction`). Every writer reports every
 * write (start time, latency, error code) on stdout; the parent aggregates them by time window.
 *
 * Lifecycle, driven by this process on a pool of its own while the writers run:
 * `startDualRead()`, `backfill({ workers: BENCH_BACKFILL_WORKERS })`, `verify()` (then, if it is
 * not clean, `verify({ repair: true })`, reported), `cutover()`, `rollback()`, `cutover()` again,
 * `finalize()`, and (not a switch, reported apart) `dropRetiredTable()`. Before each switch the
 * bench waits BENCH_BEFORE_S with nothing else running, and after it BENCH_AFTER_MS.
 *
 * Measured per switch: how long the call took end to end; the writes of the BENCH_BEFORE_S
 * seconds before it (started and finished before the call) and the writes during it (in flight
 * at any moment from the call's start to BENCH_AFTER_MS after it returned: the first writes on
 * the new phase, re-planned statements and stale phase caches count as the switch's); their
 * latency p50 / p99 / max, the failed (rejected) writes with their error codes, the writes
 * skipped because the in-flight cap was full.
 *
 * Checked at the end, on the consolidated table, against what every writer acknowledged (exact,
 * not a sample): every acknowledged create and update is there with its last acknowledged
 * content (`properties.bench_seq`), no acknowledged delete is readable, every distinct id added
 * points at its person (or is gone with a deleted person), no distinct id is an orphan, and the
 * row count moved by exactly creates - deletes (when no write failed). Acknowledged writes whose
 * answer contradicted the writer's own knowledge (an update answered "no such person"...) are
 * counted as anomalies. The bench exits 1 when any of these checks fails (the goal is judged
 * and printed, not enforced).
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_ROWS [1000000]     BENCH_TEAMS [100]       BENCH_PROPERTIES_BYTES [500]
 *   BENCH_CHUNK [1000]       rows per seedPersons call
 *   BENCH_WRITERS [4]        writer processes
 *   BENCH_WRITES_PER_S [1000] scheduled writes per second, all writers together
 *   BENCH_IN_FLIGHT [32]     writes in flight per writer at most
 *   BENCH_WRITER_POOL [6]    connections per writer's pool
 *   BENCH_OWNED [5000]       seeded persons each writer updates, deletes and merges
 *   BENCH_WARMUP_S [5]       writes before anything is measured (pools filling, first plans)
 *   BENCH_BEFORE_S [5]       quiet seconds before each switch (the "before" window)
 *   BENCH_AFTER_MS [1000]    the "during" window goes on this long after a switch returns
 *   BENCH_BACKFILL_WORKERS [2]
 *   BENCH_FINALIZE_LOCK_TIMEOUT_MS  finalize()'s lockTimeoutMs (default: the library's, 200)
 *   BENCH_SEED [42]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import pg from 'pg';
import type { AnyDb } from '../src/db/any-db.js';
import {
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonsMigration,
} from '../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import type { FinalReport, OpName, WriterConfig } from './cutover-writer.js';
import { envNumber, interleavedSeedJobs } from './support.js';

const env = envNumber;

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROWS = Math.max(1_000, Math.round(env('BENCH_ROWS', 1_000_000)));
const TEAMS = Math.max(1, Math.round(env('BENCH_TEAMS', 100)));
const PROPERTIES_BYTES = env('BENCH_PROPERTIES_BYTES', 500);
const CHUNK = Math.max(100, Math.round(env('BENCH_CHUNK', 1_000)));
const WRITERS = Math.max(1, Math.round(env('BENCH_WRITERS', 4)));
const WRITES_PER_S = Math.max(1, env('BENCH_WRITES_PER_S', 1_000));
const IN_FLIGHT = Math.max(1, Math.round(env('BENCH_IN_FLIGHT', 32)));
const WRITER_POOL = Math.max(1, Math.round(env('BENCH_WRITER_POOL', 6)));
const OWNED = Math.max(10, Math.round(env('BENCH_OWNED', 5_000)));
const BEFORE_MS = env('BENCH_BEFORE_S', 5) * 1000;
const AFTER_MS = env('BENCH_AFTER_MS', 1_000);
const WARMUP_MS = env('BENCH_WARMUP_S', 5) * 1000;
const BACKFILL_WORKERS = Math.max(1, Math.round(env('BENCH_BACKFILL_WORKERS', 2)));
const FINALIZE_LOCK_TIMEOUT_MS = process.env.BENCH_FINALIZE_LOCK_TIMEOUT_MS
  ? Math.round(env('BENCH_FINALIZE_LOCK_TIMEOUT_MS', 200))
  : undefined;
const SEED = Math.round(env('BENCH_SEED', 42));

const GOAL = { maxMs: 250, failed: 0, writesPerS: 1_000 };
const MIX: Record<OpName, number> = {
  create: 30,
  update: 40,
  addDistinctId: 15,
  delete: 10,
  merge: 5,
};

const stamp = `${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;
const schema = `bench_cutover_${stamp}`;
const controlSchema = `bench_cutover_ctl_${stamp}`;
const writerPath = fileURLToPath(new URL('./cutover-writer.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const oldTable = 'posthog_person';
const newTable = 'posthog_person_new';
const distinctIdsTable = 'posthog_persondistinctid';

// ------------------------------------------------------------------ small helpers

/** The writers' clock: epoch ms with sub-ms precision, comparable across processes. */
const clock = () => performance.timeOrigin + performance.now();
const seconds = (since: number) => `${((clock() - since) / 1000).toFixed(1)} s`;
const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (v: number) =>
  Number.isNaN(v) ? '-' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
const duration = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${ms(v)} ms`);

/** Nearest-rank quantile of sorted values. */
function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
}

// ------------------------------------------------------------------ writers

/** One write as a writer reported it. */
interface Op {
  readonly t: number;
  readonly end: number;
  readonly op: string;
  /** '' when acknowledged, else the error code. */
  readonly error: string;
}

interface ErrorDetail {
  readonly code: string;
  readonly op: string;
  readonly t: number;
  readonly message: string;
}

interface Anomaly {
  readonly kind: string;
  readonly team: number;
  readonly id: string | undefined;
  readonly t: number;
}

const ops: Op[] = [];
const skips: number[] = [];
const details = new Map<string, ErrorDetail>();
const anomalies: Anomaly[] = [];

class WriterProcess {
  readonly ready: Promise<void>;
  readonly final: Promise<FinalReport>;
  readonly exited: Promise<number | null>;
  private stderr = '';

  constructor(
    readonly index: number,
    private readonly child: ChildProcess,
  ) {
    let onReady: () => void = () => {};
    let onFinal: (report: FinalReport) => void = () => {};
    this.ready = new Promise((resolve) => {
      onReady = resolve;
    });
    this.final = new Promise((resolve) => {
      onFinal = resolve;
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4_000);
    });
    this.exited = new Promise((resolve) => child.once('close', (code) => resolve(code)));
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on('line', (text) => {
      try {
        this.line(text, onReady, onFinal);
      } catch {
        // Not JSON (a stray print, a cut line): kept with stderr for the error messages.
        this.stderr = `${this.stderr}[stdout] ${text.slice(0, 300)}\n`.slice(-4_000);
      }
    });
  }

  private line(text: string, onReady: () => void, onFinal: (report: FinalReport) => void): void {
    if (text.startsWith('[')) {
      const [t, took, op, error] = JSON.parse(text) as [number, number, string, string];
      if (op === 's') skips.push(t);
      else ops.push({ t, end: t + took, op, error });
      return;
    }
    const message = JSON.parse(text) as {
      ready?: number;
      detail?: ErrorDetail;
      anomaly?: Anomaly;
      final?: FinalReport;
    };
    if (message.ready !== undefined) onReady();
    if (message.detail && !details.has(message.detail.code)) {
      details.set(message.detail.code, message.detail);
    }
    if (message.anomaly) anomalies.push(message.anomaly);
    if (message.final) onFinal(message.final);
  }

  static start(index: number, config: WriterConfig): WriterProcess {
    const child = spawn(process.execPath, ['--import', 'tsx', writerPath], {
      cwd: repoRoot,
      env: { ...process.env, DEBUG: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin?.write(`${JSON.stringify(config)}\n`);
    return new WriterProcess(index, child);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get stderrTail(): string {
    return this.stderr;
  }

  send(command: 'go' | 'stop'): void {
    this.child.stdin?.write(`${command}\n`);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
  }
}

/** Resolves with `promise`, or rejects when the writer exits first or after `timeoutMs`. */
async function fromWriter<T>(
  writer: WriterProcess,
  promise: Promise<T>,
  what: string,
  timeoutMs: number,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const exited = writer.exited.then((code) => {
    throw new Error(`writer ${writer.index} exited (${code}) before ${what}: ${writer.stderrTail}`);
  });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`writer ${writer.index}: no ${what} in ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------ cleanup

let cleanedUp = false;
const writers: WriterProcess[] = [];

async function cleanup(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const w of writers) w.kill();
  await Promise.race([Promise.all(writers.map((w) => w.exited)), sleep(3_000)]);
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    for (const s of [schema, controlSchema])
      await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    log(`dropped schemas ${schema}, ${controlSchema}`);
  } catch (err) {
    log(`could not drop schemas ${schema}, ${controlSchema}: ${(err as Error).message}`);
  } finally {
    await client.end().catch(() => {});
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}
process.once('uncaughtException', (err) => {
  log(`uncaught: ${err.stack ?? err.message}; cleaning up`);
  void cleanup().finally(() => process.exit(1));
});

// ------------------------------------------------------------------ setup

async function seed(handle: DatabaseHandle): Promise<void> {
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

/** A random sample of seeded persons, OWNED per writer, dealt out round robin. */
async function ownedPersons(db: AnyDb): Promise<[number, string][][]> {
  const percent = Math.min(100, ((WRITERS * OWNED * 1.2) / ROWS) * 100);
  const { rows } = await sql<{ team_id: number; id: string }>`
    SELECT team_id, id::text AS id FROM ${sql.id(schema, oldTable)}
    TABLESAMPLE BERNOULLI (${sql.lit(percent)}) REPEATABLE (${sql.lit(SEED)})
    LIMIT ${WRITERS * OWNED}`.execute(db);
  const owned: [number, string][][] = Array.from({ length: WRITERS }, () => []);
  for (const [i, row] of rows.entries()) owned[i % WRITERS]?.push([row.team_id, row.id]);
  return owned;
}

// ------------------------------------------------------------------ steps and windows

interface Step {
  readonly label: string;
  /** A phase switch (judged by the goal) or another step (shown apart). */
  readonly kind: 'switch' | 'step';
  readonly start: number;
  readonly end: number;
  readonly error: string | undefined;
  readonly note: string;
}

const steps: Step[] = [];

async function step(
  label: string,
  kind: Step['kind'],
  run: () => Promise<string | undefined>,
): Promise<boolean> {
  if (kind === 'switch') await sleep(BEFORE_MS);
  log(`${label}...`);
  const start = clock();
  let error: string | undefined;
  let note = '';
  try {
    note = (await run()) ?? '';
  } catch (err) {
    const e = err as { code?: string; message?: string };
    error = `${e.code ?? 'Error'}: ${e.message ?? String(err)}`;
  }
  const end = clock();
  steps.push({ label, kind, start, end, error, note });
  log(
    `${label}: ${duration(end - start)}${error ? ` FAILED ${error}` : ''}${note ? ` (${note})` : ''}`,
  );
  await sleep(AFTER_MS);
  return error === undefined;
}

interface Window {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly failed: number;
  readonly slow: number;
  readonly skipped: number;
  readonly codes: Map<string, number>;
}

function windowOf(selected: readonly Op[], skippedCount: number): Window {
  const latencies = selected.map((o) => o.end - o.t).sort((a, b) => a - b);
  const codes = new Map<string, number>();
  for (const o of selected) if (o.error) codes.set(o.error, (codes.get(o.error) ?? 0) + 1);
  return {
    n: selected.length,
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    max: latencies.at(-1) ?? Number.NaN,
    failed: selected.filter((o) => o.error).length,
    slow: latencies.filter((l) => l >= GOAL.maxMs).length,
    skipped: skippedCount,
    codes,
  };
}

/** Writes started and finished in the BEFORE_MS before the step. */
const before = (s: Step) =>
  windowOf(
    ops.filter((o) => o.t >= s.start - BEFORE_MS && o.end <= s.start),
    skips.filter((t) => t >= s.start - BEFORE_MS && t < s.start).length,
  );

/** Writes in flight at any moment from the step's start to AFTER_MS after its end. */
const during = (s: Step) =>
  windowOf(
    ops.filter((o) => o.t < s.end + AFTER_MS && o.end > s.start),
    skips.filter((t) => t >= s.start && t < s.end + AFTER_MS).length,
  );

// ------------------------------------------------------------------ the lost-write check

interface CheckResult {
  readonly table: string;
  readonly checkedPersons: number;
  readonly checkedDistinctIds: number;
  readonly uncertain: number;
  readonly mismatches: Map<string, number>;
  readonly examples: string[];
  readonly orphans: number;
  readonly rowCount: { expected: number | undefined; actual: number };
}

async function checkAcknowledged(
  db: AnyDb,
  table: string,
  reports: readonly FinalReport[],
  seededRows: number,
): Promise<CheckResult> {
  const mismatches = new Map<string, number>();
  const examples: string[] = [];
  const miss = (kind: string, key: string) => {
    mismatches.set(kind, (mismatches.get(kind) ?? 0) + 1);
    if (examples.length < 20) examples.push(`${kind} ${key}`);
  };
  const persons = reports
    .flatMap((r) => r.persons)
    .filter(([, , , state]) => state !== 'uncertain');
  const uncertain = reports.flatMap((r) => r.persons).length - persons.length;
  for (let i = 0; i < persons.length; i += 5_000) {
    const slice = persons.slice(i, i + 5_000);
    const { rows } = await sql<{ k: number; present: boolean; seq: string | null }>`
      SELECT q.k, p.id IS NOT NULL AS present, p.properties->>'bench_seq' AS seq
      FROM unnest(${slice.map((p) => p[0])}::int[], ${slice.map((p) => p[1])}::bigint[])
        WITH ORDINALITY AS q(team_id, id, k)
      LEFT JOIN ${sql.id(schema, table)} p ON p.team_id = q.team_id AND p.id = q.id`.execute(db);
    for (const row of rows) {
      const [team, id, seq, state] = slice[Number(row.k) - 1] as FinalReport['persons'][number];
      const key = `(${team}, ${id})`;
      if (state === 'deleted') {
        if (row.present) miss('deleted person readable', key);
      } else if (!row.present) miss('acknowledged person missing', key);
      else if ((row.seq === null ? null : Number(row.seq)) !== seq) {
        miss('stale content (bench_seq differs from the last acknowledged write)', key);
      }
    }
  }
  const dids = reports.flatMap((r) => r.dids);
  for (let i = 0; i < dids.length; i += 5_000) {
    const slice = dids.slice(i, i + 5_000);
    const { rows } = await sql<{ k: number; person_id: string | null }>`
      SELECT q.k, d.person_id::text AS person_id
      FROM unnest(${slice.map((d) => d[0])}::int[], ${slice.map((d) => d[1])}::text[])
        WITH ORDINALITY AS q(team_id, distinct_id, k)
      LEFT JOIN ${sql.id(schema, distinctIdsTable)} d
        ON d.team_id = q.team_id AND d.distinct_id = q.distinct_id`.execute(db);
    for (const row of rows) {
      const [team, did, expected] = slice[Number(row.k) - 1] as FinalReport['dids'][number];
      if (expected === null && row.person_id !== null) {
        miss('distinct id of a deleted person left', `(${team}, #${did.length})`);
      } else if (expected !== null && row.person_id !== expected) {
        miss('distinct id lost or pointing elsewhere', `(${team}, person ${expected})`);
      }
    }
  }
  const orphans = Number(
    (
      await sql<{ n: string }>`
        SELECT count(*)::text AS n FROM ${sql.id(schema, distinctIdsTable)} d
        WHERE NOT EXISTS (SELECT 1 FROM ${sql.id(schema, table)} p
          WHERE p.team_id = d.team_id AND p.id = d.person_id)`.execute(db)
    ).rows[0]?.n ?? 0,
  );
  const actual = Number(
    (await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${sql.id(schema, table)}`.execute(db))
      .rows[0]?.n ?? 0,
  );
  const clean = reports.every((r) => r.failed === 0);
  const delta = reports.reduce((sum, r) => sum + r.creates - r.deletes, 0);
  if (clean && actual !== seededRows + delta)
    miss('row count', `${actual} != ${seededRows + delta}`);
  return {
    table,
    checkedPersons: persons.length,
    checkedDistinctIds: dids.length,
    uncertain,
    mismatches,
    examples,
    orphans,
    rowCount: { expected: clean ? seededRows + delta : undefined, actual },
  };
}

// ------------------------------------------------------------------ the benchmark

interface Run {
  readonly facts: Record<string, string>;
  readonly seededRows: number;
  readonly writeStart: number;
  readonly writeEnd: number;
  readonly reports: FinalReport[];
  readonly check: CheckResult | undefined;
  readonly loadBefore: string;
  readonly loadAfter: string;
  readonly tableSize: string;
  readonly parentCpuMs: number;
}

async function lifecycle(migration: PersonsMigration): Promise<void> {
  if (
    !(await step('startDualRead', 'switch', async () => {
      await migration.startDualRead();
      return undefined;
    }))
  )
    return;
  const backfilled = await step('backfill', 'step', async () => {
    const r = await migration.backfill({ workers: BACKFILL_WORKERS });
    return `${int(r.rowsCopied)} rows copied in ${r.batches} batches, finished: ${r.finished}`;
  });
  if (!backfilled) return;
  let clean = false;
  await step('verify', 'step', async () => {
    const r = await migration.verify();
    clean = r.clean;
    return `clean: ${r.clean}, ${r.mismatches} mismatched keys ${JSON.stringify(r.counts)}, ${r.rechecks} re-checks`;
  });
  if (!clean) {
    await step('verify({ repair: true })', 'step', async () => {
      const r = await migration.verify({ repair: true });
      return `clean: ${r.clean}, ${r.mismatches} mismatched keys, repair ${JSON.stringify(r.repair)}`;
    });
  }
  const actor = 'bench:cutover';
  if (!(await step('cutover', 'switch', async () => void (await migration.cutover({ actor }))))) {
    return;
  }
  if (!(await step('rollback', 'switch', async () => void (await migration.rollback({ actor }))))) {
    return;
  }
  if (
    !(await step(
      'cutover (again)',
      'switch',
      async () => void (await migration.cutover({ actor })),
    ))
  ) {
    return;
  }
  let retired = '';
  const finalized = await step('finalize', 'switch', async () => {
    const r = await migration.finalize({
      actor,
      ...(FINALIZE_LOCK_TIMEOUT_MS === undefined
        ? {}
        : { lockTimeoutMs: FINALIZE_LOCK_TIMEOUT_MS }),
    });
    retired = r.retiredTable;
    return `old table retired as ${r.retiredTable}`;
  });
  if (!finalized) return;
  await sleep(BEFORE_MS);
  await step('dropRetiredTable', 'step', async () => {
    const r = await migration.dropRetiredTable({ confirm: retired });
    return `dropped ${r.dropped}`;
  });
}

async function startWriters(db: AnyDb): Promise<void> {
  const owned = await ownedPersons(db);
  for (let w = 0; w < WRITERS; w++) {
    writers.push(
      WriterProcess.start(w, {
        url,
        schema,
        controlSchema,
        writer: w,
        ratePerS: WRITES_PER_S / WRITERS,
        maxInFlight: IN_FLIGHT,
        poolSize: WRITER_POOL,
        teams: TEAMS,
        seed: SEED * 1_000 + w + 1,
        mix: MIX,
        owned: owned[w] ?? [],
      }),
    );
  }
  await Promise.all(writers.map((w) => fromWriter(w, w.ready, 'ready', 60_000)));
}

async function main(): Promise<number> {
  const t0 = clock();
  const loadBefore = load();
  const handle = await openDatabase(url, { maxConnections: BACKFILL_WORKERS + 4 });
  const db = handle.db as AnyDb;
  const migration = createPersonsMigration({ db: handle, schema, controlSchema });
  try {
    const facts = (
      await sql<Record<string, string>>`
        SELECT current_setting('server_version') AS version,
          current_setting('shared_buffers') AS shared_buffers,
          current_setting('synchronous_commit') AS synchronous_commit`.execute(db)
    ).rows[0] as Record<string, string>;
    log(`seeding ${int(ROWS)} persons over ${TEAMS} teams into ${schema}`);
    await seed(handle);
    log(`seeded in ${seconds(t0)}`);
    await migration.install();
    await migration.prepare();
    for (const table of [oldTable, distinctIdsTable]) {
      await sql`VACUUM ANALYZE ${sql.id(schema, table)}`.execute(db);
    }
    const countOf = async (table: string) =>
      Number(
        (
          await sql<{
            n: string;
          }>`SELECT count(*)::text AS n FROM ${sql.id(schema, table)}`.execute(db)
        ).rows[0]?.n,
      );
    const seededRows = await countOf(oldTable);
    const tableSize = (
      await sql<{
        s: string;
      }>`SELECT pg_size_pretty(pg_total_relation_size(${`"${schema}"."${oldTable}"`}::regclass)) AS s`.execute(
        db,
      )
    ).rows[0]?.s as string;
    log(`setup done in ${seconds(t0)}; starting ${WRITERS} writers at ${WRITES_PER_S} writes/s`);

    await startWriters(db);
    const writeStart = clock();
    const cpuAtStart = process.cpuUsage();
    for (const w of writers) w.send('go');
    // The writers' pools fill and their statements get planned before anything is measured.
    await sleep(WARMUP_MS);
    await lifecycle(migration);
    await sleep(AFTER_MS);
    for (const w of writers) w.send('stop');
    const writeEnd = clock();
    const reports = await Promise.all(
      writers.map((w) => fromWriter(w, w.final, 'final report', 120_000)),
    );
    await Promise.all(writers.map((w) => w.exited));
    log(`writers stopped; ${int(ops.length)} writes reported; checking acknowledged writes`);

    const { phase } = await migration.status();
    const table = phase === 'finalized' ? oldTable : phase === 'new' ? newTable : undefined;
    const check = table ? await checkAcknowledged(db, table, reports, seededRows) : undefined;
    const run: Run = {
      facts,
      seededRows,
      writeStart,
      writeEnd,
      reports,
      check,
      loadBefore,
      loadAfter: load(),
      tableSize,
      parentCpuMs: (() => {
        const { user, system } = process.cpuUsage(cpuAtStart);
        return (user + system) / 1000;
      })(),
    };
    print(run, phase);
    const failedChecks =
      check === undefined ||
      check.mismatches.size > 0 ||
      check.orphans > 0 ||
      anomalies.length > 0 ||
      steps.some((s) => s.error !== undefined);
    return failedChecks ? 1 : 0;
  } finally {
    await migration.close().catch(() => {});
    await handle.close().catch(() => {});
    await cleanup();
  }
}

// ------------------------------------------------------------------ report

function rateLine(run: Run): string {
  const buckets = new Map<number, number>();
  for (const o of ops) {
    const b = Math.floor((o.t - run.writeStart) / 1000);
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
  }
  const full = Math.floor((run.writeEnd - run.writeStart) / 1000);
  const perSecond = Array.from({ length: full }, (_, b) => buckets.get(b) ?? 0).slice(1);
  const total = ops.length / ((run.writeEnd - run.writeStart) / 1000);
  const min = perSecond.length ? Math.min(...perSecond) : Number.NaN;
  return (
    `Writes: ${int(ops.length)} in ${((run.writeEnd - run.writeStart) / 1000).toFixed(0)} s from ${WRITERS} processes ` +
    `(${int(total)}/s on average, ${int(min)}/s in the slowest whole second; scheduled ${int(WRITES_PER_S)}/s, ` +
    `${int(skips.length)} skipped at the in-flight cap of ${IN_FLIGHT} per process; goal at least ${int(GOAL.writesPerS)}/s: ` +
    `${total >= GOAL.writesPerS ? 'met' : 'missed'}). The writer processes used ` +
    `${(run.reports.reduce((sum, r) => sum + r.cpuMs, 0) / 1000).toFixed(1)} CPU-seconds in all, this process ` +
    `${(run.parentCpuMs / 1000).toFixed(1)} (the harness's share of the ${cpus().length} cores).`
  );
}

const latencyCell = (w: Window) =>
  w.n === 0 ? '-' : `${ms(w.p50)} / ${ms(w.p99)} / **${ms(w.max)}** ms (${int(w.n)})`;
const codesOf = (w: Window) =>
  w.failed === 0 ? '0' : `${w.failed} (${[...w.codes].map(([c, n]) => `${c} x${n}`).join(', ')})`;

function print(run: Run, phase: string): void {
  const switches = steps.filter((s) => s.kind === 'switch');
  const failedTotal = ops.filter((o) => o.error).length;
  console.log('\n## Cutover benchmark (bench/cutover.ts)\n');
  console.log(
    `Setup: ${int(run.seededRows)} persons (${TEAMS} teams, old table ${run.tableSize} with indexes), ` +
      `PostgreSQL ${run.facts.version} (shared_buffers ${run.facts.shared_buffers}, synchronous_commit ` +
      `${run.facts.synchronous_commit}) on the same host, ${cpus().length} cores, Node ${process.versions.node}; ` +
      `${WRITERS} writer processes (pool ${WRITER_POOL} each) at ${int(WRITES_PER_S)} writes/s in all ` +
      `(create 30%, update 40%, addDistinctId 15%, delete 10%, merge 5%); before = the ${BEFORE_MS / 1000} s ` +
      `before the call, during = writes in flight from the call to ${AFTER_MS} ms after it returned; ` +
      `load average ${run.loadBefore} before, ${run.loadAfter} after.\n`,
  );
  console.log(
    '| switch | took | writes before: p50 / p99 / **max** (n) | writes during: p50 / p99 / **max** (n) | ≥ 250 ms during | failed during | skipped during | goal |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const s of switches) {
    const b = before(s);
    const d = during(s);
    const met = !s.error && d.max < GOAL.maxMs && d.failed === 0;
    console.log(
      `| ${s.label}${s.error ? ' (FAILED)' : ''} | ${duration(s.end - s.start)} | ${latencyCell(b)} | ${latencyCell(d)} | ${d.slow} | ${codesOf(d)} | ${d.skipped} | ${met ? 'met' : 'missed'} |`,
    );
  }
  const others = steps.filter((s) => s.kind === 'step');
  if (others.length > 0) {
    console.log('\nOther steps (not switches; writes in flight during each):\n');
    console.log(
      '| step | took | writes during: p50 / p99 / **max** (n) | ≥ 250 ms | failed | result |',
    );
    console.log('|---|---|---|---|---|---|');
    for (const s of others) {
      const d = during(s);
      console.log(
        `| ${s.label} | ${duration(s.end - s.start)} | ${latencyCell(d)} | ${d.slow} | ${codesOf(d)} | ${s.error ?? s.note} |`,
      );
    }
  }
  console.log(`\n${rateLine(run)}`);
  for (const s of steps.filter((x) => x.error)) console.log(`\n**${s.label} failed**: ${s.error}`);
  printFailures(failedTotal);
  printCheck(run.check, phase);
  const worst = switches.reduce<{ label: string; max: number } | undefined>((w, s) => {
    const max = during(s).max;
    return w === undefined || max > w.max ? { label: s.label, max } : w;
  }, undefined);
  const allSwitched = switches.length === 5 && switches.every((s) => !s.error);
  const latencyMet = allSwitched && switches.every((s) => during(s).max < GOAL.maxMs);
  console.log(
    `\nGoal: max write latency during every switch under ${GOAL.maxMs} ms: ` +
      `**${latencyMet ? 'met' : 'missed'}** (worst: ${worst ? `${worst.label} ${ms(worst.max)} ms` : '-'}` +
      `${allSwitched ? '' : '; not every switch ran'}); zero failed writes: ` +
      `**${failedTotal === GOAL.failed ? 'met' : 'missed'}** (${failedTotal} failed over the whole run).`,
  );
}

function printFailures(failedTotal: number): void {
  if (failedTotal > 0) {
    const codes = new Map<string, number>();
    for (const o of ops) if (o.error) codes.set(o.error, (codes.get(o.error) ?? 0) + 1);
    console.log(
      `\nFailed writes: ${failedTotal} (${[...codes].map(([c, n]) => `${c} x${n}`).join(', ')}); first of each code:`,
    );
    for (const d of details.values()) {
      const at =
        steps.find((s) => d.t >= s.start && d.t < s.end + AFTER_MS)?.label ?? 'outside any step';
      console.log(`- ${d.code} (${d.op}, during ${at}): ${d.message.replace(/\s+/g, ' ')}`);
    }
  } else {
    console.log('\nFailed writes: 0.');
  }
  if (anomalies.length > 0) {
    const kinds = new Map<string, number>();
    for (const a of anomalies) kinds.set(a.kind, (kinds.get(a.kind) ?? 0) + 1);
    console.log(
      `\n**Anomalies** (acknowledged writes answered against what the writer knew): ${[...kinds].map(([k, n]) => `${k} x${n}`).join(', ')}`,
    );
    for (const a of anomalies.slice(0, 10)) {
      const at =
        steps.find((s) => a.t >= s.start && a.t < s.end + AFTER_MS)?.label ?? 'outside any step';
      console.log(`- ${a.kind} (${a.team}, ${a.id ?? '-'}), during ${at}`);
    }
  } else {
    console.log('Anomalies (acknowledged writes answered against what the writer knew): 0.');
  }
}

function printCheck(check: CheckResult | undefined, phase: string): void {
  if (!check) {
    console.log(`\nLost-write check: not run (the migration ended in phase ${phase}).`);
    return;
  }
  const mismatched = [...check.mismatches.values()].reduce((a, b) => a + b, 0);
  console.log(
    `\nLost-write check on ${schema}.${check.table} (phase ${phase}), every acknowledged write: ` +
      `${int(check.checkedPersons)} persons (${int(check.uncertain)} left out: a write of theirs failed), ` +
      `${int(check.checkedDistinctIds)} distinct ids: **${mismatched} mismatch(es)**` +
      `${mismatched ? ` (${[...check.mismatches].map(([k, n]) => `${k} x${n}`).join(', ')})` : ''}; ` +
      `orphan distinct ids: **${check.orphans}**; rows ${int(check.rowCount.actual)}` +
      `${check.rowCount.expected === undefined ? ' (not compared: some writes failed)' : ` (expected ${int(check.rowCount.expected)})`}.`,
  );
  for (const e of check.examples) console.log(`- ${e}`);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    console.error(err);
    await cleanup();
    process.exitCode = 1;
  },
);

/**
 * Write benchmark: what one repository write costs in each phase, copy-on-write in `dual_read`
 * included, against a plain SQL update measured in the same run, with no backfill or phase
 * switch running during any measured step.
 *
 *   npx tsx bench/writes.ts         (or `npm run bench:writes`)
 *
 * Needs a real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
 * Creates two uniquely named schemas (the persons tables, the control schema) and drops them at
 * the end, also on failure and on Ctrl-C / SIGTERM; the extension pg_walinspect, when the
 * server has it and the role may create it, goes into the first one and is dropped with it.
 * Changes no server setting; runs CHECKPOINT before each step.
 *
 * Setup: `createPostHogPersonsSchema` + `seedPersons` (BENCH_ROWS persons over BENCH_TEAMS teams,
 * ~0.5 KB of properties, seeded in chunks with the teams' chunks interleaved, as in
 * bench/backfill.ts), `install()`, `prepare()`, VACUUM ANALYZE of the old and distinct-id tables.
 * The seeded keys are read once and shuffled (BENCH_SEED): every update, of every step, takes
 * the next key of that list, so no person is updated twice until the list wraps (reported).
 *
 * Load: closed loop, one process. BENCH_CONCURRENCY loops, each issuing one write after the
 * other (no think time), on a pool of BENCH_CONCURRENCY connections: the service's pool
 * (`openDatabase`, its own `createPersonsMigration`, as a service instance would have) for the
 * repository's writes, a plain `pg.Pool` of the same size for the baseline. Each step starts
 * with a CHECKPOINT, so every step starts from the same state: the first change of each page
 * after it writes the page's full image to the WAL, as random writes to a large table do in
 * production (without it, the checkpoint that the backfill's WAL triggers lands in whichever
 * step follows: in a first run, the warm step wrote 4x the WAL per write of the cold one).
 * Then BENCH_WARMUP_S seconds unmeasured, the loops drain, then BENCH_SECONDS measured seconds.
 * The phase changes, the backfill and the verification run between steps, on a second handle
 * (the operator's), never while a step runs.
 *
 * Steps, in this order:
 * 1. baseline: `BEGIN; UPDATE old SET properties = $1, version = version + 1 WHERE team_id = $2
 *    AND id = $3; COMMIT` through pg directly (three round trips, no RETURNING);
 * 2. phase `old`: `updatePerson` (a seeded person, new ~0.5 KB properties replacing the seeded
 *    keys, so rows keep their size), then `createPerson` (one distinct id, same properties);
 * 3. `startDualRead()`, then `dual_read` before the backfill ("cold"): the new table holds only
 *    what earlier writes copied, so every update copies its person from the old table first.
 *    How many did is counted (new table rows before and after the measured seconds);
 * 4. `backfill()` (BENCH_BACKFILL_WORKERS workers), VACUUM ANALYZE of both persons tables, then
 *    `dual_read` after the backfill ("warm"): the copy finds the person already there;
 * 5. `verify()` (must be clean), `cutover()`, phase `new`;
 * 6. the baseline again, on the new table (the old one has the stray-write trigger then): a
 *    drift check of the machine over the run, not used for the ratios; more than 10% away from
 *    the first baseline is flagged (another load on the host, most likely).
 *
 * Per step: writes/s (acknowledged writes / measured seconds), latency p50 / p99 / max (call to
 * answer), time per write against the first baseline (baseline writes/s / step writes/s) and
 * against the same operation in phase `old`, SQL round trips per write (every `pg.Client.query`
 * call of this process during the step, counted by wrapping it: the few statements of the
 * client heartbeat included), CPU time per write of this process and of the rest of the
 * machine (from /proc/stat: the server, mostly), WAL bytes per write (`pg_current_wal_lsn()`
 * distance, whole server), and whether a checkpoint ran (`pg_stat_bgwriter`). A second table
 * splits the mean latency by statement as the client sees it (the same wrapper times each
 * query from the call to its answer, by kind: BEGIN, the phase fence, the copy-on-write, the
 * savepoints of createPerson, the UPDATE or INSERT, COMMIT; the rest is the pool, Kysely, the
 * library's own code and the event loop between statements), and a third the WAL per write by
 * record type (pg_walinspect over the measured seconds; skipped without it).
 * Any failed write (warm-up included) is an error: its code is printed, never a row value, and
 * the bench exits 1. It also exits 1 when a step or a lifecycle call fails.
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_ROWS [200000]      BENCH_TEAMS [20]        BENCH_PROPERTIES_BYTES [500]
 *   BENCH_CHUNK [1000]       rows per seedPersons call
 *   BENCH_CONCURRENCY [8]    write loops, and connections of each pool
 *   BENCH_SECONDS [8]        measured seconds per step
 *   BENCH_WARMUP_S [1]       unmeasured seconds before each step
 *   BENCH_BACKFILL_WORKERS [2]
 *   BENCH_SEED [42]          order of the shuffled keys
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { sql } from 'kysely';
import pg from 'pg';
import type { AnyDb } from '../src/db/any-db.js';
import {
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonsMigration,
  type PersonsRepository,
} from '../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import { envNumber, interleavedSeedJobs, rng } from './support.js';

const env = envNumber;

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROWS = Math.max(1_000, Math.round(env('BENCH_ROWS', 200_000)));
const TEAMS = Math.max(1, Math.round(env('BENCH_TEAMS', 20)));
const PROPERTIES_BYTES = env('BENCH_PROPERTIES_BYTES', 500);
const CHUNK = Math.max(100, Math.round(env('BENCH_CHUNK', 1_000)));
const CONCURRENCY = Math.max(1, Math.round(env('BENCH_CONCURRENCY', 8)));
const MEASURED_MS = Math.max(0.5, env('BENCH_SECONDS', 8)) * 1000;
const WARMUP_MS = env('BENCH_WARMUP_S', 1) * 1000;
const BACKFILL_WORKERS = Math.max(1, Math.round(env('BENCH_BACKFILL_WORKERS', 2)));
const SEED = Math.round(env('BENCH_SEED', 42));

const stamp = `${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;
const schema = `bench_writes_${stamp}`;
const controlSchema = `bench_writes_ctl_${stamp}`;
const oldTable = 'posthog_person';
const newTable = 'posthog_person_new';
const distinctIdsTable = 'posthog_persondistinctid';
const actor = 'bench:writes';

// ------------------------------------------------------------------ small helpers

const now = () => performance.now();
const seconds = (since: number) => `${((now() - since) / 1000).toFixed(1)} s`;
const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (v: number) =>
  Number.isNaN(v) ? '-' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
const ratio = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}x` : '-');

/** Nearest-rank quantile of sorted values. */
function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
}

/** An error of this bench (a write answered against what the bench knows), with a code. */
class BenchError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** The error's code (and SQLSTATE when the driver gave one); never its message. */
function errorCode(error: unknown): string {
  const e = error as { code?: unknown; sqlState?: unknown; name?: unknown };
  const code = typeof e.code === 'string' ? e.code : typeof e.name === 'string' ? e.name : 'Error';
  return typeof e.sqlState === 'string' ? `${code}/${e.sqlState}` : code;
}

// ------------------------------------------------------------------ counters

/** What a statement of a write is, from its text (the library tags its own statements). */
const kinds = ['BEGIN', 'fence', 'copy', 'savepoint', 'write', 'COMMIT', 'other'] as const;
type Kind = (typeof kinds)[number];

function kindOf(text: string): Kind {
  const t = text.trimStart();
  if (t.startsWith('BEGIN')) return 'BEGIN';
  if (t.startsWith('COMMIT')) return 'COMMIT';
  if (t.includes('pg-dual-read:phase-fence')) return 'fence';
  if (t.includes('pg-dual-read:copy-on-write')) return 'copy';
  if (/^(SAVEPOINT|RELEASE SAVEPOINT)/.test(t)) return 'savepoint';
  // updatePerson and the baseline: UPDATE; createPerson: one WITH p AS (INSERT ...) statement.
  if (/^(UPDATE|WITH p AS)/.test(t)) return 'write';
  return 'other';
}

/**
 * Every statement this process sends: pg.Client#query calls (pools use pg.Client), counted;
 * while `timing` is set, the time from each call to its answer is added to its kind.
 */
let queries = 0;
let timing: Map<Kind, number> | undefined;
const clientPrototype = pg.Client.prototype as unknown as {
  query: (this: unknown, ...args: unknown[]) => unknown;
};
const originalQuery = clientPrototype.query;
clientPrototype.query = function countedQuery(this: unknown, ...args: unknown[]) {
  queries += 1;
  const result = originalQuery.apply(this, args);
  const into = timing;
  if (into && result instanceof Promise) {
    const first = args[0] as string | { text?: unknown } | undefined;
    const text = typeof first === 'string' ? first : String(first?.text ?? '');
    const kind = kindOf(text);
    const t0 = now();
    const done = () => into.set(kind, (into.get(kind) ?? 0) + now() - t0);
    result.then(done, done);
  }
  return result;
};

/** CPU time of the whole machine (all cores, busy jiffies of /proc/stat), ms; undefined off Linux. */
function machineCpuMs(): number | undefined {
  try {
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    // user nice system idle iowait irq softirq steal; USER_HZ is 100 on Linux.
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return (user + nice + system + irq + softirq + steal) * 10;
  } catch {
    return undefined;
  }
}

const processCpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};

// ------------------------------------------------------------------ cleanup

let cleanedUp = false;
let stopping = false;
const closers: (() => Promise<unknown>)[] = [];

async function cleanup(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  stopping = true;
  for (const close of closers.splice(0).reverse()) await close().catch(() => {});
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    for (const s of [schema, controlSchema]) {
      await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    }
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
    stopping = true;
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

/** The seeded keys in a shuffled order; `next()` walks it (and wraps, counted). */
class Persons {
  private cursor = 0;
  wraps = 0;

  private constructor(private readonly keys: readonly (readonly [number, string])[]) {}

  static async load(db: AnyDb): Promise<Persons> {
    const { rows } = await sql<{ team_id: number; id: string }>`
      SELECT team_id, id::text AS id FROM ${sql.id(schema, oldTable)}`.execute(db);
    const keys = rows.map((r) => [Number(r.team_id), r.id] as const);
    const random = rng(SEED);
    for (let i = keys.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [keys[i], keys[j]] = [keys[j] as (typeof keys)[number], keys[i] as (typeof keys)[number]];
    }
    return new Persons(keys);
  }

  next(): readonly [number, string] {
    if (this.cursor === this.keys.length) {
      this.cursor = 0;
      this.wraps += 1;
    }
    return this.keys[this.cursor++] as readonly [number, string];
  }
}

/** Hex padding of the seeded `notes` length (`seedPersons`: whole md5s, 32 characters each). */
const notesLength = Math.ceil(Math.max(0, PROPERTIES_BYTES - 80) / 32) * 32;
let serial = 0;

/** New properties with the seeded keys (they replace them all): ~PROPERTIES_BYTES of JSON. */
function newProperties(n: number): Record<string, unknown> {
  const properties: Record<string, unknown> = {
    n,
    email: `user${n}@example.com`,
    plan: 'paid',
  };
  if (notesLength > 0) properties.notes = randomBytes(notesLength / 2).toString('hex');
  return properties;
}

// ------------------------------------------------------------------ the writes

type Write = () => Promise<void>;

function repositoryUpdate(repo: PersonsRepository, persons: Persons): Write {
  return async () => {
    const [team, id] = persons.next();
    const row = await repo.updatePerson(team, id, { properties: newProperties(++serial) });
    if (!row) throw new BenchError('update-found-no-person');
  };
}

function repositoryCreate(repo: PersonsRepository): Write {
  return async () => {
    const n = ++serial;
    const result = await repo.createPerson({
      teamId: 1 + (n % TEAMS),
      distinctIds: [`bench-writes-${n}`],
      properties: newProperties(n),
    });
    if (result.status !== 'created') throw new BenchError('create-conflict');
  };
}

/** The baseline: BEGIN, one plain UPDATE, COMMIT, on a connection of a plain pg.Pool. */
function baselineUpdate(pool: pg.Pool, table: string, persons: Persons): Write {
  const text = `UPDATE "${schema}"."${table}" SET properties = $1::jsonb, version = version + 1
    WHERE team_id = $2 AND id = $3`;
  return async () => {
    const [team, id] = persons.next();
    const client = await pool.connect();
    let updated: number | null = null;
    try {
      await client.query('BEGIN');
      try {
        updated = (await client.query(text, [JSON.stringify(newProperties(++serial)), team, id]))
          .rowCount;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw error;
      }
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    if (updated !== 1) throw new BenchError('baseline-updated-no-row');
  };
}

// ------------------------------------------------------------------ steps

interface LoopResult {
  readonly latencies: number[];
  readonly failed: Map<string, number>;
  readonly attempts: number;
  readonly elapsedMs: number;
}

/** CONCURRENCY loops doing `write` back to back until `durationMs` has passed. */
async function runLoops(write: Write, durationMs: number): Promise<LoopResult> {
  const latencies: number[] = [];
  const failed = new Map<string, number>();
  let attempts = 0;
  const start = now();
  const deadline = start + durationMs;
  const loop = async () => {
    while (!stopping && now() < deadline) {
      const t0 = now();
      attempts += 1;
      try {
        await write();
        latencies.push(now() - t0);
      } catch (error) {
        const code = errorCode(error);
        failed.set(code, (failed.get(code) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, loop));
  return { latencies, failed, attempts, elapsedMs: now() - start };
}

type Op = 'baseline' | 'update' | 'create';

interface Step {
  readonly label: string;
  readonly phase: string;
  readonly op: Op;
  readonly writes: number;
  readonly perS: number;
  readonly meanMs: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly failed: Map<string, number>;
  readonly roundTrips: number;
  readonly cpuUsThis: number;
  readonly cpuUsRest: number | undefined;
  /** WAL bytes per write (LSN distance over the measured seconds, whole server). */
  readonly walBytes: number;
  /** WAL records carrying a full-page image, per write (pg_walinspect; undefined without it). */
  readonly fpi: number | undefined;
  readonly wal: readonly WalShare[];
  /** Checkpoints that began or ended during the measured seconds (pg_stat_bgwriter). */
  readonly checkpoints: number;
  /** Rows the new table gained during the measured seconds (dual_read updates only). */
  readonly copies: number | undefined;
  /** Client-side ms per write spent waiting for each kind of statement. */
  readonly statementMs: ReadonlyMap<Kind, number>;
}

interface Context {
  readonly admin: AnyDb;
  readonly repo: PersonsRepository;
  readonly control: PersonsMigration;
  readonly baselinePool: pg.Pool;
  readonly persons: Persons;
  /** Schema of pg_walinspect, if available. */
  readonly inspect: string | undefined;
}

const countNewRows = async (db: AnyDb) =>
  Number(
    (
      await sql<{
        n: string;
      }>`SELECT count(*)::text AS n FROM ${sql.id(schema, newTable)}`.execute(db)
    ).rows[0]?.n,
  );

interface ServerCounters {
  readonly lsn: string;
  /** Where WAL is flushed up to: the limit of what pg_walinspect reads. */
  readonly flushed: string;
  readonly walBytes: number;
  readonly checkpoints: number;
}

/**
 * The WAL position and the checkpoint counters; `since`: the WAL bytes written since its LSN.
 * (pg_stat_wal's records and full-page images are not used: backends publish them up to 10 s
 * late.)
 */
async function serverCounters(db: AnyDb, since?: string): Promise<ServerCounters> {
  const { rows } = await sql<Record<keyof ServerCounters, string>>`
    SELECT pg_current_wal_lsn()::text AS lsn, pg_current_wal_flush_lsn()::text AS flushed,
      pg_wal_lsn_diff(pg_current_wal_lsn(), ${since ?? '0/0'}::pg_lsn)::text AS "walBytes",
      (b.checkpoints_timed + b.checkpoints_req)::text AS checkpoints
    FROM pg_stat_bgwriter b`.execute(db);
  const r = rows[0] as Record<keyof ServerCounters, string>;
  return {
    lsn: r.lsn,
    flushed: r.flushed,
    walBytes: Number(r.walBytes),
    checkpoints: Number(r.checkpoints),
  };
}

/** WAL of one record type, per write. */
interface WalShare {
  readonly type: string;
  readonly records: number;
  readonly fpis: number;
  readonly bytes: number;
}

/**
 * Where pg_walinspect is (created in the bench's schema, so dropped with it), or undefined
 * when it cannot be had (not installed on the server, no privilege): the WAL breakdown is
 * then skipped.
 */
async function walInspect(db: AnyDb): Promise<string | undefined> {
  try {
    await sql`CREATE EXTENSION pg_walinspect SCHEMA ${sql.id(schema)}`.execute(db);
    return schema;
  } catch (error) {
    const { rows } = await sql<{ nspname: string }>`
      SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'pg_walinspect'`.execute(db);
    if (rows[0]) return rows[0].nspname;
    log(`no WAL breakdown: pg_walinspect not available (${errorCode(error)})`);
    return undefined;
  }
}

/** The WAL between two flushed LSNs by record type, per write (largest first). */
async function walShares(
  db: AnyDb,
  inspect: string,
  from: string,
  to: string,
  writes: number,
): Promise<WalShare[]> {
  const { rows } = await sql<{ type: string; n: string; fpis: string; bytes: string }>`
    SELECT resource_manager || '/' || record_type AS type, count(*)::text AS n,
      count(*) FILTER (WHERE fpi_length > 0)::text AS fpis, sum(record_length)::text AS bytes
    FROM ${sql.id(inspect, 'pg_get_wal_records_info')}(${from}::pg_lsn, ${to}::pg_lsn)
    GROUP BY 1 ORDER BY sum(record_length) DESC`.execute(db);
  return rows.map((r) => ({
    type: r.type,
    records: Number(r.n) / writes,
    fpis: Number(r.fpis) / writes,
    bytes: Number(r.bytes) / writes,
  }));
}

/** One step: CHECKPOINT, warm-up, drain, then the measured seconds with counters around them. */
async function measure(
  ctx: Context,
  label: string,
  phase: string,
  op: Op,
  write: Write,
): Promise<Step> {
  log(`${label} (${phase}): ${WARMUP_MS / 1000} s warm-up, ${MEASURED_MS / 1000} s measured`);
  // Every step starts right after a checkpoint: the first change of each page writes its image.
  await sql`CHECKPOINT`.execute(ctx.admin);
  const warm = await runLoops(write, WARMUP_MS);
  const countCopies = op === 'update' && phase === 'dual_read';
  const rowsBefore = countCopies ? await countNewRows(ctx.admin) : 0;
  const server0 = await serverCounters(ctx.admin);
  const statementMs = new Map<Kind, number>();
  const [q0, cpu0, machine0] = [queries, processCpuMs(), machineCpuMs()];
  timing = statementMs;
  const run = await runLoops(write, MEASURED_MS);
  timing = undefined;
  const [q1, cpu1, machine1] = [queries, processCpuMs(), machineCpuMs()];
  const server1 = await serverCounters(ctx.admin, server0.lsn);
  const copies = countCopies ? (await countNewRows(ctx.admin)) - rowsBefore : undefined;
  const wal = ctx.inspect
    ? await walShares(ctx.admin, ctx.inspect, server0.flushed, server1.flushed, run.attempts)
    : [];
  const failed = new Map(warm.failed);
  for (const [code, n] of run.failed) failed.set(code, (failed.get(code) ?? 0) + n);
  const sorted = run.latencies.sort((a, b) => a - b);
  const writes = sorted.length;
  const per = (v: number) => (run.attempts > 0 ? v / run.attempts : Number.NaN);
  for (const [kind, total] of statementMs) statementMs.set(kind, per(total));
  const step: Step = {
    label,
    phase,
    op,
    writes,
    perS: writes / (run.elapsedMs / 1000),
    meanMs: sorted.reduce((a, b) => a + b, 0) / Math.max(1, writes),
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    max: sorted.at(-1) ?? Number.NaN,
    failed,
    roundTrips: per(q1 - q0),
    cpuUsThis: per((cpu1 - cpu0) * 1000),
    cpuUsRest:
      machine0 === undefined || machine1 === undefined
        ? undefined
        : per((machine1 - machine0 - (cpu1 - cpu0)) * 1000),
    walBytes: per(server1.walBytes),
    checkpoints: server1.checkpoints - server0.checkpoints,
    fpi: ctx.inspect ? wal.reduce((n, w) => n + w.fpis, 0) : undefined,
    wal,
    copies,
    statementMs,
  };
  logStep(step);
  return step;
}

function logStep(step: Step): void {
  const failed = [...step.failed].map(([c, n]) => `${c} x${n}`).join(', ');
  log(
    `  ${int(step.perS)} writes/s, p50 ${ms(step.p50)} / p99 ${ms(step.p99)} / max ${ms(step.max)} ms, ` +
      `${int(step.walBytes)} B of WAL${step.fpi === undefined ? '' : ` (${step.fpi.toFixed(2)} FPI)`} per write` +
      `${failed ? `, FAILED ${failed}` : ''}`,
  );
}

interface Lifecycle {
  readonly calls: { readonly label: string; readonly ms: number; readonly note: string }[];
}

async function timed(run: Lifecycle, label: string, fn: () => Promise<string>): Promise<void> {
  if (stopping) throw new Error(`stopped by a signal before ${label}`);
  log(`${label}...`);
  const t0 = now();
  const note = await fn();
  run.calls.push({ label, ms: now() - t0, note });
  log(`${label} took ${seconds(t0)}${note ? `: ${note}` : ''}`);
}

async function vacuumAnalyze(db: AnyDb, tables: readonly string[]): Promise<void> {
  for (const table of tables) await sql`VACUUM ANALYZE ${sql.id(schema, table)}`.execute(db);
}

/** The steps and, between them, the lifecycle calls; stops at the first failed call. */
async function runSteps(ctx: Context, steps: Step[], lifecycle: Lifecycle): Promise<void> {
  const { repo, control, persons } = ctx;
  const update = repositoryUpdate(repo, persons);
  const create = repositoryCreate(repo);
  const add = async (label: string, phase: string, op: Op, write: Write) => {
    if (!stopping) steps.push(await measure(ctx, label, phase, op, write));
  };
  await add(
    'baseline: plain UPDATE, old table',
    'old',
    'baseline',
    baselineUpdate(ctx.baselinePool, oldTable, persons),
  );
  await add('updatePerson', 'old', 'update', update);
  await add('createPerson', 'old', 'create', create);
  await timed(lifecycle, 'startDualRead', async () => {
    await control.startDualRead();
    return '';
  });
  await add('updatePerson, before backfill (cold)', 'dual_read', 'update', update);
  await add('createPerson, before backfill', 'dual_read', 'create', create);
  await timed(lifecycle, 'backfill', async () => {
    const r = await control.backfill({ workers: BACKFILL_WORKERS });
    if (!r.finished) throw new Error('backfill() returned unfinished');
    return `${int(r.rowsCopied)} rows copied in ${r.batches} batches`;
  });
  await timed(lifecycle, 'VACUUM ANALYZE both tables', async () => {
    await vacuumAnalyze(ctx.admin, [oldTable, newTable]);
    return '';
  });
  await add('updatePerson, after backfill (warm)', 'dual_read', 'update', update);
  await add('createPerson, after backfill', 'dual_read', 'create', create);
  await timed(lifecycle, 'verify', async () => {
    const r = await control.verify();
    if (!r.clean) throw new Error(`verify() not clean: ${JSON.stringify(r.counts)}`);
    return `clean, ${int(r.oldRows)} old rows, ${int(r.newRows)} new rows`;
  });
  await timed(lifecycle, 'cutover', async () => {
    await control.cutover({ actor });
    return '';
  });
  await add('updatePerson', 'new', 'update', update);
  await add('createPerson', 'new', 'create', create);
  await add(
    'baseline again: plain UPDATE, new table (drift check)',
    'new',
    'baseline',
    baselineUpdate(ctx.baselinePool, newTable, persons),
  );
}

// ------------------------------------------------------------------ report

interface Facts {
  readonly version: string;
  readonly shared_buffers: string;
  readonly synchronous_commit: string;
  readonly autovacuum: string;
  readonly size: string;
}

const failedText = (failed: ReadonlyMap<string, number>) =>
  failed.size === 0 ? '0' : [...failed].map(([c, n]) => `${c} x${n}`).join(', ');

function rowOf(step: Step, baseline: Step | undefined, steps: readonly Step[]): string {
  const inOld = steps.find((s) => s.phase === 'old' && s.op === step.op);
  const vsOld = step.op === 'baseline' || !inOld ? '-' : ratio(inOld.perS / step.perS);
  const copies =
    step.copies === undefined ? '-' : `${int(step.copies)} of ${int(step.writes)} updates`;
  const rest = step.cpuUsRest === undefined ? '-' : int(step.cpuUsRest);
  return (
    `| ${step.label} | \`${step.phase}\` | ${int(step.perS)} | ${ms(step.p50)} / ${ms(step.p99)} / ${ms(step.max)} ` +
    `| ${baseline ? ratio(baseline.perS / step.perS) : '-'} | ${vsOld} | ${step.roundTrips.toFixed(2)} ` +
    `| ${copies} | ${int(step.cpuUsThis)} / ${rest} | ${int(step.walBytes)}${step.fpi === undefined ? '' : ` (${step.fpi.toFixed(2)})`} ` +
    `| ${failedText(step.failed)} |`
  );
}

const kindLabels: Record<Kind, string> = {
  BEGIN: 'BEGIN',
  fence: 'phase fence',
  copy: 'copy-on-write',
  savepoint: 'SAVEPOINT + RELEASE',
  write: 'UPDATE / INSERT',
  COMMIT: 'COMMIT',
  other: 'other',
};

/** Where a write's time goes, as the client sees each round trip (ms per write). */
function printStatementTimes(steps: readonly Step[]): void {
  const shown = kinds.filter((k) => steps.some((s) => (s.statementMs.get(k) ?? 0) > 0.005));
  console.log(
    '\nWhere the time of a write goes (ms per write, from each statement sent to its answer, as the client sees it; the rest: pool, Kysely, the library and the event loop between statements):\n',
  );
  console.log(
    `| step | phase | mean latency | ${shown.map((k) => kindLabels[k]).join(' | ')} | rest |`,
  );
  console.log(`|---|---|---|${shown.map(() => '---|').join('')}---|`);
  for (const step of steps) {
    const cells = shown.map((k) => {
      const v = step.statementMs.get(k);
      return v === undefined ? '-' : ms(v);
    });
    const inStatements = [...step.statementMs.values()].reduce((a, b) => a + b, 0);
    console.log(
      `| ${step.label} | \`${step.phase}\` | ${ms(step.meanMs)} | ${cells.join(' | ')} | ${ms(step.meanMs - inStatements)} |`,
    );
  }
}

/** The second baseline against the first: did the machine's speed change during the run? */
function printDrift(steps: readonly Step[]): void {
  const [first, again] = steps.filter((s) => s.op === 'baseline');
  if (!first || !again) return;
  const drift = again.perS / first.perS;
  const apart = Math.abs(drift - 1) > 0.1;
  console.log(
    `Drift check: the last baseline ran at ${ratio(drift)} the first one's writes/s` +
      (apart
        ? ' - **more than 10% apart**: the host changed speed during the run (another load?), or the ' +
          "two tables' states made the baselines differ (see their WAL rows); compare with another run " +
          'before quoting these ratios.'
        : ' (within 10%).'),
  );
}

/** The WAL of each step by record type (those of at least 0.05 records per write). */
function printWal(steps: readonly Step[]): void {
  if (steps.every((s) => s.wal.length === 0)) return;
  console.log(
    '\nWAL per write by record type (pg_walinspect, whole server, measured seconds): records (of which with a full-page image) bytes:\n',
  );
  console.log('| step | phase | WAL per write |');
  console.log('|---|---|---|');
  for (const step of steps) {
    const shares = step.wal
      .filter((w) => w.records >= 0.05)
      .map(
        (w) =>
          `${w.type} ${w.records.toFixed(2)}${w.fpis >= 0.01 ? ` (${w.fpis.toFixed(2)})` : ''} ${int(w.bytes)} B`,
      );
    console.log(`| ${step.label} | \`${step.phase}\` | ${shares.join(', ')} |`);
  }
}

function print(
  facts: Facts,
  steps: readonly Step[],
  lifecycle: Lifecycle,
  loads: string[],
  persons: Persons,
) {
  const baseline = steps.find((s) => s.op === 'baseline');
  console.log('\n## Write benchmark (bench/writes.ts)\n');
  console.log(
    `Setup: ${int(ROWS)} persons (${TEAMS} teams, ~${PROPERTIES_BYTES} B of properties, old table ` +
      `${facts.size} with indexes), PostgreSQL ${facts.version} (shared_buffers ${facts.shared_buffers}, ` +
      `synchronous_commit ${facts.synchronous_commit}, autovacuum ${facts.autovacuum}) on the same host, ` +
      `${cpus().length} cores, Node ${process.versions.node}; closed loop, ${CONCURRENCY} concurrent writers ` +
      `on a pool of ${CONCURRENCY}, ${MEASURED_MS / 1000} s measured per step after a CHECKPOINT and ` +
      `${WARMUP_MS / 1000} s of warm-up; load average ${loads.join(' before, ')} after.\n`,
  );
  console.log(
    '| step | phase | writes/s | latency p50 / p99 / max (ms) | time per write vs baseline | vs same op in `old` | SQL round trips / write | copies | CPU µs / write: this process / rest | WAL B / write (FPI) | failed |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const step of steps) console.log(rowOf(step, baseline, steps));
  printStatementTimes(steps);
  printWal(steps);
  console.log(
    `\nBetween steps: ${lifecycle.calls.map((c) => `${c.label} ${ms(c.ms)} ms${c.note ? ` (${c.note})` : ''}`).join('; ')}.`,
  );
  printDrift(steps);
  const checkpoints = steps.filter((s) => s.checkpoints > 0).map((s) => s.label);
  console.log(
    `Time per write vs baseline = baseline writes/s / step writes/s (the first baseline). Round trips: ` +
      `pg queries sent by this process per write attempt (background heartbeat included). CPU: this ` +
      `process (the driver, Kysely, the library) and the rest of the machine (the server, mostly) per ` +
      `write. WAL: bytes by LSN distance over the measured seconds (whole server). Checkpoints during measured seconds: ${checkpoints.length > 0 ? `**in ${checkpoints.join(', ')}**` : 'none'}. ` +
      `The shuffled key list ${persons.wraps > 0 ? `wrapped ${persons.wraps} time(s): some persons were updated twice` : 'never wrapped: no person was updated twice'}.`,
  );
}

// ------------------------------------------------------------------ main

async function setup(control: PersonsMigration, handle: DatabaseHandle): Promise<Facts> {
  const db = handle.db as AnyDb;
  const t0 = now();
  log(`seeding ${int(ROWS)} persons over ${TEAMS} teams into ${schema}`);
  await seed(handle);
  log(`seeded in ${seconds(t0)}`);
  await control.install();
  await control.prepare();
  await vacuumAnalyze(db, [oldTable, distinctIdsTable]);
  const { rows } = await sql<Facts>`
    SELECT current_setting('server_version') AS version,
      current_setting('shared_buffers') AS shared_buffers,
      current_setting('synchronous_commit') AS synchronous_commit,
      current_setting('autovacuum') AS autovacuum,
      pg_size_pretty(pg_total_relation_size(${`"${schema}"."${oldTable}"`}::regclass)) AS size`.execute(
    db,
  );
  log(`setup done in ${seconds(t0)}`);
  return rows[0] as Facts;
}

async function main(): Promise<number> {
  const t0 = now();
  const loads = [load()];
  const adminHandle = await openDatabase(url, { maxConnections: BACKFILL_WORKERS + 2 });
  const control = createPersonsMigration({ db: adminHandle, schema, controlSchema });
  closers.push(
    () => adminHandle.close(),
    () => control.close(),
  );
  const facts = await setup(control, adminHandle);
  const serviceHandle = await openDatabase(url, { maxConnections: CONCURRENCY });
  const service = createPersonsMigration({ db: serviceHandle, schema, controlSchema });
  const baselinePool = new pg.Pool({ connectionString: url, max: CONCURRENCY });
  baselinePool.on('error', (err) => log(`baseline pool: idle client error ${errorCode(err)}`));
  closers.push(
    () => serviceHandle.close(),
    () => service.close(),
    () => baselinePool.end(),
  );
  const admin = adminHandle.db as AnyDb;
  const persons = await Persons.load(admin);
  const inspect = await walInspect(admin);
  const ctx: Context = {
    admin,
    repo: service.repository(),
    control,
    baselinePool,
    persons,
    inspect,
  };
  const steps: Step[] = [];
  const lifecycle: Lifecycle = { calls: [] };
  let failure: unknown;
  try {
    await runSteps(ctx, steps, lifecycle);
  } catch (error) {
    failure = error;
  }
  loads.push(load());
  if (steps.length > 0) print(facts, steps, lifecycle, loads, persons);
  const failedWrites = steps.reduce(
    (n, s) => n + [...s.failed.values()].reduce((a, b) => a + b, 0),
    0,
  );
  if (failure !== undefined) {
    console.log(`\n**Stopped**: ${failure instanceof Error ? failure.message : String(failure)}`);
  }
  console.log(`\nFailed writes: ${failedWrites}. Run time ${seconds(t0)}.`);
  return failure !== undefined || failedWrites > 0 || stopping ? 1 : 0;
}

main()
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  )
  .finally(() => cleanup());

/**
 * Verification benchmark: `migration.verify()` (join and checksum methods) against one
 * server-side md5 pass over both persons tables, on the same rows, in the same run, on a real
 * server.
 *
 *   npx tsx bench/verify.ts         (or `npm run bench:verify`)
 *
 * Needs a real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
 * Creates two uniquely named schemas (the persons tables, the control schema) and drops them at
 * the end, also on failure and on Ctrl-C (kept with BENCH_KEEP=1). Changes no server setting
 * (session settings only, for the baseline variants and the EXPLAIN variants).
 *
 * Setup (as bench/backfill.ts): `createPostHogPersonsSchema` + `seedPersons` (~0.5 KB of
 * properties, one distinct id per person), BENCH_ROWS persons spread evenly over BENCH_TEAMS
 * teams, seeded in chunks of BENCH_CHUNK rows with the teams' chunks interleaved (ids grow
 * across teams). Then `install()`, `prepare()`, `startDualRead()`, one
 * `INSERT INTO new (columns) SELECT columns FROM old` (a finished backfill), VACUUM ANALYZE of
 * the old, new and distinct-ids tables.
 *
 * Measured, alternating, BENCH_ROUNDS times (the order rotates every round):
 * - `md5 baseline`: for each table, one statement
 *   `SELECT count(*), sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8) FROM table AS t`
 *   (every row's whole text hashed with md5, an order-free digest: the same row hash the
 *   checksum method sums), old then new on one connection; its time is the sum of the two.
 *   Measured twice: `serial` (`max_parallel_workers_per_gather = 0`, one backend, like the
 *   verification, whose statements cannot run in parallel: they carry a data-modifying CTE)
 *   and with the server's defaults (parallel workers allowed). Ratios are given against both;
 *   the goal is judged against the serial one (like for like) and reported for both.
 * - `verify join`: `migration.verify()` with default options (method join, distinctIds on);
 * - `verify join, distinctIds off`: the same with `distinctIds: false`;
 * - `verify checksum`: `migration.verify({ method: 'checksum' })` (distinctIds on).
 * Time = the `verify()` call (planning, chunks, distinct-id checks, re-checks, control rows).
 * Every statement the verification sends is captured from Kysely's query log with its
 * duration, so the time is also split by kind of statement.
 * Then one changed row is planted (a property changed in the new table, same version) and
 * both methods (default options otherwise) must find exactly that key as `content_differs`
 * (the bench throws otherwise), BENCH_ROUNDS times each, alternating.
 * For information, once each (BENCH_EXTRA): the default verify with other chunk sizes
 * (`chunkRows` 100,000,000, i.e. one chunk, and 250,000, unless the default), and on connections started with planner settings: the
 * per-chunk settings the library applies when there are several chunks, `enable_hashjoin=off,
 * enable_sort=off, jit=off` (here for the
 * whole session), `random_page_cost=1.1`, `work_mem=64MB` (session options of this process's
 * pool; no server setting changes).
 * Then EXPLAIN (ANALYZE, BUFFERS) of one chunk statement of the join check as it was sent
 * (captured from the query log, parameters inlined, in a rolled-back transaction) and of
 * variants of it (planner settings, without the INSERT of keys, a bare join, the md5 pass over
 * the same range), of the distinct-id check, and of one range sum of the checksum check and of
 * its bisection, to show where the time goes.
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_ROWS [1000000]     BENCH_TEAMS [100]       BENCH_PROPERTIES_BYTES [500]
 *   BENCH_CHUNK [1000]       rows per seedPersons call
 *   BENCH_ROUNDS [2]         rounds of (baselines, join, join without distinct ids, checksum)
 *   BENCH_WARMUP [1]         0 skips the unmeasured warm-up (one baseline + one verify)
 *   BENCH_EXPLAIN [1]        0 none, 1 the chunk plan + a summary of the variants, 2 also the
 *                            variants' full plans
 *   BENCH_EXTRA [1]          0 skips the informational runs (chunk sizes, planner settings)
 *   BENCH_KEEP [0]           1 keeps the schemas (their names are printed)
 *
 * Writes the report (markdown) to stdout and to /tmp/bench-verify-report.md.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { AnyDb } from '../src/db/any-db.js';
import { pgTypeOverrides } from '../src/db/type-parsers.js';
import {
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonsMigration,
  type VerificationResult,
  type VerifyOptions,
} from '../src/index.js';
import { resolveVerifyOptions } from '../src/options/verify-options.js';
import { columnList, loadPersonColumns } from '../src/persons/person-columns.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import { envNumber, interleavedSeedJobs } from './support.js';

const env = envNumber;

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROWS = Math.max(1_000, Math.round(env('BENCH_ROWS', 1_000_000)));
const TEAMS = Math.max(1, Math.round(env('BENCH_TEAMS', 100)));
const PROPERTIES_BYTES = env('BENCH_PROPERTIES_BYTES', 500);
const CHUNK = Math.max(100, Math.round(env('BENCH_CHUNK', 1_000)));
const ROUNDS = Math.max(1, Math.round(env('BENCH_ROUNDS', 2)));
const WARMUP = env('BENCH_WARMUP', 1) > 0;
const EXPLAIN = env('BENCH_EXPLAIN', 1);
const KEEP = env('BENCH_KEEP', 0) > 0;
const EXTRA = env('BENCH_EXTRA', 1) > 0;
/**
 * Planner settings a default verify is also run with once (session options `-c name=value` of
 * every connection of its pool). The first is the proposed per-chunk setting (merge join over
 * the (team_id, id) indexes, no JIT), applied here to the whole session.
 */
const SESSION_VARIANTS: readonly (readonly string[])[] = EXTRA
  ? [
      ['enable_hashjoin=off', 'enable_sort=off', 'jit=off'],
      ['random_page_cost=1.1'],
      ['work_mem=64MB'],
    ]
  : [];
const REPORT_PATH = '/tmp/bench-verify-report.md';

const GOAL = { ratio: 1.5 };
/** verify()'s defaults as the source resolves them today (printed with the figures). */
const DEFAULTS = resolveVerifyOptions({});

const stamp = `${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;
const schema = `bench_verify_${stamp}`;
const controlSchema = `bench_verify_ctl_${stamp}`;
const schemas = [schema, controlSchema];
const NAME = 'bench_verify';

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
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => (ms / 1000).toFixed(2);

// ------------------------------------------------------------------ cleanup

let cleanedUp = false;
let benchBackendPid: number | undefined;

async function dropSchemas(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  if (KEEP) {
    log(`kept schemas ${schemas.join(', ')} (BENCH_KEEP=1)`);
    return;
  }
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    if (benchBackendPid !== undefined) {
      await client.query('SELECT pg_cancel_backend($1)', [benchBackendPid]).catch(() => {});
    }
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
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

// ------------------------------------------------------------------ query capture

interface LoggedQuery {
  readonly sql: string;
  readonly parameters: readonly unknown[];
  readonly ms: number;
}

/** Queries of the verification in progress (undefined: not recording). */
let recording: LoggedQuery[] | undefined;

/** What a verification statement does, from its SQL text. */
function kindOf(text: string): string {
  if (text.includes('FULL JOIN')) return 'join chunks';
  if (text.includes('bit(60)')) return 'checksum: range sums';
  if (text.includes('ntile(')) return 'key quantiles (planning, bisection)';
  if (text.includes("'orphan_distinct_id'")) return 'distinct-id checks';
  if (text.includes('reltuples') || /SELECT count\(\*\)::text AS rows FROM/.test(text))
    return 'row estimates (planning)';
  if (text.includes('md5(jsonb_build_array')) return 'checksum: leaf rows';
  if (text.includes('dropped AS (')) return 're-checks';
  return 'control rows, store, results';
}

// ------------------------------------------------------------------ setup

// ------------------------------------------------------------------ measurements

type Kind =
  | 'md5 baseline, serial'
  | 'md5 baseline, server defaults'
  | 'verify join'
  | 'verify join, distinctIds off'
  | 'verify checksum';

interface Measurement {
  readonly kind: Kind;
  readonly round: number;
  readonly ms: number;
  readonly load: string;
  /** Statement time per kind of statement (verifications only). */
  readonly statements: ReadonlyMap<string, { n: number; ms: number }>;
  readonly result: VerificationResult | undefined;
  readonly detail: string;
}

interface Planted {
  readonly method: 'join' | 'checksum';
  readonly round: number;
  readonly ms: number;
  readonly load: string;
  readonly result: VerificationResult;
  readonly statements: ReadonlyMap<string, { n: number; ms: number }>;
}

const groupStatements = (queries: readonly LoggedQuery[]) => {
  const by = new Map<string, { n: number; ms: number }>();
  for (const q of queries) {
    const k = kindOf(q.sql);
    const e = by.get(k) ?? { n: 0, ms: 0 };
    e.n++;
    e.ms += q.ms;
    by.set(k, e);
  }
  return by;
};

async function main(): Promise<void> {
  const t0 = now();
  const loadAtStart = load();
  const pool = new pg.Pool({ connectionString: url, max: 4, types: pgTypeOverrides });
  pool.on('error', (err) => log(`idle pool client error: ${err.message}`));
  const db: AnyDb = new Kysely({
    dialect: new PostgresDialect({ pool }),
    log: (event) => {
      if (recording && event.level === 'query') {
        recording.push({
          sql: event.query.sql,
          parameters: event.query.parameters,
          ms: event.queryDurationMillis,
        });
      }
    },
  });
  const handle: DatabaseHandle = await openDatabase(db);
  const client = new pg.Client({ connectionString: url });
  let migration: PersonsMigration | undefined;
  const out: string[] = [];
  const print = (line = '') => {
    out.push(line);
    console.log(line);
  };
  try {
    await client.connect();
    benchBackendPid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0]?.pid as number;
    const facts = (
      await client.query(`SELECT current_setting('server_version') AS version,
        current_setting('shared_buffers') AS shared_buffers, current_setting('work_mem') AS work_mem,
        current_setting('jit') AS jit,
        current_setting('max_parallel_workers_per_gather') AS parallel`)
    ).rows[0] as Record<string, string>;

    // ---------------------------------------------------------------- setup
    log(
      `seeding ${int(ROWS)} persons over ${TEAMS} teams (~${PROPERTIES_BYTES} B properties, chunks of ${CHUNK}); load ${load()}`,
    );
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
    log(`seeded in ${seconds(t0)}`);
    const setupStart = now();
    const m = createPersonsMigration({ db: handle, schema, controlSchema, name: NAME });
    migration = m;
    await m.install();
    await m.prepare();
    await m.startDualRead();
    const copyable = columnList((await loadPersonColumns(db, m.options)).copyable);
    const oldRef = sql.id(schema, m.options.oldTable);
    const newRef = sql.id(schema, m.options.newTable);
    await sql`INSERT INTO ${newRef} (${copyable}) SELECT ${copyable} FROM ${oldRef}`.execute(db);
    for (const table of [m.options.oldTable, m.options.newTable, m.options.distinctIdsTable]) {
      await sql`VACUUM ANALYZE ${sql.id(schema, table)}`.execute(db);
    }
    const size = (
      await sql<{ old: string; new: string; oldIdx: string; newIdx: string; props: string }>`
        SELECT pg_size_pretty(pg_table_size(${`"${schema}"."${m.options.oldTable}"`}::regclass)) AS old,
          pg_size_pretty(pg_table_size(${`"${schema}"."${m.options.newTable}"`}::regclass)) AS new,
          pg_size_pretty(pg_indexes_size(${`"${schema}"."${m.options.oldTable}"`}::regclass)) AS "oldIdx",
          pg_size_pretty(pg_indexes_size(${`"${schema}"."${m.options.newTable}"`}::regclass)) AS "newIdx",
          (SELECT round(avg(pg_column_size(properties)))::text FROM ${oldRef}) AS props`.execute(db)
    ).rows[0] as { old: string; new: string; oldIdx: string; newIdx: string; props: string };
    log(
      `install + prepare + startDualRead + copy + VACUUM ANALYZE in ${seconds(setupStart)}; ` +
        `old ${size.old} (+${size.oldIdx} indexes), new ${size.new} (+${size.newIdx} indexes), properties ~${size.props} B`,
    );

    // ---------------------------------------------------------------- sides
    const md5Of = (table: string) =>
      `SELECT count(*)::text AS n, sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8)::text AS h
       FROM "${schema}"."${table}" AS t`;
    const digests = new Map<string, string>();
    const baseline = async (serial: boolean): Promise<{ ms: number; detail: string }> => {
      await client.query('BEGIN');
      try {
        if (serial) await client.query('SET LOCAL max_parallel_workers_per_gather = 0');
        let ms = 0;
        const parts: string[] = [];
        for (const table of [m.options.oldTable, m.options.newTable]) {
          const started = now();
          const r = (await client.query(md5Of(table))).rows[0] as { n: string; h: string };
          const took = now() - started;
          ms += took;
          parts.push(`${table} ${secs(took)} s`);
          digests.set(table, `${r.n}:${r.h}`);
        }
        return { ms, detail: parts.join(', ') };
      } finally {
        await client.query('ROLLBACK');
      }
    };
    const verifyOnce = async (options: VerifyOptions) => {
      recording = [];
      const started = now();
      try {
        const result = await m.verify(options);
        return { result, ms: now() - started, statements: recording };
      } finally {
        recording = undefined;
      }
    };
    let chunkStatement: LoggedQuery | undefined;
    let distinctIdStatement: LoggedQuery | undefined;
    let quantileStatement: LoggedQuery | undefined;
    let checksumStatement: LoggedQuery | undefined;
    let bisectStatement: LoggedQuery | undefined;
    const assertClean = (kind: string, r: VerificationResult) => {
      if (!r.clean || r.mismatches !== 0) {
        throw new Error(`${kind}: not clean on identical tables: ${JSON.stringify(r.counts)}`);
      }
      if (r.method === 'join' && (r.oldRows !== ROWS || r.newRows !== ROWS)) {
        throw new Error(`${kind}: saw ${r.oldRows} old / ${r.newRows} new rows, expected ${ROWS}`);
      }
    };

    const measurements: Measurement[] = [];
    const run = async (kind: Kind, round: number): Promise<void> => {
      const loadNow = load();
      if (kind === 'md5 baseline, serial' || kind === 'md5 baseline, server defaults') {
        const b = await baseline(kind === 'md5 baseline, serial');
        measurements.push({
          kind,
          round,
          ms: b.ms,
          load: loadNow,
          statements: new Map(),
          result: undefined,
          detail: b.detail,
        });
        log(`round ${round + 1}: ${kind}: ${secs(b.ms)} s (${b.detail}); load ${loadNow}`);
        return;
      }
      const options: VerifyOptions =
        kind === 'verify join'
          ? {}
          : kind === 'verify join, distinctIds off'
            ? { distinctIds: false }
            : { method: 'checksum' };
      const v = await verifyOnce(options);
      assertClean(kind, v.result);
      if (kind === 'verify join' && !chunkStatement) {
        const chunks = v.statements.filter((q) => q.sql.includes('FULL JOIN'));
        // A middle chunk (bounded on both sides) when there is one.
        chunkStatement = chunks[Math.min(1, chunks.length - 1)];
        distinctIdStatement = v.statements.find((q) => q.sql.includes("'orphan_distinct_id'"));
        quantileStatement = v.statements.find((q) => q.sql.includes('ntile('));
      }
      if (kind === 'verify checksum' && !checksumStatement) {
        const sums = v.statements.filter((q) => q.sql.includes('bit(60)'));
        checksumStatement = sums[Math.min(2, sums.length - 1)];
      }
      const statements = groupStatements(v.statements);
      measurements.push({
        kind,
        round,
        ms: v.ms,
        load: loadNow,
        statements,
        result: v.result,
        detail: `${[...statements].map(([k, s]) => `${k} ${s.n}x ${secs(s.ms)} s`).join(', ')}`,
      });
      log(
        `round ${round + 1}: ${kind}: ${secs(v.ms)} s (result.ms ${secs(v.result.ms)}); ${measurements.at(-1)?.detail}; load ${loadNow}`,
      );
    };

    // ---------------------------------------------------------------- timed runs
    const order: Kind[] = [
      'md5 baseline, serial',
      'verify join',
      'md5 baseline, server defaults',
      'verify join, distinctIds off',
      'verify checksum',
    ];
    if (WARMUP) {
      const warm = now();
      await baseline(true);
      assertClean('warm-up verify', (await verifyOnce({})).result);
      log(`warm-up (one serial md5 pass + one verify) in ${seconds(warm)}; load ${load()}`);
    }
    const loadTimedStart = load();
    const measured = now();
    for (let round = 0; round < ROUNDS; round++) {
      const shift = round % order.length;
      for (const kind of [...order.slice(shift), ...order.slice(0, shift)]) await run(kind, round);
    }
    if (digests.get(m.options.oldTable) !== digests.get(m.options.newTable)) {
      throw new Error(
        `the md5 digests of the two tables differ: ${digests.get(m.options.oldTable)} vs ${digests.get(m.options.newTable)}`,
      );
    }
    // For information: the string_agg form of the baseline (ordered, one md5 of all md5s).
    const aggStarted = now();
    const loadAgg = load();
    await client.query('BEGIN');
    try {
      await client.query('SET LOCAL max_parallel_workers_per_gather = 0');
      for (const table of [m.options.oldTable, m.options.newTable]) {
        await client.query(
          `SELECT md5(string_agg(md5(t::text), '' ORDER BY t.id)) FROM "${schema}"."${table}" AS t`,
        );
      }
    } finally {
      await client.query('ROLLBACK');
    }
    const aggMs = now() - aggStarted;
    log(`md5(string_agg(md5(t::text), '' ORDER BY id)), serial: ${secs(aggMs)} s; load ${loadAgg}`);
    // For information, once each: the whole key space in one chunk, and the default verify on
    // connections started with a planner setting (`options=-c ...`, this process only).
    const extras: { label: string; ms: number; load: string; detail: string }[] = [];
    // Other chunk sizes than the default: every chunk statement may read both whole tables.
    const chunkSizes = EXTRA ? [100_000_000, 250_000].filter((n) => n !== DEFAULTS.chunkRows) : [];
    for (const chunkRows of chunkSizes) {
      const loadNow = load();
      const v = await verifyOnce({ chunkRows });
      assertClean(`chunkRows ${chunkRows}`, v.result);
      const detail = [...groupStatements(v.statements)]
        .map(([k, x]) => `${k} ${x.n}x ${secs(x.ms)} s`)
        .join(', ');
      const label = `verify join, chunkRows ${int(chunkRows)}${chunkRows >= ROWS ? ' (one chunk)' : ''}`;
      extras.push({ label, ms: v.ms, load: loadNow, detail });
      log(`${label}: ${secs(v.ms)} s; ${detail}; load ${loadNow}`);
    }
    for (const settings of SESSION_VARIANTS) {
      const setting = settings.join(', ');
      const loadNow = load();
      const variantPool = new pg.Pool({
        connectionString: settings.reduce(withOption, url),
        max: 4,
        types: pgTypeOverrides,
      });
      const variantDb: AnyDb = new Kysely({
        dialect: new PostgresDialect({ pool: variantPool }),
        log: (event) => {
          if (recording && event.level === 'query') {
            recording.push({
              sql: event.query.sql,
              parameters: event.query.parameters,
              ms: event.queryDurationMillis,
            });
          }
        },
      });
      const variantMigration = createPersonsMigration({
        db: await openDatabase(variantDb),
        schema,
        controlSchema,
        name: NAME,
      });
      try {
        for (const one of settings) {
          const [name, value] = one.split('=') as [string, string];
          const seen = (
            await sql<{ v: string }>`SELECT current_setting(${name}) AS v`.execute(variantDb)
          ).rows[0]?.v;
          if (seen !== value) throw new Error(`${one} not applied (${seen})`);
        }
        recording = [];
        const started = now();
        const result = await variantMigration.verify({});
        const ms = now() - started;
        const statements = recording;
        recording = undefined;
        assertClean(setting, result);
        const detail = [...groupStatements(statements)]
          .map(([k, x]) => `${k} ${x.n}x ${secs(x.ms)} s`)
          .join(', ');
        extras.push({ label: `verify join, sessions with ${setting}`, ms, load: loadNow, detail });
        log(`verify join, sessions with ${setting}: ${secs(ms)} s; ${detail}; load ${loadNow}`);
      } finally {
        recording = undefined;
        await variantMigration.close().catch(() => {});
        await variantDb.destroy().catch(() => {});
      }
    }
    const loadTimedEnd = load();
    log(`measured in ${seconds(measured)}`);

    // ---------------------------------------------------------------- planted row
    const target = (
      await sql<{ team: string; id: string }>`
        SELECT team_id::text AS team, id::text AS id FROM ${newRef}
        ORDER BY team_id, id OFFSET ${Math.floor(ROWS * 0.61)} LIMIT 1`.execute(db)
    ).rows[0];
    if (!target) throw new Error('no row to plant a change in');
    const changed = await sql`UPDATE ${newRef}
      SET properties = properties || '{"bench_planted": true}'::jsonb
      WHERE team_id = ${target.team}::int AND id = ${target.id}::bigint`.execute(db);
    if (Number(changed.numAffectedRows) !== 1) throw new Error('the planted update changed no row');
    log(`planted a changed property in (team ${target.team}, id ${target.id}), same version`);
    const planted: Planted[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const methods =
        round % 2 === 0 ? (['join', 'checksum'] as const) : (['checksum', 'join'] as const);
      for (const method of methods) {
        const loadNow = load();
        const v = await verifyOnce(method === 'join' ? {} : { method });
        const r = v.result;
        const all: { teamId: number; personId: string; class: string }[] = [];
        for await (const key of m.mismatches(r.id)) all.push(key);
        const exact = (keys: readonly { teamId: number; personId: string; class: string }[]) =>
          keys.length === 1 &&
          String(keys[0]?.teamId) === target.team &&
          keys[0]?.personId === target.id &&
          keys[0]?.class === 'content_differs';
        if (r.clean || r.mismatches !== 1 || !exact(r.keys) || !exact(all) || r.truncated) {
          throw new Error(
            `planted row, ${method}: expected exactly (team ${target.team}, id ${target.id}) content_differs, got ` +
              `mismatches=${r.mismatches} keys=${JSON.stringify(r.keys)} all=${JSON.stringify(all)} counts=${JSON.stringify(r.counts)}`,
          );
        }
        if (method === 'checksum' && !bisectStatement) {
          // The first range sum after a split of a differing range: one part of the bisection.
          const split = v.statements.findIndex(
            (q, i) =>
              i > 0 &&
              q.sql.includes('ntile(') &&
              v.statements.slice(0, i).some((p) => p.sql.includes('bit(60)')),
          );
          bisectStatement = v.statements.slice(split + 1).find((q) => q.sql.includes('bit(60)'));
        }
        const statements = groupStatements(v.statements);
        planted.push({ method, round, ms: v.ms, load: loadNow, result: r, statements });
        log(
          `planted, round ${round + 1}: ${method}: found (team ${target.team}, id ${target.id}) content_differs in ${secs(v.ms)} s ` +
            `(${r.rechecks} re-check(s)); ${[...statements].map(([k, s]) => `${k} ${s.n}x ${secs(s.ms)} s`).join(', ')}; load ${loadNow}`,
        );
      }
    }

    // ---------------------------------------------------------------- plans
    const explained =
      EXPLAIN > 0
        ? await explainAll(client, {
            chunk: chunkStatement,
            distinctIds: distinctIdStatement,
            quantiles: quantileStatement,
            checksum: checksumStatement,
            bisect: bisectStatement,
          })
        : undefined;

    // ---------------------------------------------------------------- report
    const of = (kind: Kind) => measurements.filter((m) => m.kind === kind);
    const serialMs = median(of('md5 baseline, serial').map((m) => m.ms));
    const defaultMs = median(of('md5 baseline, server defaults').map((m) => m.ms));
    const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
    print(`\n## Verification of ${int(ROWS)} rows vs one md5 pass over both tables\n`);
    const table = [
      '| measurement | runs (s) | median | keys/s | vs md5 serial | vs md5 server defaults | load 1/5/15 min at each run |',
      '|---|---|---|---|---|---|---|',
    ];
    for (const kind of order) {
      const ms = of(kind);
      if (ms.length === 0) continue;
      const m = median(ms.map((x) => x.ms));
      table.push(
        `| ${kind} | ${ms.map((x) => secs(x.ms)).join(', ')} | ${secs(m)} s | ${int(ROWS / (m / 1000))} | ` +
          `${(m / serialMs).toFixed(2)}x | ${(m / defaultMs).toFixed(2)}x | ${ms.map((x) => x.load).join('; ')} |`,
      );
    }
    table.push(
      `| md5(string_agg(md5(t::text), '' ORDER BY id)) per table, serial (once, for information) | ${secs(aggMs)} | ${secs(aggMs)} s | ${int(ROWS / (aggMs / 1000))} | ${(aggMs / serialMs).toFixed(2)}x | ${(aggMs / defaultMs).toFixed(2)}x | ${loadAgg} |`,
    );
    for (const e of extras) {
      table.push(
        `| ${e.label} (once, for information) | ${secs(e.ms)} | ${secs(e.ms)} s | ${int(ROWS / (e.ms / 1000))} | ${(e.ms / serialMs).toFixed(2)}x | ${(e.ms / defaultMs).toFixed(2)}x | ${e.load} |`,
      );
    }
    print(table.join('\n'));
    print();
    if (extras.length > 0) {
      print(extras.map((e) => `- ${e.label}: ${e.detail}`).join('\n'));
      print();
    }

    const goals = ['| goal | measured | target | |', '|---|---|---|---|'];
    for (const kind of [
      'verify join',
      'verify join, distinctIds off',
      'verify checksum',
    ] as const) {
      const m = median(of(kind).map((x) => x.ms));
      goals.push(
        `| ${kind} / md5 serial | ${(m / serialMs).toFixed(2)}x | <= ${GOAL.ratio}x | ${verdict(m / serialMs <= GOAL.ratio)} |`,
      );
      goals.push(
        `| ${kind} / md5 server defaults | ${(m / defaultMs).toFixed(2)}x | <= ${GOAL.ratio}x | ${verdict(m / defaultMs <= GOAL.ratio)} |`,
      );
    }
    print(goals.join('\n'));
    print();

    // Where the verification's time goes, by kind of statement (median over rounds).
    print('### Time by kind of statement (median of the rounds, from the query log)\n');
    const kinds = [...new Set(measurements.flatMap((m) => [...m.statements.keys()]))];
    const split = [
      `| statement kind | ${['verify join', 'verify join, distinctIds off', 'verify checksum'].join(' | ')} |`,
      '|---|---|---|---|',
    ];
    for (const k of kinds) {
      const cell = (kind: Kind) => {
        const ms = of(kind).map((m) => m.statements.get(k));
        if (ms.every((s) => s === undefined)) return '-';
        return `${secs(median(ms.map((s) => s?.ms ?? 0)))} s (${median(ms.map((s) => s?.n ?? 0))} stmts)`;
      };
      split.push(
        `| ${k} | ${cell('verify join')} | ${cell('verify join, distinctIds off')} | ${cell('verify checksum')} |`,
      );
    }
    const rest = (kind: Kind) =>
      secs(
        median(
          of(kind).map((m) => m.ms - [...m.statements.values()].reduce((s, x) => s + x.ms, 0)),
        ),
      );
    split.push(
      `| wall time not in any statement (Node, pool; negative: statements overlapped) | ${rest('verify join')} s | ${rest('verify join, distinctIds off')} s | ${rest('verify checksum')} s |`,
    );
    print(split.join('\n'));
    print(
      '\n(The checksum method reads the two tables of a range concurrently, on two connections: its statement times overlap.)\n',
    );

    print(
      `### One changed row planted among ${int(ROWS)} (same version, a property changed in the new table)\n`,
    );
    const pt = [
      '| method | found | runs (s) | median | re-checks | statements (median round) | load 1/5/15 min at each run |',
      '|---|---|---|---|---|---|---|',
    ];
    for (const method of ['join', 'checksum'] as const) {
      const ps = planted.filter((p) => p.method === method);
      if (ps.length === 0) continue;
      const first = ps[0] as Planted;
      const key = first.result.keys[0];
      const m = median(ps.map((p) => p.ms));
      const stmts = [...first.statements]
        .map(([k, s]) => `${k} ${s.n}x ${secs(s.ms)} s`)
        .join(', ');
      pt.push(
        `| ${method} (default options${method === 'checksum' ? ', method checksum' : ''}) | (team ${key?.teamId}, id ${key?.personId}) ${key?.class}, exactly 1 key | ` +
          `${ps.map((p) => secs(p.ms)).join(', ')} | ${secs(m)} s | ${ps.map((p) => p.result.rechecks).join(', ')} | ${stmts} | ${ps.map((p) => p.load).join('; ')} |`,
      );
    }
    print(pt.join('\n'));
    print(
      `\n(Default settleMs is ${DEFAULTS.settleMs}: a run with an open mismatch waits ${DEFAULTS.settleMs} ms before re-checking it; that wait is in these times.)\n`,
    );

    const loadAtEnd = load();
    const machine = [
      `node ${process.version}, PostgreSQL ${facts.version} on the same host (shared_buffers ${facts.shared_buffers}, work_mem ${facts.work_mem}, jit ${facts.jit}, max_parallel_workers_per_gather ${facts.parallel}), ` +
        `${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown cpu'}), ${Math.round(totalmem() / 2 ** 30)} GiB`,
      `load average (1 / 5 / 15 min): ${loadAtStart} at start, ${loadTimedStart} when the timed runs began, ${loadTimedEnd} after them, ${loadAtEnd} at the end`,
      `old table ${int(ROWS)} persons over ${TEAMS} teams (${size.old} + ${size.oldIdx} of indexes, properties ~${size.props} B stored), one distinct id each; ` +
        `new table: the same rows by one INSERT ... SELECT (${size.new} + ${size.newIdx} of indexes); VACUUM ANALYZE of both and of the distinct ids`,
      "md5 baseline: per table `SELECT count(*), sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8) FROM table AS t` (every row's whole text through md5, summed order-free), old then new, time = the sum; " +
        '`serial` = SET LOCAL max_parallel_workers_per_gather = 0 (one backend, like the verification), `server defaults` = parallel workers allowed',
      `verifications: migration.verify() through a Kysely pg pool (max 4 connections), default options unless stated (chunkRows ${int(DEFAULTS.chunkRows)}, settleMs ${DEFAULTS.settleMs}, leafRows ${DEFAULTS.leafRows}, fanout ${DEFAULTS.fanout}); the order of the five sides rotates every round; ${WARMUP ? 'one unmeasured serial md5 pass and one verify before' : 'no warm-up'}`,
    ];
    print(machine.map((m) => `- ${m}`).join('\n'));
    print();
    if (explained) for (const line of explained) print(line);
    writeFileSync(REPORT_PATH, `${out.join('\n')}\n`);
    log(`report written to ${REPORT_PATH}`);
    log(`total ${seconds(t0)}`);
  } finally {
    await migration?.close().catch(() => {});
    await client.end().catch(() => {});
    benchBackendPid = undefined;
    await dropSchemas();
    await db.destroy().catch(() => {});
  }
}

/** `url` with `-c name=value` added to its `options` parameter (read by pg at connect). */
function withOption(base: string, setting: string): string {
  const parsed = new URL(base);
  const previous = parsed.searchParams.get('options');
  parsed.searchParams.set('options', `${previous ? `${previous} ` : ''}-c ${setting}`);
  return parsed.toString();
}

// ------------------------------------------------------------------ plans

/** A parameter as an SQL literal (the statement casts every parameter explicitly). */
function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (Array.isArray(value)) {
    const items = value.map(
      (v) => `"${String(v).replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`,
    );
    return `'{${items.join(',').replaceAll("'", "''")}}'`;
  }
  return `'${String(value).replaceAll("'", "''")}'`;
}

/** The statement with its `$n` parameters inlined as literals. */
function inline(query: LoggedQuery): string {
  return query.sql.replace(/\$(\d+)\b/g, (_, n: string) =>
    literal(query.parameters[Number(n) - 1]),
  );
}

interface Variant {
  readonly label: string;
  readonly settings: readonly string[];
  readonly sql: string;
}

interface Section {
  readonly title: string;
  readonly variants: readonly Variant[];
}

/**
 * EXPLAIN (ANALYZE, BUFFERS) of statements the verification sent (captured from the query log,
 * parameters inlined) and of variants of them, each in a transaction rolled back (a statement
 * that stores mismatched keys stores nothing that stays).
 */
async function explainAll(
  client: pg.Client,
  captured: {
    chunk: LoggedQuery | undefined;
    distinctIds: LoggedQuery | undefined;
    quantiles: LoggedQuery | undefined;
    checksum: LoggedQuery | undefined;
    bisect: LoggedQuery | undefined;
  },
): Promise<string[]> {
  const sections: Section[] = [];
  if (captured.chunk) {
    const sent = inline(captured.chunk);
    const variants: Variant[] = [
      { label: 'as sent', settings: [], sql: sent },
      { label: 'as sent, jit off', settings: ['jit = off'], sql: sent },
      { label: 'as sent, enable_hashjoin off', settings: ['enable_hashjoin = off'], sql: sent },
      {
        label: 'as sent, enable_hashjoin off + enable_sort off (jit on)',
        settings: ['enable_hashjoin = off', 'enable_sort = off'],
        sql: sent,
      },
      {
        label: 'PROPOSED: as sent, enable_hashjoin off + enable_sort off + jit off',
        settings: ['enable_hashjoin = off', 'enable_sort = off', 'jit = off'],
        sql: sent,
      },
      { label: 'as sent, work_mem 64MB', settings: ["work_mem = '64MB'"], sql: sent },
      { label: 'as sent, random_page_cost 1.1', settings: ['random_page_cost = 1.1'], sql: sent },
    ];
    const noStore = sent.replace(
      /,\s*stored AS \(\s*INSERT[\s\S]*?ON CONFLICT DO NOTHING\s*\)/,
      '',
    );
    if (noStore !== sent) {
      variants.push({
        label: 'without the INSERT of mismatched keys (scan, classify, count)',
        settings: [],
        sql: noStore,
      });
      variants.push({
        label: 'without the INSERT, enable_hashjoin off',
        settings: ['enable_hashjoin = off'],
        sql: noStore,
      });
    }
    const ranges = [
      ...sent.matchAll(/FROM ("[^"]+"\."[^"]+") AS t\s+WHERE ([\s\S]*?)\) AS (o|n)/g),
    ];
    const oldRange = ranges.find((m) => m[3] === 'o');
    const newRange = ranges.find((m) => m[3] === 'n');
    if (oldRange && newRange) {
      variants.push({
        label: 'bare FULL JOIN of the two ranges, count(*) only',
        settings: [],
        sql: `SELECT count(*) FROM (SELECT t.team_id, t.id FROM ${oldRange[1]} AS t WHERE ${oldRange[2]}) AS o
        FULL JOIN (SELECT t.team_id, t.id FROM ${newRange[1]} AS t WHERE ${newRange[2]}) AS n
        ON n.team_id = o.team_id AND n.id = o.id`,
      });
      for (const [label, m] of [
        ['old', oldRange],
        ['new', newRange],
      ] as const) {
        variants.push({
          label: `md5 baseline of the same range, ${label} table (serial)`,
          settings: ['max_parallel_workers_per_gather = 0'],
          sql: `SELECT count(*), sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8) FROM ${m[1]} AS t WHERE ${m[2]}`,
        });
      }
    }
    sections.push({ title: 'One chunk statement of the join check (the second chunk)', variants });
  }
  if (captured.distinctIds) {
    const sent = inline(captured.distinctIds);
    sections.push({
      title: 'The distinct-id check (one statement over every key)',
      variants: [
        { label: 'as sent', settings: [], sql: sent },
        { label: 'as sent, work_mem 64MB', settings: ["work_mem = '64MB'"], sql: sent },
      ],
    });
  }
  if (captured.quantiles) {
    sections.push({
      title: 'The key quantiles cutting the key space into chunks (planning)',
      variants: [{ label: 'as sent', settings: [], sql: inline(captured.quantiles) }],
    });
  }
  if (captured.checksum) {
    sections.push({
      title: 'One range sum of the checksum check (a chunk, one side)',
      variants: [{ label: 'as sent', settings: [], sql: inline(captured.checksum) }],
    });
  }
  if (captured.bisect) {
    sections.push({
      title: 'One range sum of the bisection (a part of the differing chunk, planted run)',
      variants: [{ label: 'as sent', settings: [], sql: inline(captured.bisect) }],
    });
  }
  const lines: string[] = [];
  for (const section of sections) {
    const results: { variant: Variant; plan: string }[] = [];
    for (const variant of section.variants) {
      await client.query('BEGIN');
      try {
        for (const s of variant.settings) await client.query(`SET LOCAL ${s}`);
        const rows = (await client.query(`EXPLAIN (ANALYZE, BUFFERS) ${variant.sql}`)).rows as {
          'QUERY PLAN': string;
        }[];
        results.push({ variant, plan: rows.map((r) => r['QUERY PLAN']).join('\n') });
      } finally {
        await client.query('ROLLBACK');
      }
      log(`explained: ${section.title}: ${variant.label}; load ${load()}`);
    }
    lines.push(`## ${section.title}: EXPLAIN (ANALYZE, BUFFERS)\n`);
    lines.push(
      `- captured from the query log of a measured \`verify()\` (parameters inlined), run in a transaction rolled back; load at the end ${load()}\n`,
    );
    const summary = [
      '| variant | rows (join, else first scan) | join | scans | sorts / hashes | shared hit / read | temp read / written (blocks) | JIT | execution |',
      '|---|---|---|---|---|---|---|---|---|',
    ];
    for (const { variant, plan } of results) summary.push(summarize(variant.label, plan));
    lines.push(summary.join('\n'));
    lines.push('');
    const [first] = results;
    if (first) {
      lines.push(
        `### ${section.title}: as sent\n\n\`\`\`sql\n${first.variant.sql.trim()}\n\`\`\`\n\n\`\`\`\n${first.plan}\n\`\`\`\n`,
      );
    }
    if (EXPLAIN > 1) {
      for (const { variant, plan } of results.slice(1)) {
        lines.push(`### ${section.title}: ${variant.label}\n\n\`\`\`\n${plan}\n\`\`\`\n`);
      }
    }
  }
  return lines;
}

function summarize(label: string, plan: string): string {
  const join = /(Merge|Hash|Nested Loop) (Full |Left |Right |Anti |Semi )?Join/.exec(plan);
  const joinRows = join
    ? /actual time=[\d.]+\.\.[\d.]+ rows=(\d+)/.exec(plan.slice(join.index))?.[1]
    : undefined;
  const scans = [
    ...plan.matchAll(
      /(Index Only Scan|Bitmap Index Scan|Index Scan|Seq Scan|Bitmap Heap Scan)(?: using (\S+))? on (\S+)[^\n]*?(?:rows=(\d+) loops=(\d+)\)|\(never executed\))/g,
    ),
  ];
  const firstScan = scans[0];
  const firstScanRows =
    firstScan?.[4] !== undefined ? String(Number(firstScan[4]) * Number(firstScan[5])) : undefined;
  const scanText = scans
    .map(
      (m) =>
        `${m[1]}${m[2] ? ` (${m[2]})` : ''} on ${m[3]}${m[4] ? ` ${int(Number(m[4]) * Number(m[5]))} rows` : ''}`,
    )
    .join('; ');
  const sorts = [
    ...plan.matchAll(
      /Sort Method: ([^\n]*)|Buckets: \d+[^\n]*Batches: (\d+)[^\n]*Memory Usage: (\d+)kB/g,
    ),
  ]
    .map((m) => (m[1] ? `sort ${m[1].trim()}` : `hash ${m[2]} batches, ${m[3]} kB`))
    .join('; ');
  const buffers = /Buffers: shared((?: hit=\d+)?(?: read=\d+)?)/.exec(plan)?.[1]?.trim();
  const tempBoth = /temp read=(\d+) written=(\d+)/.exec(plan);
  const tempWritten = /temp written=(\d+)/.exec(plan);
  const temp = tempBoth
    ? `${tempBoth[1]} / ${tempBoth[2]}`
    : tempWritten
      ? `0 / ${tempWritten[1]}`
      : '-';
  const jit = /JIT:[\s\S]*?Timing: [^\n]*Total ([\d.]+ ms)/.exec(plan)?.[1];
  const exec = /Execution Time: ([\d.]+) ms/.exec(plan)?.[1];
  const rows = joinRows ?? firstScanRows;
  return `| ${label} | ${rows ? int(Number(rows)) : '?'} | ${join?.[0] ?? '-'} | ${scanText || '-'} | ${sorts || '-'} | ${buffers ?? '-'} | ${temp} | ${jit ? `on, ${jit}` : 'off / below cost'} | ${exec ? int(Number(exec)) : '?'} ms |`;
}

main().catch(async (err) => {
  console.error(err);
  await dropSchemas();
  process.exitCode = 1;
});

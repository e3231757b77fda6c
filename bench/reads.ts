/**
 * Read-latency benchmark: the dual-read repository against the same reads on one table.
 *
 *   npx tsx bench/reads.ts          (or `npm run bench`)
 *
 * Needs a real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
 * Creates two uniquely named schemas (the persons tables, and the control schema) and drops
 * them at the end, also on failure and on Ctrl-C. Changes no server setting.
 *
 * Setup: `createPostHogPersonsSchema` + `seedPersons` (a few teams, ~0.5 KB of properties),
 * `install()`, `prepare()`, `startDualRead()`, then a mid-migration state: half of the persons
 * copied to the new table (`id % 2 = 0`, as a backfill would), some persons updated through the
 * repository (copy-on-write for the not-yet-copied ones), VACUUM ANALYZE.
 *
 * Measured (one connection in flight, sequential awaits: latency, not throughput):
 * - baseline: the read a service does today on the old table alone, through the same
 *   Kysely/pg pool, with the same row mapping (`toPersonRow`) as the repository;
 * - dual_read: `repository.fetchPerson` / `fetchPersonsByDistinctIds` /
 *   `fetchPersonsByPersonIds`, with the same keys (spread over copied and not-copied persons).
 * Baseline and candidate alternate op by op, and the order of the sides rotates every op, to
 * cancel drift and first-touch cache effects. Then EXPLAIN (ANALYZE, BUFFERS) of the statements
 * the repository sends, and scratch SQL variants of the dual read (never the library's code).
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_PERSONS [200000]   BENCH_TEAMS [4]        BENCH_PROPERTIES_BYTES [500]
 *   BENCH_POINT [3000]       BENCH_BATCH [200]      BENCH_BATCH_SIZE [1000]
 *   BENCH_PARTITIONS [0]     hash partitions of the new table (0: not partitioned)
 *   BENCH_UPDATES [1000]     persons updated through the repository after the copy
 *   BENCH_EXPLAIN [1]        0 none, 1 a summary line per plan, 2 also the full plans
 *   BENCH_VARIANTS [1]       also time scratch SQL variants (1/3 of the point, 1/4 of the batch ops)
 *   BENCH_SEED [42]          random seed of the key choice
 */
import { cpus, loadavg } from 'node:os';
import { CompiledQuery, type Kysely, type RawBuilder, sql } from 'kysely';
import pg from 'pg';
import { pgTypeOverrides } from '../src/db/type-parsers.js';
import { createPersonsMigration, openDatabase, type PersonsMigration } from '../src/index.js';
import { PersonReads } from '../src/repository/person-reads.js';
import { toPersonRow } from '../src/repository/person-row.js';
import {
  columnList,
  loadPersonColumns,
  type MigrationTables,
  migrationTables,
  type PersonColumns,
} from '../src/repository/repository-context.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';

// biome-ignore lint/suspicious/noExplicitAny: tables are named at run time.
type AnyDb = Kysely<any>;
type Row = Record<string, unknown>;

const env = (name: string, fallback: number) => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number >= 0`);
  return value;
};

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PERSONS = env('BENCH_PERSONS', 200_000);
const TEAMS = Math.max(1, env('BENCH_TEAMS', 4));
const PROPERTIES_BYTES = env('BENCH_PROPERTIES_BYTES', 500);
const POINT_OPS = Math.max(1, env('BENCH_POINT', 3_000));
const BATCH_OPS = Math.max(1, env('BENCH_BATCH', 200));
const BATCH_SIZE = Math.max(1, env('BENCH_BATCH_SIZE', 1_000));
const PARTITIONS = env('BENCH_PARTITIONS', 0);
const UPDATES = env('BENCH_UPDATES', 1_000);
const EXPLAIN = env('BENCH_EXPLAIN', 1);
const VARIANTS = env('BENCH_VARIANTS', 1) > 0;
let seed = env('BENCH_SEED', 42) >>> 0 || 1;

const GOAL = { point: 1.2, batch: 1.3 };

const stamp = `${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;
const schema = `bench_reads_${stamp}`;
const controlSchema = `bench_reads_ctl_${stamp}`;

// ------------------------------------------------------------------ small helpers

/** xorshift32: a reproducible key choice. */
function random(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x1_0000_0000;
}

/** `n` distinct indexes below `from`. */
function pickIndexes(n: number, from: number): number[] {
  const chosen = new Set<number>();
  while (chosen.size < Math.min(n, from)) chosen.add(Math.floor(random() * from));
  return [...chosen];
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = sorted[lo] as number;
  return a + ((sorted[hi] as number) - a) * (pos - lo);
}

interface Stats {
  readonly n: number;
  readonly median: number;
  readonly p95: number;
  readonly rows: number;
}

const fmt = (v: number) => (v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const seconds = (since: number) => `${((now() - since) / 1000).toFixed(1)} s`;
const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

interface Side {
  readonly name: string;
  /** Runs op `i`, returns the number of rows it got. */
  readonly run: (i: number) => Promise<number>;
}

/**
 * Runs `ops` operations of every side, alternating op by op; the order of the sides rotates
 * every op so that none of them is always first (first-touch cache misses, drift).
 */
async function interleave(ops: number, sides: readonly Side[]): Promise<Map<string, Stats>> {
  const samples = sides.map(() => [] as number[]);
  const rows = sides.map(() => 0);
  for (let i = 0; i < ops; i++) {
    for (let k = 0; k < sides.length; k++) {
      const s = (i + k) % sides.length;
      const t0 = now();
      const n = await (sides[s] as Side).run(i);
      (samples[s] as number[]).push(now() - t0);
      rows[s] = (rows[s] as number) + n;
    }
  }
  return new Map(
    sides.map((side, s) => {
      const sorted = [...(samples[s] as number[])].sort((a, b) => a - b);
      return [
        side.name,
        {
          n: sorted.length,
          median: quantile(sorted, 0.5),
          p95: quantile(sorted, 0.95),
          rows: rows[s] as number,
        },
      ];
    }),
  );
}

// ------------------------------------------------------------------ cleanup

let cleanedUp = false;
async function dropSchemas(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  // A fresh client: the pool may be what failed.
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.query(`DROP SCHEMA IF EXISTS "${controlSchema}" CASCADE`);
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
    void dropSchemas().finally(() => process.exit(130));
  });
}

// ------------------------------------------------------------------ statements

interface Person {
  readonly teamId: number;
  readonly distinctId: string;
  readonly id: string;
}

/**
 * Every statement the benchmark sends. `repo*` are built exactly as the repository builds
 * them (PersonReads + the epoch wrapper of `PhaseAwareRepository.read()`); `gated*` and
 * `floor*` are scratch variants, here only.
 */
function statements(tables: MigrationTables, columns: PersonColumns, migrationName: string) {
  const { old, distinctIds: dist, control } = tables;
  const reads = new PersonReads(tables, columns);
  const teams = (ps: readonly Person[]) => ps.map((p) => p.teamId);

  /** Copy of the wrapper in `PhaseAwareRepository.read()`. */
  const wrap = (inner: RawBuilder<unknown>) => sql`SELECT c.epoch::text AS pg_dual_read_epoch, r.*
          FROM (SELECT epoch FROM ${control} WHERE name = ${migrationName}) AS c
          LEFT JOIN LATERAL (SELECT true AS pg_dual_read_found, x.* FROM (${inner}) AS x) AS r
            ON true`;

  /** The same wrapper with the dual read fenced off (OFFSET 0): planned as its own subquery. */
  const wrapFenced = (
    inner: RawBuilder<unknown>,
  ) => sql`SELECT c.epoch::text AS pg_dual_read_epoch, r.*
          FROM (SELECT epoch FROM ${control} WHERE name = ${migrationName}) AS c
          LEFT JOIN (SELECT true AS pg_dual_read_found, x.* FROM (${inner}) AS x OFFSET 0) AS r
            ON true`;

  /**
   * Scratch copy of `PersonReads.byKeys('dual_read', ...)` with ONE change: `OFFSET 0` in the
   * LATERAL subquery, which stops the planner from pulling it up into the join (where
   * `n.id IS NULL` becomes a join filter applied AFTER the old-table probe). Kept as a
   * subquery, `n.id IS NULL` is a one-time filter of a Result node above the probe, re-checked
   * per outer row: keys found in the new table never touch the old table.
   */
  const gatedByKeys = (keys: RawBuilder<unknown>, extra: readonly string[] = []) => {
    const picked = columns.all.map(
      (c) =>
        sql`CASE WHEN n.id IS NOT NULL THEN n.${sql.id(c)} ELSE o.${sql.id(c)} END AS ${sql.id(c)}`,
    );
    return sql`SELECT ${sql.join([...extra.map((c) => sql`k.${sql.id(c)}`), ...picked])}
      FROM (${keys}) AS k
      LEFT JOIN ${tables.new} AS n ON n.team_id = k.team_id AND n.id = k.person_id
      LEFT JOIN LATERAL (
        SELECT * FROM ${old} AS o0
        WHERE o0.team_id = k.team_id AND o0.id = k.person_id AND n.id IS NULL
        OFFSET 0
      ) AS o ON true
      WHERE n.id IS NOT NULL OR o.id IS NOT NULL`;
  };

  const pointKeys = (p: Person) => reads.distinctIdKey(p.teamId, p.distinctId);
  const distinctKeys = (ps: readonly Person[]) =>
    reads.distinctIdKeys(
      teams(ps),
      ps.map((p) => p.distinctId),
    );
  const idKeys = (ps: readonly Person[]) =>
    reads.personIdKeys(
      teams(ps),
      ps.map((p) => p.id),
    );

  return {
    wrap,
    baseline: {
      point: (p: Person) => sql`SELECT p.* FROM ${dist} AS d
        JOIN ${old} AS p ON p.team_id = d.team_id AND p.id = d.person_id
        WHERE d.team_id = ${p.teamId} AND d.distinct_id = ${p.distinctId}`,
      byDistinctIds: (ps: readonly Person[]) => sql`SELECT d.distinct_id, p.*
        FROM unnest(${teams(ps)}::int[], ${ps.map((p) => p.distinctId)}::text[]) AS q(team_id, distinct_id)
        JOIN ${dist} AS d ON d.team_id = q.team_id AND d.distinct_id = q.distinct_id
        JOIN ${old} AS p ON p.team_id = d.team_id AND p.id = d.person_id`,
      byPersonIds: (ps: readonly Person[]) => sql`SELECT p.*
        FROM unnest(${teams(ps)}::int[], ${ps.map((p) => p.id)}::bigint[]) AS q(team_id, person_id)
        JOIN ${old} AS p ON p.team_id = q.team_id AND p.id = q.person_id`,
    },
    /** As the repository sends them (with the epoch wrapper). */
    repo: {
      point: (p: Person) => wrap(reads.byKeys('dual_read', pointKeys(p))),
      byDistinctIds: (ps: readonly Person[]) =>
        wrap(reads.byKeys('dual_read', distinctKeys(ps), ['distinct_id'])),
      byPersonIds: (ps: readonly Person[]) => wrap(reads.byKeys('dual_read', idKeys(ps))),
    },
    gated: {
      point: (p: Person) => wrap(gatedByKeys(pointKeys(p))),
      pointUnwrapped: (p: Person) => gatedByKeys(pointKeys(p)),
      pointFenced: (p: Person) => wrapFenced(gatedByKeys(pointKeys(p))),
      byDistinctIds: (ps: readonly Person[]) =>
        wrap(gatedByKeys(distinctKeys(ps), ['distinct_id'])),
      byPersonIds: (ps: readonly Person[]) => wrap(gatedByKeys(idKeys(ps))),
    },
    /** The least any one-statement merged point read can do: three index probes, no CASE, no epoch. */
    floor: {
      point: (p: Person) => sql`SELECT ${columnList(columns.all, 'n')}, o.id AS old_id
        FROM ${dist} AS d
        LEFT JOIN ${tables.new} AS n ON n.team_id = d.team_id AND n.id = d.person_id
        LEFT JOIN ${old} AS o ON o.team_id = d.team_id AND o.id = d.person_id
        WHERE d.team_id = ${p.teamId} AND d.distinct_id = ${p.distinctId}`,
    },
  };
}

/** What `PhaseAwareRepository.read()` does with the wrapped rows (epoch already known equal). */
function unwrap(rows: Row[]) {
  return rows
    .filter((row) => row.pg_dual_read_found === true)
    .map(({ pg_dual_read_epoch: _e, pg_dual_read_found: _f, ...row }) => toPersonRow(row));
}

const signature = (rows: readonly Row[]) =>
  rows
    .map((r) => `${String(r.id)}:${String(r.version)}:${String(r.distinct_id ?? '')}`)
    .sort()
    .join(',');

// ------------------------------------------------------------------ the benchmark

async function main(): Promise<void> {
  const t0 = now();
  const loadBefore = loadavg();
  const handle = await openDatabase(url, { maxConnections: 4 });
  const db = handle.db as AnyDb;
  // Only for the "prepared statement" variants: one connection, named statements, the
  // library's int8 parsers.
  const preparedPool = new pg.Pool({ connectionString: url, max: 1, types: pgTypeOverrides });
  let migration: PersonsMigration | undefined;
  try {
    const facts = (
      await sql<{ version: string; shared_buffers: string; jit: string; jit_above_cost: string }>`
        SELECT current_setting('server_version') AS version,
          current_setting('shared_buffers') AS shared_buffers, current_setting('jit') AS jit,
          current_setting('jit_above_cost') AS jit_above_cost`.execute(db)
    ).rows[0] as { version: string; shared_buffers: string; jit: string; jit_above_cost: string };

    // ---------------------------------------------------------------- setup
    log(
      `schema ${schema}: seeding ${PERSONS} persons over ${TEAMS} teams (~${PROPERTIES_BYTES} B properties)`,
    );
    await createPostHogPersonsSchema(handle, { schema });
    const persons: Person[] = [];
    const perTeam = Math.ceil(PERSONS / TEAMS);
    for (let team = 1; team <= TEAMS && persons.length < PERSONS; team++) {
      const count = Math.min(perTeam, PERSONS - persons.length);
      const ids = await seedPersons(handle, {
        schema,
        teamId: team,
        count,
        propertiesBytes: PROPERTIES_BYTES,
      });
      for (const [i, id] of ids.entries()) {
        persons.push({ teamId: team, distinctId: `seed-${i + 1}`, id });
      }
    }
    log(`seeded in ${seconds(t0)}`);

    migration = createPersonsMigration({ db: handle, schema, controlSchema });
    await migration.install();
    await migration.prepare(PARTITIONS > 0 ? { partitions: PARTITIONS } : {});
    await migration.startDualRead();
    const repo = migration.repository();
    const tables = migrationTables(migration.options);
    const columns = await loadPersonColumns(db, migration.options);
    const q = statements(tables, columns, migration.options.name);

    // Mid-migration: about half of the persons copied (as a backfill would), then some
    // persons updated through the repository (copy-on-write for the ones not copied yet).
    const copyStart = now();
    await sql`INSERT INTO ${tables.new} (${columnList(columns.copyable)})
      SELECT ${columnList(columns.copyable)} FROM ${tables.old} WHERE id % 2 = 0`.execute(db);
    const updated = pickIndexes(UPDATES, persons.length);
    for (const index of updated) {
      const p = persons[index] as Person;
      await repo.updatePerson(p.teamId, p.id, { properties: { bench_updated: true } });
    }
    for (const table of [tables.old, tables.new, tables.distinctIds]) {
      await sql`VACUUM ANALYZE ${table}`.execute(db);
    }
    const inNew = new Set(
      (await sql<{ id: string }>`SELECT id::text AS id FROM ${tables.new}`.execute(db)).rows.map(
        (r) => r.id,
      ),
    );
    log(
      `copied ${inNew.size} persons (${updated.length} repository updates) + VACUUM ANALYZE in ${seconds(copyStart)}`,
    );

    // ---------------------------------------------------------------- keys
    const pointKeys = Array.from(
      { length: POINT_OPS },
      () => persons[Math.floor(random() * persons.length)] as Person,
    );
    const batchKeys = Array.from({ length: BATCH_OPS }, () =>
      pickIndexes(BATCH_SIZE, persons.length).map((i) => persons[i] as Person),
    );
    const pointInNew = pointKeys.filter((p) => inNew.has(p.id)).length / pointKeys.length;

    const rowsOf = async (query: RawBuilder<unknown>) => (await query.execute(db)).rows as Row[];
    const prepared = async (name: string, query: RawBuilder<unknown>) => {
      const compiled = query.compile(db);
      const result = await preparedPool.query({
        name,
        text: compiled.sql,
        values: [...compiled.parameters],
      });
      return result.rows as Row[];
    };
    /** The same pg connection as `prepared`, without a statement name (parsed and planned every time). */
    const unnamed = async (query: RawBuilder<unknown>) => {
      const compiled = query.compile(db);
      return (await preparedPool.query(compiled.sql, [...compiled.parameters])).rows as Row[];
    };
    const asPairs = (ps: readonly Person[]) =>
      ps.map((p) => ({ teamId: p.teamId, distinctId: p.distinctId }));
    const asIdPairs = (ps: readonly Person[]) =>
      ps.map((p) => ({ teamId: p.teamId, personId: p.id }));
    const batch = (i: number) => batchKeys[i] as Person[];
    const key = (i: number) => pointKeys[i] as Person;

    // Sanity: the repository, the baseline and the scratch variants return the same rows.
    {
      const sample = batch(0);
      const expected = signature(await repo.fetchPersonsByDistinctIds(asPairs(sample)));
      const checks: [string, string][] = [
        ['baseline', signature((await rowsOf(q.baseline.byDistinctIds(sample))).map(toPersonRow))],
        ['gated', signature(unwrap(await rowsOf(q.gated.byDistinctIds(sample))))],
      ];
      const expectedById = signature(await repo.fetchPersonsByPersonIds(asIdPairs(sample)));
      checks.push(['gated by id', signature(unwrap(await rowsOf(q.gated.byPersonIds(sample))))]);
      for (const [name, got] of checks) {
        const want = name === 'gated by id' ? expectedById : expected;
        const same =
          name === 'baseline' ? got.split(',').length === want.split(',').length : got === want;
        if (!same) throw new Error(`sanity: ${name} returns other rows than the repository`);
      }
      const updatedIds = new Set(updated.map((i) => (persons[i] as Person).id));
      const stale = (await repo.fetchPersonsByDistinctIds(asPairs(sample))).filter(
        (r) => updatedIds.has(r.id) && r.version !== 1,
      );
      if (stale.length > 0)
        throw new Error('sanity: a dual read returned a stale copy of an updated person');
    }

    // ---------------------------------------------------------------- timed sides
    const sides = {
      point: [
        {
          name: 'baseline',
          run: async (i) => (await rowsOf(q.baseline.point(key(i)))).map(toPersonRow).length,
        },
        {
          name: 'dual',
          run: async (i) => ((await repo.fetchPerson(key(i).teamId, key(i).distinctId)) ? 1 : 0),
        },
      ] satisfies Side[],
      byDistinct: [
        {
          name: 'baseline',
          run: async (i) =>
            (await rowsOf(q.baseline.byDistinctIds(batch(i)))).map(toPersonRow).length,
        },
        {
          name: 'dual',
          run: async (i) => (await repo.fetchPersonsByDistinctIds(asPairs(batch(i)))).length,
        },
      ] satisfies Side[],
      byId: [
        {
          name: 'baseline',
          run: async (i) =>
            (await rowsOf(q.baseline.byPersonIds(batch(i)))).map(toPersonRow).length,
        },
        {
          name: 'dual',
          run: async (i) => (await repo.fetchPersonsByPersonIds(asIdPairs(batch(i)))).length,
        },
      ] satisfies Side[],
    };

    const warm = now();
    await interleave(Math.min(POINT_OPS, 500), sides.point);
    await interleave(Math.min(BATCH_OPS, 15), sides.byDistinct);
    await interleave(Math.min(BATCH_OPS, 15), sides.byId);
    log(`warm-up ${seconds(warm)}`);

    const measured = now();
    const pointResult = await interleave(POINT_OPS, sides.point);
    const distinctResult = await interleave(BATCH_OPS, sides.byDistinct);
    const idResult = await interleave(BATCH_OPS, sides.byId);
    log(`measured in ${seconds(measured)}`);

    const table = [
      '| op | baseline median (p95) | dual-read median (p95) | ratio of medians | goal |',
      '|---|---|---|---|---|',
    ];
    const line = (op: string, result: Map<string, Stats>, goal: number) => {
      const b = result.get('baseline') as Stats;
      const d = result.get('dual') as Stats;
      const ratio = d.median / b.median;
      table.push(
        `| ${op} | ${fmt(b.median)} ms (${fmt(b.p95)}) | ${fmt(d.median)} ms (${fmt(d.p95)}) | ${ratio.toFixed(2)}x | ${goal}x: ${ratio <= goal ? 'met' : 'missed'} |`,
      );
      if (b.rows !== d.rows)
        table.push(`| (rows differ: baseline ${b.rows}, dual ${d.rows}) | | | | |`);
    };
    line(`fetchPerson (n=${POINT_OPS})`, pointResult, GOAL.point);
    line(
      `fetchPersonsByDistinctIds, ${BATCH_SIZE} ids (n=${BATCH_OPS})`,
      distinctResult,
      GOAL.batch,
    );
    line(`fetchPersonsByPersonIds, ${BATCH_SIZE} ids (n=${BATCH_OPS})`, idResult, GOAL.batch);

    const loadAfter = loadavg();
    const machine = [
      `node ${process.version}, PostgreSQL ${facts.version} on the same host (shared_buffers ${facts.shared_buffers}, jit ${facts.jit}), ` +
        `${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown cpu'}), load average ${loadBefore[0]?.toFixed(1)} -> ${loadAfter[0]?.toFixed(1)}`,
      `old table ${persons.length} persons over ${TEAMS} teams (~${PROPERTIES_BYTES} B properties); new table ${inNew.size} ` +
        `(${PARTITIONS > 0 ? `${PARTITIONS} hash partitions` : 'not partitioned'}; every even id copied, then ${updated.length} persons updated through the repository); ` +
        `${(pointInNew * 100).toFixed(0)}% of the point keys are in the new table`,
      'one connection in flight; baseline = the same read on the old table only, same pool, same row mapping; ' +
        'sides interleaved op by op; median (p95)',
    ];
    console.log('\n## Read latency: dual_read vs one table\n');
    console.log(table.join('\n'));
    console.log(`\n${machine.map((m) => `- ${m}`).join('\n')}\n`);

    // ---------------------------------------------------------------- plans
    if (EXPLAIN > 0) {
      const oldName = migration.options.oldTable;
      const summary = [
        '| statement | keys | old-table probes | gate on `n.id IS NULL` | buffers | planning | execution | est. cost |',
        '|---|---|---|---|---|---|---|---|',
      ];
      const full: string[] = [];
      const explain = async (label: string, query: RawBuilder<unknown>, keys: number) => {
        const compiled = query.compile(db);
        const run = (options: string) =>
          db.executeQuery(
            CompiledQuery.raw(`EXPLAIN (${options}) ${compiled.sql}`, [...compiled.parameters]),
          );
        const lines = ((await run('ANALYZE, BUFFERS, COSTS OFF')).rows as Row[]).map((r) =>
          String(r['QUERY PLAN']),
        );
        const json = ((await run('FORMAT JSON')).rows as Row[])[0]?.['QUERY PLAN'] as [
          { Plan: { 'Total Cost': number } },
        ];
        const text = lines.join('\n');
        const probe = new RegExp(
          `Scan using \\S+ on ${oldName} \\w+ \\((?:actual [^)]*loops=(\\d+)|(never executed))\\)`,
        ).exec(text);
        const gate = /One-Time Filter: \(n\.id IS NULL\)/.test(text)
          ? 'one-time filter (before the probe)'
          : /Join Filter: \(n\.id IS NULL\)/.test(text)
            ? 'join filter (after the probe)'
            : '-';
        const buffers = /Buffers: (shared [^\n]*)/.exec(text)?.[1] ?? '';
        const planning = /Planning Time: ([\d.]+) ms/.exec(text)?.[1] ?? '?';
        const execution = /Execution Time: ([\d.]+) ms/.exec(text)?.[1] ?? '?';
        summary.push(
          `| ${label} | ${keys} | ${probe ? (probe[1] ?? '0') : '?'} | ${gate} | ${buffers} | ${planning} ms | ${execution} ms | ${Math.round(json[0].Plan['Total Cost'])} |`,
        );
        full.push(`### ${label}\n\n\`\`\`\n${text}\n\`\`\`\n`);
      };
      const inNewKey = pointKeys.find((p) => inNew.has(p.id)) as Person;
      const oldOnlyKey = pointKeys.find((p) => !inNew.has(p.id)) as Person;
      const b0 = batch(0);
      const b0InNew = b0.filter((p) => inNew.has(p.id)).length;
      // Run each once first so the plans show a warm cache, as in the timed runs.
      const plans: [string, RawBuilder<unknown>, number][] = [
        ['baseline point', q.baseline.point(inNewKey), 1],
        ['repository point, key in new', q.repo.point(inNewKey), 1],
        ['repository point, key only in old', q.repo.point(oldOnlyKey), 1],
        ['gated point, key in new', q.gated.point(inNewKey), 1],
        ['gated point, key only in old', q.gated.point(oldOnlyKey), 1],
        ['baseline by distinct ids', q.baseline.byDistinctIds(b0), b0.length],
        [`repository by distinct ids (${b0InNew} in new)`, q.repo.byDistinctIds(b0), b0.length],
        ['gated by distinct ids', q.gated.byDistinctIds(b0), b0.length],
        ['baseline by person ids', q.baseline.byPersonIds(b0), b0.length],
        ['repository by person ids', q.repo.byPersonIds(b0), b0.length],
        ['gated by person ids', q.gated.byPersonIds(b0), b0.length],
      ];
      for (const [, query] of plans) await rowsOf(query);
      for (const [label, query, keys] of plans) await explain(label, query, keys);
      console.log(`## Plans (EXPLAIN ANALYZE, BUFFERS; jit_above_cost ${facts.jit_above_cost})\n`);
      console.log(summary.join('\n'));
      console.log('');
      if (EXPLAIN > 1) console.log(full.join('\n'));
    }

    // ---------------------------------------------------------------- scratch variants
    if (VARIANTS) {
      const vPoint = Math.max(1, Math.floor(POINT_OPS / 3));
      const vBatch = Math.max(1, Math.floor(BATCH_OPS / 4));
      const variants = {
        point: [
          ...sides.point,
          {
            name: 'repository SQL, sent raw',
            run: async (i) => unwrap(await rowsOf(q.repo.point(key(i)))).length,
          },
          {
            name: 'gated (OFFSET 0 lateral)',
            run: async (i) => unwrap(await rowsOf(q.gated.point(key(i)))).length,
          },
          {
            name: 'gated + fenced wrapper (OFFSET 0)',
            run: async (i) => unwrap(await rowsOf(q.gated.pointFenced(key(i)))).length,
          },
          {
            name: 'gated, without the epoch wrapper (not safe alone)',
            run: async (i) =>
              (await rowsOf(q.gated.pointUnwrapped(key(i)))).map(toPersonRow).length,
          },
          {
            name: 'floor: 3 probes, no CASE, no epoch (not a fix)',
            run: async (i) => (await rowsOf(q.floor.point(key(i)))).length,
          },
          {
            name: 'baseline, raw pg unnamed (no Kysely)',
            run: async (i) => (await unnamed(q.baseline.point(key(i)))).map(toPersonRow).length,
          },
          {
            name: 'gated, raw pg unnamed (no Kysely)',
            run: async (i) => unwrap(await unnamed(q.gated.point(key(i)))).length,
          },
          {
            name: 'baseline, prepared',
            run: async (i) =>
              (await prepared('b_point', q.baseline.point(key(i)))).map(toPersonRow).length,
          },
          {
            name: 'repository SQL, prepared',
            run: async (i) => unwrap(await prepared('r_point', q.repo.point(key(i)))).length,
          },
          {
            name: 'gated, prepared',
            run: async (i) => unwrap(await prepared('g_point', q.gated.point(key(i)))).length,
          },
        ] satisfies Side[],
        byDistinct: [
          ...sides.byDistinct,
          {
            name: 'gated (OFFSET 0 lateral)',
            run: async (i) => unwrap(await rowsOf(q.gated.byDistinctIds(batch(i)))).length,
          },
          {
            name: 'baseline, prepared',
            run: async (i) =>
              (await prepared('b_dist', q.baseline.byDistinctIds(batch(i)))).map(toPersonRow)
                .length,
          },
          {
            name: 'gated, prepared',
            run: async (i) =>
              unwrap(await prepared('g_dist', q.gated.byDistinctIds(batch(i)))).length,
          },
        ] satisfies Side[],
        byId: [
          ...sides.byId,
          {
            name: 'gated (OFFSET 0 lateral)',
            run: async (i) => unwrap(await rowsOf(q.gated.byPersonIds(batch(i)))).length,
          },
          {
            name: 'baseline, prepared',
            run: async (i) =>
              (await prepared('b_id', q.baseline.byPersonIds(batch(i)))).map(toPersonRow).length,
          },
          {
            name: 'gated, prepared',
            run: async (i) => unwrap(await prepared('g_id', q.gated.byPersonIds(batch(i)))).length,
          },
        ] satisfies Side[],
      };
      const started = now();
      const rows = [
        '| op | variant | median (p95) | vs baseline | vs prepared baseline |',
        '|---|---|---|---|---|',
      ];
      const report = (op: string, result: Map<string, Stats>) => {
        const b = result.get('baseline') as Stats;
        const bp = result.get('baseline, prepared');
        for (const [name, s] of result) {
          const vsPrepared =
            bp && name.includes('prepared') && name !== 'baseline, prepared'
              ? `${(s.median / bp.median).toFixed(2)}x`
              : '';
          const rowsNote =
            s.rows === b.rows || name.startsWith('floor') ? '' : ` (rows ${s.rows} vs ${b.rows})`;
          rows.push(
            `| ${op} | ${name === 'dual' ? 'repository (as shipped)' : name}${rowsNote} | ${fmt(s.median)} ms (${fmt(s.p95)}) | ${(s.median / b.median).toFixed(2)}x | ${vsPrepared} |`,
          );
        }
      };
      await interleave(Math.min(vPoint, 200), variants.point);
      report('point', await interleave(vPoint, variants.point));
      await interleave(Math.min(vBatch, 5), variants.byDistinct);
      report(`${BATCH_SIZE} by distinct id`, await interleave(vBatch, variants.byDistinct));
      await interleave(Math.min(vBatch, 5), variants.byId);
      report(`${BATCH_SIZE} by person id`, await interleave(vBatch, variants.byId));
      log(`variants in ${seconds(started)}`);
      console.log(
        `## Scratch SQL variants (${vPoint} point / ${vBatch} batch ops per side, interleaved; "prepared" = named statements on a dedicated pg connection)\n`,
      );
      console.log(rows.join('\n'));
      console.log('');
    }
    log(`total ${seconds(t0)}`);
  } finally {
    await migration?.close().catch(() => {});
    await preparedPool.end().catch(() => {});
    await dropSchemas();
    await handle.close().catch(() => {});
  }
}

main().catch(async (err) => {
  console.error(err);
  await dropSchemas();
  process.exitCode = 1;
});

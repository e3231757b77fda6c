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
 * Sides, per operation, all through `openDatabase` handles on the same server, with the same
 * keys and the same row mapping (`toPersonRow`):
 * - `baseline`: the single-table read as a service sends it today: plain Kysely `sql`, not
 *   prepared (a handle opened with `preparedStatements: false`);
 * - `baseline, prepared`: the same SQL carrying `preparedStatementMarker`, on the default
 *   handle: the like-for-like comparison, since the repository's reads are prepared;
 * - `dual read`: `repository.fetchPerson` / `fetchPersonsByDistinctIds` /
 *   `fetchPersonsByPersonIds` on the default handle (prepared);
 * - `dual read, unprepared`: the same, through a second `createPersonsMigration` on the
 *   `preparedStatements: false` handle.
 * One connection in flight (sequential awaits: latency, not throughput). The sides alternate op
 * by op and their order rotates every op, to cancel drift and first-touch cache effects.
 * Then EXPLAIN (ANALYZE, BUFFERS) of the statements the repository really sends.
 *
 * Environment knobs (defaults in brackets):
 *   BENCH_PERSONS [200000]   BENCH_TEAMS [4]        BENCH_PROPERTIES_BYTES [500]
 *   BENCH_POINT [3000]       BENCH_BATCH [150]      BENCH_BATCH_SIZE [1000]
 *   BENCH_PARTITIONS [0]     hash partitions of the new table (0: not partitioned)
 *   BENCH_UPDATES [1000]     persons updated through the repository after the copy
 *   BENCH_EXPLAIN [1]        0 none, 1 a summary line per plan, 2 also the full plans
 *   BENCH_SEED [42]          random seed of the key choice
 */
import { cpus, loadavg } from 'node:os';
import { CompiledQuery, Kysely, PostgresDialect, type RawBuilder, sql } from 'kysely';
import pg from 'pg';
import type { AnyDb } from '../src/db/any-db.js';
import { preparedStatementMarker } from '../src/db/prepared-statements.js';
import { pgTypeOverrides } from '../src/db/type-parsers.js';
import {
  createPersonsMigration,
  type DatabaseHandle,
  openDatabase,
  type PersonRow,
  type PersonsMigration,
  type PersonsRepository,
} from '../src/index.js';
import { columnList, loadPersonColumns } from '../src/persons/person-columns.js';
import { type MigrationTables, migrationTables } from '../src/persons/tables.js';
import { toPersonRow } from '../src/repository/person-row.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import { envNumber } from './support.js';

type Row = Record<string, unknown>;

const env = envNumber;

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PERSONS = env('BENCH_PERSONS', 200_000);
const TEAMS = Math.max(1, env('BENCH_TEAMS', 4));
const PROPERTIES_BYTES = env('BENCH_PROPERTIES_BYTES', 500);
const POINT_OPS = Math.max(1, env('BENCH_POINT', 3_000));
const BATCH_OPS = Math.max(1, env('BENCH_BATCH', 150));
const BATCH_SIZE = Math.max(1, env('BENCH_BATCH_SIZE', 1_000));
const PARTITIONS = env('BENCH_PARTITIONS', 0);
const UPDATES = env('BENCH_UPDATES', 1_000);
const EXPLAIN = env('BENCH_EXPLAIN', 1);
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
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');

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

/** The single-table reads a service sends today (old table only). */
function baselineStatements(tables: MigrationTables) {
  const { old, distinctIds: dist } = tables;
  const teams = (ps: readonly Person[]) => ps.map((p) => p.teamId);
  return {
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
  };
}

/** The same statement, marked so the default handle runs it as a named prepared statement. */
const markPrepared = (query: RawBuilder<unknown>) =>
  sql`${sql.raw(preparedStatementMarker)}${query}`;

/** Who the rows are (not which version): what every side must agree on. */
const identity = (rows: readonly Row[]) =>
  rows
    .map((r) => `${String(r.id)}:${String(r.distinct_id ?? '')}`)
    .sort()
    .join(',');
/** Who and which version: the two dual-read sides must agree on this too. */
const signature = (rows: readonly Row[]) =>
  rows
    .map((r) => `${String(r.id)}:${String(r.version)}:${String(r.distinct_id ?? '')}`)
    .sort()
    .join(',');

// ------------------------------------------------------------------ the benchmark

async function main(): Promise<void> {
  const t0 = now();
  const loadBefore = load();
  // Two connections at most: one read in flight, plus the phase watcher's periodic re-read.
  // pg's pool hands out the most recently released connection, so the reads keep hitting the
  // connection whose prepared statements are already planned.
  const prepared = await openDatabase(url, { maxConnections: 2 });
  const unprepared = await openDatabase(url, { maxConnections: 2, preparedStatements: false });
  const db = prepared.db as AnyDb;
  const plainDb = unprepared.db as AnyDb;
  let migration: PersonsMigration | undefined;
  let unpreparedMigration: PersonsMigration | undefined;
  try {
    const facts = (
      await sql<{ version: string; shared_buffers: string; jit: string }>`
        SELECT current_setting('server_version') AS version,
          current_setting('shared_buffers') AS shared_buffers, current_setting('jit') AS jit`.execute(
        db,
      )
    ).rows[0] as { version: string; shared_buffers: string; jit: string };

    // ---------------------------------------------------------------- setup
    log(
      `schema ${schema}: seeding ${PERSONS} persons over ${TEAMS} teams (~${PROPERTIES_BYTES} B properties)`,
    );
    await createPostHogPersonsSchema(prepared, { schema });
    const persons: Person[] = [];
    const perTeam = Math.ceil(PERSONS / TEAMS);
    for (let team = 1; team <= TEAMS && persons.length < PERSONS; team++) {
      const count = Math.min(perTeam, PERSONS - persons.length);
      const ids = await seedPersons(prepared, {
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

    migration = createPersonsMigration({ db: prepared, schema, controlSchema });
    await migration.install();
    await migration.prepare(PARTITIONS > 0 ? { partitions: PARTITIONS } : {});
    await migration.startDualRead();
    const repo = migration.repository();
    // Same schemas, same control row: a second service instance that does not prepare.
    unpreparedMigration = createPersonsMigration({ db: unprepared, schema, controlSchema });
    const plainRepo = unpreparedMigration.repository();
    const tables = migrationTables(migration.options);
    const columns = await loadPersonColumns(db, migration.options);
    const baseline = baselineStatements(tables);

    // Mid-migration: about half of the persons copied (as a backfill would), then some
    // persons updated through the repository (copy-on-write for the ones not copied yet).
    const copyStart = now();
    await sql`INSERT INTO ${tables.new} (${columnList(columns.copyable)})
      SELECT ${columnList(columns.copyable)} FROM ${tables.old} WHERE id % 2 = 0`.execute(db);
    const updated = pickIndexes(UPDATES, persons.length).map((i) => persons[i] as Person);
    for (const p of updated) {
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
    const propertiesSize = Number(
      (
        await sql<{ bytes: string }>`
          SELECT round(avg(pg_column_size(properties)))::text AS bytes FROM ${tables.old}`.execute(
          db,
        )
      ).rows[0]?.bytes,
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
    const shareInNew = (ps: readonly Person[]) =>
      ps.filter((p) => inNew.has(p.id)).length / ps.length;
    const key = (i: number) => pointKeys[i] as Person;
    const batch = (i: number) => batchKeys[i] as Person[];
    const asPairs = (ps: readonly Person[]) =>
      ps.map((p) => ({ teamId: p.teamId, distinctId: p.distinctId }));
    const asIdPairs = (ps: readonly Person[]) =>
      ps.map((p) => ({ teamId: p.teamId, personId: p.id }));

    /** The four reads of one operation, each returning mapped rows. */
    interface Reads<K> {
      readonly baseline: (k: K) => Promise<PersonRow[]>;
      readonly baselinePrepared: (k: K) => Promise<PersonRow[]>;
      readonly dual: (k: K) => Promise<PersonRow[]>;
      readonly dualUnprepared: (k: K) => Promise<PersonRow[]>;
    }
    const rowsOf = async (on: AnyDb, query: RawBuilder<unknown>) =>
      ((await query.execute(on)).rows as Row[]).map(toPersonRow);
    const readsOf = <K>(
      statement: (k: K) => RawBuilder<unknown>,
      viaRepository: (r: PersonsRepository, k: K) => Promise<PersonRow[]>,
    ): Reads<K> => ({
      baseline: (k) => rowsOf(plainDb, statement(k)),
      baselinePrepared: (k) => rowsOf(db, markPrepared(statement(k))),
      dual: (k) => viaRepository(repo, k),
      dualUnprepared: (k) => viaRepository(plainRepo, k),
    });
    const ops = {
      point: readsOf<Person>(baseline.point, async (r, p) => {
        const row = await r.fetchPerson(p.teamId, p.distinctId);
        return row ? [row] : [];
      }),
      byDistinctIds: readsOf<Person[]>(baseline.byDistinctIds, (r, ps) =>
        r.fetchPersonsByDistinctIds(asPairs(ps)),
      ),
      byPersonIds: readsOf<Person[]>(baseline.byPersonIds, (r, ps) =>
        r.fetchPersonsByPersonIds(asIdPairs(ps)),
      ),
    };

    // ---------------------------------------------------------------- sanity
    // Every side returns the same persons; both dual-read sides return the updated persons in
    // their new version (the baseline, reading the old table only, returns them stale).
    {
      const updatedIds = new Set(updated.map((p) => p.id));
      const sample = [
        ...new Map([...updated.slice(0, 50), ...batch(0)].map((p) => [p.id, p])).values(),
      ];
      const check = async <K>(op: string, reads: Reads<K>, keys: K) => {
        const b = await reads.baseline(keys);
        const bp = await reads.baselinePrepared(keys);
        const d = await reads.dual(keys);
        const du = await reads.dualUnprepared(keys);
        const want = identity(b);
        for (const [side, rows] of [
          ['baseline, prepared', bp],
          ['dual read', d],
          ['dual read, unprepared', du],
        ] as const) {
          if (identity(rows) !== want)
            throw new Error(`sanity (${op}): ${side} returns other persons than the baseline`);
        }
        if (signature(d) !== signature(du))
          throw new Error(`sanity (${op}): the two dual-read sides disagree`);
        for (const row of d) {
          if (!updatedIds.has(row.id)) continue;
          const fresh = row.version === 1 && (row.properties as Row | null)?.bench_updated === true;
          if (!fresh)
            throw new Error(
              `sanity (${op}): a dual read returned a stale copy of an updated person`,
            );
        }
        return d.filter((r) => updatedIds.has(r.id)).length;
      };
      let fresh = await check('by distinct ids', ops.byDistinctIds, sample);
      fresh += await check('by person ids', ops.byPersonIds, sample);
      for (const p of sample.slice(0, 100)) fresh += await check('point', ops.point, p);
      if (fresh === 0) throw new Error('sanity: no updated person was read back');
      log(`sanity: all sides agree (${fresh} reads of updated persons, all in their new version)`);
    }

    // ---------------------------------------------------------------- timed sides
    const sidesOf = <K>(reads: Reads<K>, keyOf: (i: number) => K): Side[] => [
      { name: 'baseline', run: async (i) => (await reads.baseline(keyOf(i))).length },
      {
        name: 'baseline, prepared',
        run: async (i) => (await reads.baselinePrepared(keyOf(i))).length,
      },
      { name: 'dual read', run: async (i) => (await reads.dual(keyOf(i))).length },
      {
        name: 'dual read, unprepared',
        run: async (i) => (await reads.dualUnprepared(keyOf(i))).length,
      },
    ];
    const sides = {
      point: sidesOf(ops.point, key),
      byDistinctIds: sidesOf(ops.byDistinctIds, batch),
      byPersonIds: sidesOf(ops.byPersonIds, batch),
    };

    const warm = now();
    await interleave(Math.min(POINT_OPS, 300), sides.point);
    await interleave(Math.min(BATCH_OPS, 10), sides.byDistinctIds);
    await interleave(Math.min(BATCH_OPS, 10), sides.byPersonIds);
    log(`warm-up ${seconds(warm)}`);

    const measured = now();
    const loadDuring = load();
    const results = [
      {
        op: `fetchPerson (n=${POINT_OPS})`,
        goal: GOAL.point,
        result: await interleave(POINT_OPS, sides.point),
      },
      {
        op: `fetchPersonsByDistinctIds, ${BATCH_SIZE} pairs (n=${BATCH_OPS})`,
        goal: GOAL.batch,
        result: await interleave(BATCH_OPS, sides.byDistinctIds),
      },
      {
        op: `fetchPersonsByPersonIds, ${BATCH_SIZE} ids (n=${BATCH_OPS})`,
        goal: GOAL.batch,
        result: await interleave(BATCH_OPS, sides.byPersonIds),
      },
    ];
    const loadAfter = load();
    log(`measured in ${seconds(measured)}`);

    const table = [
      '| op | baseline median (p95) | dual read median (p95) | ratio vs baseline | ratio vs prepared baseline | unprepared dual read ratio vs baseline | goal |',
      '|---|---|---|---|---|---|---|',
    ];
    const sidesTable = ['| op | side | median | p95 | rows |', '|---|---|---|---|---|'];
    for (const { op, goal, result } of results) {
      const b = result.get('baseline') as Stats;
      const bp = result.get('baseline, prepared') as Stats;
      const d = result.get('dual read') as Stats;
      const du = result.get('dual read, unprepared') as Stats;
      const ratio = d.median / b.median;
      const likeForLike = d.median / bp.median;
      const verdict = (r: number) => (r <= goal ? 'met' : 'missed');
      table.push(
        `| ${op} | ${fmt(b.median)} ms (${fmt(b.p95)}) | ${fmt(d.median)} ms (${fmt(d.p95)}) | ${ratio.toFixed(2)}x | ` +
          `${likeForLike.toFixed(2)}x (prepared baseline ${fmt(bp.median)} ms) | ${(du.median / b.median).toFixed(2)}x (${fmt(du.median)} ms) | ` +
          `${goal}x: ${verdict(ratio)} vs baseline, ${verdict(likeForLike)} like for like |`,
      );
      for (const [name, s] of result) {
        sidesTable.push(`| ${op} | ${name} | ${fmt(s.median)} ms | ${fmt(s.p95)} ms | ${s.rows} |`);
      }
      if (new Set([...result.values()].map((s) => s.rows)).size > 1) {
        table.push(`| (${op}: the sides returned different row counts, see below) | | | | | | |`);
      }
    }

    const allBatchKeys = batchKeys.flat();
    const machine = [
      `node ${process.version}, PostgreSQL ${facts.version} on the same host (shared_buffers ${facts.shared_buffers}, jit ${facts.jit}), ` +
        `${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown cpu'})`,
      `load average (1 / 5 / 15 min): ${loadBefore} at start, ${loadDuring} when the timed runs began, ${loadAfter} at the end`,
      `old table ${persons.length} persons over ${TEAMS} teams (properties ~${propertiesSize} B stored); new table ${inNew.size} rows ` +
        `(${PARTITIONS > 0 ? `${PARTITIONS} hash partitions` : 'not partitioned'}; every even id copied, then ${updated.length} persons updated through the repository); ` +
        `keys in the new table: ${(shareInNew(pointKeys) * 100).toFixed(0)}% of the point keys, ${(shareInNew(allBatchKeys) * 100).toFixed(0)}% of the batch keys`,
      'one connection in flight; the four sides interleaved op by op; same keys, same row mapping; median (p95)',
    ];
    console.log('\n## Read latency: dual_read vs one table\n');
    console.log(table.join('\n'));
    console.log(`\n${machine.map((m) => `- ${m}`).join('\n')}\n`);
    console.log('### All sides\n');
    console.log(sidesTable.join('\n'));
    console.log('');

    // Which plans the prepared statements ended up with (after 5 runs Postgres may switch a
    // named statement to a generic plan). Read on the connection the reads just used.
    const plans = (
      await sql<{ statements: string; generic: string; custom: string }>`
        SELECT count(*)::text AS statements, coalesce(sum(generic_plans), 0)::text AS generic,
          coalesce(sum(custom_plans), 0)::text AS custom
        FROM pg_prepared_statements WHERE name LIKE 'pgdr\\_%'`.execute(db)
    ).rows[0];
    if (plans) {
      console.log(
        `- prepared statements on the last-used connection: ${plans.statements}, executions with a generic plan ${plans.generic}, with a custom plan ${plans.custom}\n`,
      );
    }

    // ---------------------------------------------------------------- plans
    if (EXPLAIN > 0) {
      await explainPlans({
        migration,
        keys: {
          inNew: pointKeys.find((p) => inNew.has(p.id)) as Person,
          oldOnly: pointKeys.find((p) => !inNew.has(p.id)) as Person,
          batch: batch(0),
        },
        baseline,
        db,
        asPairs,
        asIdPairs,
      });
    }
    log(`total ${seconds(t0)}`);
  } finally {
    await migration?.close().catch(() => {});
    await unpreparedMigration?.close().catch(() => {});
    await dropSchemas();
    await prepared.close().catch(() => {});
    await unprepared.close().catch(() => {});
  }
}

// ------------------------------------------------------------------ plans

/**
 * EXPLAIN (ANALYZE, BUFFERS) of the baseline statements and of the statements the repository
 * really sends: they are captured from Kysely's query log on a third, EXPLAIN-only handle
 * rather than rebuilt here, so the plans cannot drift from the shipped SQL.
 */
async function explainPlans(input: {
  migration: PersonsMigration;
  keys: { inNew: Person; oldOnly: Person; batch: Person[] };
  baseline: ReturnType<typeof baselineStatements>;
  db: AnyDb;
  asPairs: (ps: readonly Person[]) => { teamId: number; distinctId: string }[];
  asIdPairs: (ps: readonly Person[]) => { teamId: number; personId: string }[];
}): Promise<void> {
  const { migration, keys, baseline, db } = input;
  let captured: CompiledQuery | undefined;
  const pool = new pg.Pool({ connectionString: url, max: 1, types: pgTypeOverrides });
  const capturing: AnyDb = new Kysely({
    dialect: new PostgresDialect({ pool }),
    log: (event) => {
      if (event.level === 'query' && event.query.sql.startsWith(preparedStatementMarker)) {
        captured = event.query;
      }
    },
  });
  const handle: DatabaseHandle = await openDatabase(capturing);
  const capture = createPersonsMigration({
    db: handle,
    schema,
    controlSchema,
    name: migration.options.name,
  });
  const repo = capture.repository();
  const sent = async (call: () => Promise<unknown>) => {
    captured = undefined;
    await call();
    if (!captured) throw new Error('explain: the repository sent no marked statement');
    return captured;
  };
  try {
    const b = keys.batch;
    const plans: [string, CompiledQuery, number][] = [
      ['baseline point', baseline.point(keys.inNew).compile(db), 1],
      [
        'repository point, key in new',
        await sent(() => repo.fetchPerson(keys.inNew.teamId, keys.inNew.distinctId)),
        1,
      ],
      [
        'repository point, key only in old',
        await sent(() => repo.fetchPerson(keys.oldOnly.teamId, keys.oldOnly.distinctId)),
        1,
      ],
      ['baseline by distinct ids', baseline.byDistinctIds(b).compile(db), b.length],
      [
        'repository by distinct ids',
        await sent(() => repo.fetchPersonsByDistinctIds(input.asPairs(b))),
        b.length,
      ],
      ['baseline by person ids', baseline.byPersonIds(b).compile(db), b.length],
      [
        'repository by person ids',
        await sent(() => repo.fetchPersonsByPersonIds(input.asIdPairs(b))),
        b.length,
      ],
    ];
    const oldName = migration.options.oldTable;
    const summary = [
      '| statement | keys | old-table probes | gate on `n.id IS NULL` | buffers | planning | execution |',
      '|---|---|---|---|---|---|---|',
    ];
    const full: string[] = [];
    for (const [label, query, count] of plans) {
      const result = await capturing.executeQuery(
        CompiledQuery.raw(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${query.sql}`, [
          ...query.parameters,
        ]),
      );
      const text = (result.rows as Row[]).map((r) => String(r['QUERY PLAN'])).join('\n');
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
        `| ${label} | ${count} | ${probe ? (probe[1] ?? '0') : '?'} | ${gate} | ${buffers} | ${planning} ms | ${execution} ms |`,
      );
      full.push(`### ${label}\n\n\`\`\`\n${text}\n\`\`\`\n`);
    }
    console.log('## Plans (EXPLAIN ANALYZE, BUFFERS; custom plans, warm cache)\n');
    console.log(summary.join('\n'));
    console.log('');
    if (EXPLAIN > 1) console.log(full.join('\n'));
  } finally {
    await capture.close().catch(() => {});
    await capturing.destroy().catch(() => {});
  }
}

main().catch(async (err) => {
  console.error(err);
  await dropSchemas();
  process.exitCode = 1;
});

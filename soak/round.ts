/**
 * One round of the soak, for one seed: a persons table seeded on the harness's own server, the
 * writers started, the lifecycle driven to `finalized` while the faults fall, the writers
 * stopped, and the history checked against the final tables.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import { interleavedSeedJobs, rng } from '../bench/support.js';
import { createPersonsMigration, type DatabaseHandle, openDatabase } from '../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../src/testing/index.js';
import type { ThrowawayServer } from '../test/support/throwaway-server.js';
import { checkHistory, type FinalState, type SeededPerson, type Verdict } from './checker.js';
import { FaultInjector, type FaultKind } from './faults.js';
import { WriterFleet } from './fleet.js';
import { type HistoryOp, type PersonRef, readHistory } from './history.js';
import { Lifecycle, type LifecycleReport } from './lifecycle.js';
import type { OwnedSeed } from './persons-writer.js';

/** The size and pace of a round. */
export interface RoundSettings {
  readonly seed: number;
  readonly rows: number;
  readonly teams: number;
  readonly writers: number;
  /** Operations started per second by each writer. */
  readonly ratePerS: number;
  readonly ownedPerWriter: number;
  readonly hotPersons: number;
  readonly dwellMs: number;
  readonly meanFaultGapMs: number;
  readonly restartGapMs: number;
  readonly backfillRowsPerS: number;
}

export interface RoundResult {
  readonly seed: number;
  readonly ms: number;
  readonly lifecycle: LifecycleReport;
  readonly faults: Readonly<Record<FaultKind, number>>;
  /** Statements that hit a forced statement or lock timeout (SQLSTATE 57014 or 55P03). */
  readonly timeoutsFired: number;
  /** Failed and unknown operations by outcome and error code, e.g. `fail QUERY_FAILED/57P01`. */
  readonly codes: Readonly<Record<string, number>>;
  readonly verdict: Verdict;
  /** Writer and backfill processes that crashed: must be none. */
  readonly crashes: readonly string[];
  /** Kept when the round failed, for a look at the history; removed otherwise. */
  readonly historyDir: string;
}

const oldTable = 'posthog_person';
const didsTable = 'posthog_persondistinctid';

/** Seeded persons with their version and distinct ids, in an order drawn from the seed. */
export async function samplePersons(
  handle: DatabaseHandle,
  schema: string,
  count: number,
  seed: number,
): Promise<OwnedSeed[]> {
  const { rows } = await sql<{ team_id: number; id: string; version: string; dids: string[] }>`
    SELECT p.team_id, p.id::text AS id, p.version::text AS version,
           array_agg(d.distinct_id ORDER BY d.distinct_id) AS dids
      FROM ${sql.id(schema, oldTable)} p
      JOIN ${sql.id(schema, didsTable)} d ON d.team_id = p.team_id AND d.person_id = p.id
     GROUP BY p.team_id, p.id, p.version
     ORDER BY md5(p.id::text || ${String(seed)}) LIMIT ${count}`.execute(handle.db);
  return rows.map((r) => ({ team: r.team_id, id: r.id, version: Number(r.version), dids: r.dids }));
}

async function seedRound(handle: DatabaseHandle, schema: string, s: RoundSettings): Promise<void> {
  await createPostHogPersonsSchema(handle, { schema });
  for (const job of interleavedSeedJobs(s.rows, s.teams, 500)) {
    await seedPersons(handle, {
      schema,
      teamId: job.teamId,
      count: job.count,
      prefix: `c${job.chunk}`,
      propertiesBytes: 200,
    });
  }
}

/** Every person the repository reads (all teams, page by page) and every distinct id row. */
export async function readFinal(
  handle: DatabaseHandle,
  migration: ReturnType<typeof createPersonsMigration>,
  schema: string,
  teams: number,
): Promise<FinalState> {
  const repo = migration.repository();
  const persons = new Map<string, { version: number; properties: Record<string, unknown> }>();
  for (let team = 1; team <= teams; team++) {
    let after: string | undefined;
    do {
      const page = await repo.listPersons(team, { limit: 1_000, ...(after ? { after } : {}) });
      for (const p of page.persons) {
        persons.set(`${team}:${p.id}`, { version: p.version, properties: p.properties });
      }
      after = page.nextCursor;
    } while (after);
  }
  const { rows } = await sql<{ team_id: number; distinct_id: string; person_id: string }>`
    SELECT team_id, distinct_id, person_id::text AS person_id
      FROM ${sql.id(schema, didsTable)}`.execute(handle.db);
  const dids = new Map(rows.map((r) => [`${r.team_id}:${r.distinct_id}`, r.person_id]));
  return { persons, dids };
}

/**
 * Deals the seeded persons: the first `hotPersons` are hot (every writer writes them), the
 * rest are cut into shares of `ownedPerWriter`, three per starting writer (replacements of
 * killed writers take the next share).
 */
async function dealPersons(handle: DatabaseHandle, schema: string, s: RoundSettings) {
  const sample = await samplePersons(handle, schema, s.writers * 3 * s.ownedPerWriter, s.seed);
  const hotSeeds = sample.splice(0, s.hotPersons);
  const hot: PersonRef[] = hotSeeds.map((p) => [p.team, p.id]);
  const shares = Array.from({ length: s.writers * 3 }, (_, i) =>
    sample.slice(i * s.ownedPerWriter, (i + 1) * s.ownedPerWriter),
  ).filter((share) => share.length > 0);
  const seeded = new Map<string, SeededPerson>(
    [...hotSeeds, ...sample].map((p) => [`${p.team}:${p.id}`, p]),
  );
  return { hot, shares, seeded };
}

/** Failed and unknown operations by outcome and error code. */
function errorCodes(history: readonly HistoryOp[]): Record<string, number> {
  const codes: Record<string, number> = {};
  for (const op of history) {
    if (op.outcome === 'ok') continue;
    const k = `${op.outcome} ${op.code ?? '(writer killed)'}`;
    codes[k] = (codes[k] ?? 0) + 1;
  }
  return codes;
}

/** Retries `fn` while the server comes back from a restart. */
async function patiently<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= 20) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** Runs one round on `server`. */
export async function runRound(server: ThrowawayServer, s: RoundSettings): Promise<RoundResult> {
  const started = Date.now();
  // One stream per actor, so the lifecycle's draws do not depend on how many faults fell.
  const faultRandom = rng(s.seed * 2 + 1);
  const lifecycleRandom = rng(s.seed * 2 + 2);
  const schema = `soak_${s.seed}_${started.toString(36)}`;
  const controlSchema = `${schema}_ctl`;
  const pool = new pg.Pool({
    connectionString: server.url,
    application_name: 'soak-lifecycle',
    max: 4,
  });
  pool.on('error', () => {});
  const handle = await openDatabase(pool);
  const migration = createPersonsMigration({ db: handle, schema, controlSchema });
  const historyDir = mkdtempSync(join(tmpdir(), `pg-dual-read-soak-${s.seed}-`));
  let fleetToStop: WriterFleet | undefined;
  try {
    await seedRound(handle, schema, s);
    await migration.install();
    await migration.prepare();
    const { hot, shares, seeded } = await dealPersons(handle, schema, s);
    const fleet = new WriterFleet(
      {
        url: server.url,
        schema,
        controlSchema,
        historyDir,
        ratePerS: s.ratePerS,
        teams: s.teams,
        seed: s.seed,
        hot,
        // Writer 1 has statements cut at 8 ms, writer 2 lock waits at 2 ms.
        timeouts: [{}, { statementTimeoutMs: 8 }, { lockTimeoutMs: 2 }],
      },
      shares,
    );
    fleetToStop = fleet;
    await Promise.all(Array.from({ length: s.writers }, () => fleet.start()));
    const faults = new FaultInjector(server.url, server, fleet, faultRandom, {
      meanGapMs: s.meanFaultGapMs,
      restartGapMs: s.restartGapMs,
    });
    const injecting = faults.run();
    const lifecycle = await new Lifecycle(migration, faults, lifecycleRandom, {
      dwellMs: s.dwellMs,
      terminateChance: 0.4,
      freezeChance: 0.3,
      maxAttempts: 40,
      backfill: {
        url: server.url,
        schema,
        controlSchema,
        maxRowsPerSecond: s.backfillRowsPerS,
        leaseMs: 1_000,
      },
    }).run();
    faults.stop();
    await injecting;
    await faults.close();
    const crashes = [...fleet.crashes(), ...lifecycle.crashes];
    await fleet.stopAll(10_000);
    fleetToStop = undefined;
    const final = await patiently(() => readFinal(handle, migration, schema, s.teams));
    const history = readHistory(historyDir);
    const verdict = checkHistory(history, final, seeded, hot);
    const failed =
      !lifecycle.complete ||
      crashes.length > 0 ||
      Object.values(verdict.violations).some((count) => count > 0);
    if (!failed) rmSync(historyDir, { recursive: true, force: true });
    return {
      seed: s.seed,
      ms: Date.now() - started,
      lifecycle,
      faults: faults.counts,
      timeoutsFired: history.filter((op) => /57014|55P03/.test(op.code ?? '')).length,
      codes: errorCodes(history),
      verdict,
      crashes,
      historyDir,
    };
  } finally {
    // A round that threw half way leaves no writer process behind.
    await fleetToStop?.stopAll(2_000);
    await patiently(async () => {
      for (const name of [schema, controlSchema]) {
        await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      }
    }).catch(() => {});
    await migration.close().catch(() => {});
    await pool.end().catch(() => {});
  }
}

/**
 * Invariant 4 (exactly-once progress) on a real server: a backfill killed at any instant
 * (SIGKILL of its process, its connections terminated, its statements timed out) and
 * restarted finishes with the same new-table contents, reads every old key in exactly one
 * committed batch, and its stored progress (`rows_scanned`, `rows_copied`) counts each key
 * once, because a batch commits its checkpoint in the transaction that copies its rows.
 *
 * How it is checked, independently of the library's own counters:
 * - the expected new table is computed before the backfill from both tables (old rows the
 *   new table lacks, plus the new table's own rows: copies made by copy-on-write keep their
 *   newer version; deleted persons stay out);
 * - a BEFORE INSERT trigger on the new table audits, in the inserting transaction, every key
 *   a committed batch read (a killed batch leaves no audit row): each old key exactly once;
 * - at every kill, once the killed process's sessions are gone: stored progress == audit,
 *   the new table grew by exactly `rows_copied`, and the ranges still partition the keys.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { statementTagText } from '../../src/db/statement-tag.js';
import { pgTypeOverrides } from '../../src/db/type-parsers.js';
import { QueryFailedError } from '../../src/errors.js';
import {
  createPersonsMigration,
  type PersonsMigration,
} from '../../src/migration/persons-migration.js';
import { BackfillChild } from '../support/backfill-child.js';
import {
  delay,
  MigrationEnv,
  openRawSession,
  seededRandom,
  testSeed,
  waitUntil,
} from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';
import {
  countRows,
  expectCompletePlan,
  expectedNewTable,
  expectNewTable,
  installCopyAudit,
  progress,
  randomInt,
  rangeViolations,
  readCopyAudit,
  readRanges,
  sessionsOf,
  urlFor,
  waitForSessionsGone,
} from './kill-support.js';

/** The tag a batch statement starts with, as pg_stat_activity shows it. */
const batchMarker = statementTagText('backfill-batch');

describeOnRealServer('backfill killed and restarted (real server)', () => {
  const seed = testSeed();
  const random = seededRandom(seed);
  const children: BackfillChild[] = [];
  const envs: MigrationEnv[] = [];
  const handles: DatabaseHandle[] = [];
  const migrations: PersonsMigration[] = [];

  const onCleanUp: (() => Promise<void>)[] = [];

  async function cleanUp(): Promise<void> {
    for (const child of children.splice(0)) await child.kill();
    for (const fn of onCleanUp.splice(0)) await fn().catch(() => undefined);
    for (const migration of migrations.splice(0)) await migration.close().catch(() => undefined);
    for (const handle of handles.splice(0)) await handle.close().catch(() => undefined);
    for (const env of envs.splice(0)) await env.close();
  }
  afterEach(cleanUp);
  afterAll(cleanUp);

  /** What the backfill starts from, besides the tables. */
  interface Start {
    readonly env: MigrationEnv;
    /** Old rows when the backfill starts: each must be read exactly once. */
    readonly oldRows: number;
    /** Old rows the new table already holds (copy-on-write): read, not copied. */
    readonly alreadyCopied: number;
    readonly newRowsBefore: number;
    readonly expected: Map<string, string>;
  }

  /**
   * A migration in dual_read over `teams` (sizes of each team, team ids 1..n), with persons
   * updated (copied to the new table, some twice), deleted (some after their copy) and
   * created through the repository before the backfill, and the copy audit installed.
   */
  async function start(
    prefix: string,
    teams: readonly number[],
    onCreated?: (env: MigrationEnv) => void,
  ): Promise<Start> {
    const env = await MigrationEnv.create(prefix, { partitions: 4 });
    envs.push(env);
    onCreated?.(env);
    const ids: { team: number; id: string }[] = [];
    for (const [index, count] of teams.entries()) {
      for (const id of await env.seed(index + 1, count, `p${index + 1}`)) {
        ids.push({ team: index + 1, id });
      }
    }
    await env.control.startDualRead();
    const { repo } = await env.addInstance({ poolSize: 6 });
    const chosen = ids
      .map((p) => ({ p, r: random() }))
      .sort((a, b) => a.r - b.r)
      .map(({ p }) => p);
    const updated = chosen.slice(0, 150);
    const deleted = [...chosen.slice(150, 270), ...updated.slice(0, 40)];
    const writes: (() => Promise<unknown>)[] = [
      ...updated.map(
        ({ team, id }, n) =>
          () =>
            repo
              .updatePerson(team, id, { properties: { plan: 'paid', n } })
              .then(() =>
                n % 3 === 0 ? repo.updatePerson(team, id, { isIdentified: true }) : undefined,
              ),
      ),
      ...Array.from(
        { length: 10 },
        (_, n) => () =>
          repo.createPerson({ teamId: 1 + (n % teams.length), distinctIds: [`new-${n}`] }),
      ),
    ];
    for (let i = 0; i < writes.length; i += 6) {
      await Promise.all(writes.slice(i, i + 6).map((write) => write()));
    }
    for (let i = 0; i < deleted.length; i += 6) {
      const batch = deleted.slice(i, i + 6);
      const results = await Promise.all(batch.map(({ team, id }) => repo.deletePerson(team, id)));
      expect(results.every(Boolean)).toBe(true);
    }
    await installCopyAudit(env);
    const expected = await expectedNewTable(env);
    const old = await countRows(env, 'old');
    const newRowsBefore = await countRows(env, 'new');
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.id(env.schema, 'posthog_person')} AS o
      WHERE EXISTS (SELECT 1 FROM ${sql.id(env.schema, 'posthog_person_new')} AS n
        WHERE n.team_id = o.team_id AND n.id = o.id)`.execute(env.admin.db);
    const alreadyCopied = rows[0]?.n ?? 0;
    // The starting point is what the test meant: deletes gone from the old table, updated
    // persons (not deleted) copied, new persons in the new table only.
    expect(old).toBe(ids.length - deleted.length);
    expect(alreadyCopied).toBe(updated.length - 40);
    expect(newRowsBefore).toBe(alreadyCopied + 10);
    expect(expected.size).toBe(old + 10);
    return { env, oldRows: old, alreadyCopied, newRowsBefore, expected };
  }

  /** The end state every variant must reach: the same contents, each key read once. */
  async function expectExactlyOnce(s: Start): Promise<void> {
    await expectNewTable(s.env, s.expected);
    const audit = await readCopyAudit(s.env);
    expect(audit).toEqual({
      attempts: s.oldRows,
      distinctKeys: s.oldRows,
      readTwice: [],
      neverRead: [],
    });
    const ranges = await expectCompletePlan(s.env);
    expect(progress(ranges)).toEqual({
      scanned: s.oldRows,
      copied: s.oldRows - s.alreadyCopied,
    });
    const status = await s.env.control.backfillStatus();
    expect(status).toMatchObject({
      state: 'done',
      rowsToGo: 0,
      percent: 100,
      rowsScanned: s.oldRows,
      rowsCopied: s.oldRows - s.alreadyCopied,
    });
    expect(status?.ranges.every((r) => r.status === 'done')).toBe(true);
  }

  /** Progress as stored equals what committed: the audit, and the new table's growth. */
  async function expectProgressMatchesCommits(s: Start, when: string): Promise<number> {
    const ranges = await readRanges(s.env);
    const audit = await readCopyAudit(s.env);
    const stored = progress(ranges);
    expect(audit.readTwice, `keys read twice ${when}`).toEqual([]);
    expect(stored.scanned, `rows_scanned vs audited reads ${when}`).toBe(audit.attempts);
    expect(await countRows(s.env, 'new'), `new table growth ${when}`).toBe(
      s.newRowsBefore + stored.copied,
    );
    expect(rangeViolations(ranges), `ranges ${when}`).toEqual([]);
    return stored.scanned;
  }

  it('SIGKILLed at random points (idle or mid-statement) and restarted, copies every key exactly once', async () => {
    const workers = 2;
    const batchSize = 250;
    const kills = 5;
    const options = (env: MigrationEnv, run: number) => ({
      url: urlFor(`${env.schema}-run${run}`),
      schema: env.schema,
      controlSchema: env.controlSchema,
      poolSize: 3,
      printBatches: true,
      waitForGo: true,
      backfill: {
        // The last run (never killed) finishes quickly: more workers, a higher ceiling.
        workers: run === kills ? 4 : workers,
        batchSize,
        targetBatchMs: 0,
        leaseMs: 500,
        // Slow enough that the killed runs cannot finish the table: at most ~2 s per run.
        maxRowsPerSecond: run === kills ? 50_000 : 2_500,
        workerId: `run${run}`,
        // Every run passes the same `ranges`, as a supervisor re-running one command would:
        // a restart is accepted even after idle workers split ranges (the plan keeps its
        // planned count apart from the growing range count).
        ranges: 8,
      },
    });
    // Runs are started two ahead (connected, waiting for go), and the next one is told to go
    // when one is killed: a supervisor's restart, with little of node's start-up time on the
    // test's clock, and no more than two start-ups competing for the CPU.
    const runs: BackfillChild[] = [];
    const launch = (env: MigrationEnv, run: number) => {
      if (run > kills || runs[run]) return;
      const child = BackfillChild.start(`run ${run} (seed ${seed})`, options(env, run));
      runs[run] = child;
      children.push(child);
    };
    const s = await start('kill', [8_000, 6_000, 4_000, 2_500, 1_500, 1_000, 600, 400], (env) => {
      launch(env, 0);
      launch(env, 1);
    });
    let reported = 0;
    const unreported: number[] = [];
    const midStatement: boolean[] = [];
    for (let run = 0; run < kills; run++) {
      const name = `${s.env.schema}-run${run}`;
      const child = runs[run] as BackfillChild;
      await child.waitFor((l) => l.event === 'ready', 'ready', 60_000);
      child.go();
      launch(s.env, run + 2);
      await child.waitFor((l) => l.event === 'batch', 'a first batch');
      let caught = false;
      if (run % 2 === 0) {
        await delay(randomInt(random, 100, 700));
      } else {
        // Kill while a batch statement runs on the server (its result then never arrives).
        await delay(randomInt(random, 50, 300));
        await waitUntil(
          async () =>
            (caught = (await sessionsOf(s.env, name)).some(
              (x) => x.state === 'active' && x.query.includes(batchMarker),
            )),
          'an active batch statement',
          1_000,
          1,
        ).catch(() => undefined);
      }
      midStatement.push(caught);
      expect(child.done, `run ${run} ended before its kill`).toBe(false);
      const exit = await child.kill();
      expect(exit.signal).toBe('SIGKILL');
      await waitForSessionsGone(s.env, name);
      const runReported = child.events('batch').reduce((sum, l) => sum + l.scanned, 0);
      const scanned = await expectProgressMatchesCommits(s, `after kill ${run}`);
      // Nothing the process saw committed is lost; at most one batch per worker committed
      // without the process hearing of it (killed between the commit and the result).
      expect(scanned).toBeGreaterThanOrEqual(reported + runReported);
      expect(scanned).toBeLessThanOrEqual(reported + runReported + workers * batchSize);
      unreported.push(scanned - reported - runReported);
      reported = scanned;
      // The kill interrupted a backfill that was not finished.
      expect(scanned).toBeLessThan(s.oldRows);
    }
    const last = runs[kills] as BackfillChild;
    await last.waitFor((l) => l.event === 'ready', 'ready', 60_000);
    last.go();
    const summary = await last.finished(120_000);
    expect(summary).toMatchObject({ finished: true, aborted: false, planned: false });
    expect(summary.rowsScanned).toBe(s.oldRows - reported);
    await expectExactlyOnce(s);
    // Diagnostics for the report (not asserted: where a kill lands is up to the scheduler).
    console.info(
      `kill test seed ${seed}: mid-statement kills ${midStatement.filter(Boolean).length}/${kills}, ` +
        `rows committed but unreported at each kill: ${unreported.join(', ')}`,
    );
  }, 180_000);

  it('survives its connections being terminated mid-run (retries or fails, then resumes)', async () => {
    const s = await start('drop', [8_000, 6_000, 4_000, 2_000]);
    const name = `${s.env.schema}-drop`;
    // A pool of our own with an error listener on every client: without it, a connection
    // terminated while checked out crashes the process with an unhandled 'error' event
    // (openDatabase(url) adds none; reported with a repro). Same statements as the URL path.
    const pool = new pg.Pool({ connectionString: urlFor(name), max: 4, types: pgTypeOverrides });
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    const handle = await openDatabase(pool, { preparedStatements: true });
    handles.push({ ...handle, close: async () => pool.end() });
    const migration = createPersonsMigration({
      db: handle,
      schema: s.env.schema,
      controlSchema: s.env.controlSchema,
    });
    migrations.push(migration);
    let batches = 0;
    let retries = 0;
    migration.events.on('backfill:batch', () => {
      batches += 1;
    });
    migration.events.on('backfill:retry', () => {
      retries += 1;
    });
    const options = {
      workers: 3,
      batchSize: 200,
      targetBatchMs: 0,
      leaseMs: 500,
      maxRowsPerSecond: 5_000,
      retryBaseMs: 20,
    };
    const failures: unknown[] = [];
    const outcomes: string[] = [];
    let call = migration.backfill({ ...options, ranges: 6 });
    const state: { settled: 'pending' | 'ok' | 'failed' } = { settled: 'pending' };
    const watch = (p: typeof call) => {
      state.settled = 'pending';
      p.then(
        () => {
          state.settled = 'ok';
        },
        (error: unknown) => {
          failures.push(error);
          state.settled = 'failed';
        },
      );
    };
    watch(call);
    const blocker = await openRawSession();
    onCleanUp.push(() => blocker.end());
    // A failed call is restarted at once (its committed checkpoints stay).
    const ensureRunning = () => {
      if (state.settled === 'failed') {
        call = migration.backfill(options);
        watch(call);
      }
      if (state.settled === 'ok') throw new Error('the backfill finished before the test ended');
    };
    let terminated = 0;
    for (let round = 0; round < 4; round++) {
      const batchesBefore = batches;
      await waitUntil(
        () => {
          ensureRunning();
          return batches > batchesBefore;
        },
        'a batch',
        10_000,
      );
      await delay(randomInt(random, 50, 300));
      // Terminate while batch statements are surely in flight: a lock makes them wait.
      await blocker.query('BEGIN');
      await blocker.query(`LOCK TABLE ${s.env.newTableText} IN EXCLUSIVE MODE`);
      await waitUntil(
        async () => {
          ensureRunning();
          return (await sessionsOf(s.env, name)).some(
            (x) =>
              x.state === 'active' && x.waitEventType === 'Lock' && x.query.includes(batchMarker),
          );
        },
        'a batch statement in flight',
        20_000,
        5,
      );
      const retriesBefore = retries;
      const failuresBefore = failures.length;
      const { rows } = await sql<{ ok: boolean }>`
        SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE application_name = ${name}`.execute(s.env.admin.db);
      terminated += rows.filter((r) => r.ok).length;
      await blocker.query('COMMIT');
      await waitUntil(
        () =>
          retries > retriesBefore ||
          failures.length > failuresBefore ||
          batches > batchesBefore + 20,
        'a retry, a failure or further batches',
        20_000,
      );
      outcomes.push(
        retries > retriesBefore
          ? 'retried'
          : failures.length > failuresBefore
            ? 'failed'
            : 'unnoticed',
      );
    }
    // Every termination hit a running batch: the call retried it or failed.
    expect(outcomes.filter((o) => o === 'unnoticed')).toEqual([]);
    expect(terminated).toBeGreaterThanOrEqual(4);
    for (const error of failures) expect(error).toBeInstanceOf(QueryFailedError);
    // Restart until done (a failed call leaves its committed checkpoints).
    for (let attempt = 0; state.settled !== 'ok' && attempt < 5; attempt++) {
      if (state.settled === 'failed') {
        call = migration.backfill(options);
        watch(call);
      }
      await call.catch(() => undefined);
    }
    const result = await call;
    expect(result.finished).toBe(true);
    console.info(`dropped connections: ${outcomes.join(', ')}; ${terminated} sessions terminated`);
    await expectExactlyOnce(s);
  }, 120_000);

  it('times out statements behind a lock: retries, or fails after maxRetries, then resumes', async () => {
    const s = await start('stmt', [5_000, 3_000, 2_000]);
    const name = `${s.env.schema}-timeout`;
    const handle = await openDatabase(urlFor(name, { options: '-c statement_timeout=150' }), {
      maxConnections: 4,
    });
    handles.push(handle);
    const migration = createPersonsMigration({
      db: handle,
      schema: s.env.schema,
      controlSchema: s.env.controlSchema,
    });
    migrations.push(migration);
    const { rows: timeout } = await sql<{
      t: string;
    }>`SELECT current_setting('statement_timeout') AS t`.execute(handle.db);
    expect(timeout[0]?.t).toBe('150ms');
    let retries = 0;
    migration.events.on('backfill:retry', () => {
      retries += 1;
    });
    const options = { workers: 2, batchSize: 300, targetBatchMs: 0, leaseMs: 500, retryBaseMs: 20 };
    // A session holding a lock that conflicts with the batch's insert (either lock mode): every batch waits
    // until statement_timeout cancels it (57014).
    const blocker = await openRawSession();
    try {
      await blocker.query('BEGIN');
      await blocker.query(`LOCK TABLE ${s.env.newTableText} IN EXCLUSIVE MODE`);
      const error = await migration
        .backfill({ ...options, ranges: 4, maxRetries: 2 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QueryFailedError);
      expect((error as QueryFailedError).sqlState).toBe('57014');
      expect(retries).toBeGreaterThanOrEqual(2);
      await blocker.query('COMMIT');
      expect(await expectProgressMatchesCommits(s, 'after the failed call')).toBe(0);

      // Blocked again in the middle of a run: batches time out and are retried until the
      // lock goes, then the run finishes.
      const retriesBefore = retries;
      let batches = 0;
      migration.events.on('backfill:batch', () => {
        batches += 1;
      });
      const run = migration.backfill({ ...options, maxRetries: 20, maxRowsPerSecond: 10_000 });
      await waitUntil(() => batches >= 3, 'three batches', 10_000);
      await blocker.query('BEGIN');
      await blocker.query(`LOCK TABLE ${s.env.newTableText} IN EXCLUSIVE MODE`);
      await waitUntil(() => retries >= retriesBefore + 3, 'three retries', 10_000);
      await blocker.query('COMMIT');
      expect(await run).toMatchObject({ finished: true });
    } finally {
      await blocker.end();
    }
    await expectExactlyOnce(s);
  }, 120_000);
});

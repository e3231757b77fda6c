/**
 * The live readiness signal: per-method fallback counters and `read:fallback` events in
 * `dual_read`, and the optional Scientist-style shadow reads (`shadowReads`), on PGlite and
 * on the real server. Shadow reads are observed through a Kysely plugin on the handle that
 * records (and, where a test needs an interleaving, pauses) the statements really sent.
 */
import { type KyselyPlugin, PostgresQueryCompiler, type QueryId, sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { statementTagText } from '../../src/db/statement-tag.js';
import { createPersonsMigration, InvalidOptionsError } from '../../src/index.js';
import type { PhaseAwareRepository } from '../../src/repository/phase-aware-repository.js';
import type {
  MethodReadStats,
  ReadStats,
  ReadStatsMethod,
} from '../../src/repository/read-stats.js';
import { Gate, openAllGates, openRawSession, waitUntil } from '../support/concurrency.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import {
  availableBackends,
  describeOnRealServer,
  dropSchemas,
  openBackend,
} from '../support/test-database.js';

/** The first statement of every shadow read's transaction (it sets the read's timeout). */
const shadowTimeoutStatement = statementTagText('shadow-read-timeout');

/**
 * `handle` with a plugin that records the SQL of every statement sent through it and, when
 * `hold` returns a promise for a statement, keeps that statement's result (and so its
 * connection or PGlite's session) until the promise settles.
 */
function observed(
  handle: DatabaseHandle,
  hold?: (statement: string) => Promise<unknown> | undefined,
): { handle: DatabaseHandle; statements: string[] } {
  const statements: string[] = [];
  const compiler = new PostgresQueryCompiler();
  const texts = new WeakMap<QueryId, string>();
  const plugin: KyselyPlugin = {
    transformQuery({ node, queryId }) {
      // A statement compiled (to describe it) and then sent is recorded once.
      if (texts.has(queryId)) return node;
      const text = compiler.compileQuery(node, queryId).sql;
      statements.push(text);
      texts.set(queryId, text);
      return node;
    },
    async transformResult({ result, queryId }) {
      const text = texts.get(queryId);
      if (text !== undefined) await hold?.(text);
      return result;
    },
  };
  return { handle: { ...handle, db: handle.db.withPlugin(plugin) }, statements };
}

const shadowStatements = (statements: readonly string[]) =>
  statements.filter((s) => s.includes(statementTagText('shadow-read')));

/** Expected counters of one method (shadow counts zero unless given). */
function counted(
  reads: number,
  rows: number,
  oldRows: number,
  fallbackReads: number,
  shadow: Partial<MethodReadStats['shadow']> = {},
): MethodReadStats {
  return {
    reads,
    rows,
    oldRows,
    fallbackReads,
    fallbackRate: rows === 0 ? 0 : oldRows / rows,
    shadow: {
      sampled: 0,
      matched: 0,
      mismatched: 0,
      mismatchedKeys: 0,
      failed: 0,
      skipped: 0,
      ...shadow,
    },
  };
}

const none = counted(0, 0, 0, 0);

/** Waits until every sampled shadow read has an outcome. */
async function shadowReadsSettled(repo: PhaseAwareRepository): Promise<ReadStats> {
  let stats = repo.readStats();
  await waitUntil(() => {
    stats = repo.readStats();
    const s = stats.totals.shadow;
    return s.sampled === s.matched + s.mismatched + s.failed + s.skipped;
  }, 'the shadow reads to finish');
  return stats;
}

describe.each(availableBackends())('live readiness signal on %s', (backend) => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture | undefined;
  let repo: PhaseAwareRepository;
  let fallbacks: { method: string; rows: number; total: number }[];
  let mismatches: { method: string; keys: { teamId: number; personId: string }[] }[];
  let failures: { method: string; error: unknown }[];

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    openAllGates();
    await repo?.close();
    await fixture?.drop();
    fixture = undefined;
  });

  /** Team 1 with `seed` persons only in the old table, in `dual_read`, events recorded. */
  async function setUp(
    options: Parameters<typeof createMigrationFixture>[1] = {},
  ): Promise<MigrationFixture> {
    fixture = await createMigrationFixture(handle, { seed: 10, dualRead: true, ...options });
    repo = fixture.migration.repository() as PhaseAwareRepository;
    fallbacks = [];
    mismatches = [];
    failures = [];
    fixture.migration.events.on('read:fallback', (e) => fallbacks.push({ ...e }));
    fixture.migration.events.on('read:shadow-mismatch', (e) =>
      mismatches.push({ method: e.method, keys: [...e.keys] }),
    );
    fixture.migration.events.on('read:shadow-failed', (e) => failures.push({ ...e }));
    return fixture;
  }

  function seeded(f: MigrationFixture, index: number): string {
    const id = f.seededIds[index];
    if (id === undefined) throw new Error(`no seeded person ${index}`);
    return id;
  }

  async function uuidOf(f: MigrationFixture, id: string): Promise<string> {
    const { rows } = await sql<{ uuid: string }>`
      SELECT uuid::text AS uuid FROM ${f.oldTable()} WHERE id = ${id}::bigint`.execute(handle.db);
    const uuid = rows[0]?.uuid;
    if (!uuid) throw new Error('no uuid');
    return uuid;
  }

  /** Copies every old row the new table lacks, as a backfill would. */
  async function copyAll(f: MigrationFixture): Promise<void> {
    await sql`INSERT INTO ${f.newTable()} SELECT * FROM ${f.oldTable()} ON CONFLICT DO NOTHING`.execute(
      handle.db,
    );
  }

  /** One read of each tracked method, for persons seed-1..seed-3 of team 1. */
  async function readEveryMethod(f: MigrationFixture): Promise<Record<ReadStatsMethod, number>> {
    const [a, b, c] = [seeded(f, 0), seeded(f, 1), seeded(f, 2)];
    const person = await repo.fetchPerson(1, 'seed-1');
    const byDistinctIds = await repo.fetchPersonsByDistinctIds([
      { teamId: 1, distinctId: 'seed-1' },
      { teamId: 1, distinctId: 'seed-2' },
      { teamId: 1, distinctId: 'missing' },
    ]);
    const byPersonIds = await repo.fetchPersonsByPersonIds([
      { teamId: 1, personId: a },
      { teamId: 1, personId: b },
      { teamId: 1, personId: c },
      { teamId: 1, personId: '999999999' },
    ]);
    const byUuid = await repo.fetchPersonByUuid(1, await uuidOf(f, a));
    const page = await repo.listPersons(1, { limit: 4 });
    // The answers themselves carry no bookkeeping column.
    for (const row of [person, byUuid, ...byDistinctIds, ...byPersonIds, ...page.persons]) {
      expect(row).toBeDefined();
      expect(Object.keys(row ?? {}).filter((k) => k.startsWith('pg_dual_read'))).toEqual([]);
    }
    return {
      fetchPerson: person ? 1 : 0,
      fetchPersonsByDistinctIds: byDistinctIds.length,
      fetchPersonsByPersonIds: byPersonIds.length,
      fetchPersonByUuid: byUuid ? 1 : 0,
      listPersons: page.persons.length,
    };
  }

  it('counts every merged read method and emits read:fallback for persons only in the old table', async () => {
    const f = await setUp();
    const returned = await readEveryMethod(f);
    expect(returned).toEqual({
      fetchPerson: 1,
      fetchPersonsByDistinctIds: 2,
      fetchPersonsByPersonIds: 3,
      fetchPersonByUuid: 1,
      listPersons: 4,
    });
    expect(await repo.fetchPerson(1, 'nobody')).toBeUndefined();
    expect(fallbacks).toEqual([
      { method: 'fetchPerson', rows: 1, total: 1 },
      { method: 'fetchPersonsByDistinctIds', rows: 2, total: 2 },
      { method: 'fetchPersonsByPersonIds', rows: 3, total: 3 },
      { method: 'fetchPersonByUuid', rows: 1, total: 1 },
      { method: 'listPersons', rows: 4, total: 4 },
    ]);
    const stats = repo.readStats();
    expect(stats.methods).toEqual({
      fetchPerson: counted(2, 1, 1, 1),
      fetchPersonsByDistinctIds: counted(1, 2, 2, 1),
      fetchPersonsByPersonIds: counted(1, 3, 3, 1),
      fetchPersonByUuid: counted(1, 1, 1, 1),
      listPersons: counted(1, 4, 4, 1),
    });
    expect(stats.totals).toEqual(counted(6, 11, 11, 5));
    expect(stats.fallbackRate).toBe(1);
    // status() carries the same counters (this process's readiness signal).
    expect((await f.migration.status()).reads.totals).toEqual(counted(6, 11, 11, 5));
  });

  it('a person copied by a write through the repository is no fallback; a read of both kinds counts only the old one', async () => {
    const f = await setUp();
    const [a, b] = [seeded(f, 0), seeded(f, 1)];
    await repo.updatePerson(1, a, { properties: { plan: 'paid' } });
    expect(await f.rowsIn('new', a)).toHaveLength(1);
    expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({ id: a, version: 1 });
    const rows = await repo.fetchPersonsByPersonIds([
      { teamId: 1, personId: a },
      { teamId: 1, personId: b },
    ]);
    expect(rows).toHaveLength(2);
    expect(fallbacks).toEqual([{ method: 'fetchPersonsByPersonIds', rows: 1, total: 2 }]);
    const stats = repo.readStats();
    expect(stats.methods.fetchPerson).toEqual(counted(1, 1, 0, 0));
    expect(stats.methods.fetchPersonsByPersonIds).toEqual(counted(1, 2, 1, 1));
    expect(stats.fallbackRate).toBeCloseTo(1 / 3, 10);
  });

  it('after the old rows are copied (INSERT INTO new SELECT * FROM old), every method reports zero fallback', async () => {
    const f = await setUp();
    await readEveryMethod(f);
    expect(repo.readStats().fallbackRate).toBe(1);
    await copyAll(f);
    repo.resetReadStats();
    fallbacks.length = 0;
    const returned = await readEveryMethod(f);
    expect(fallbacks).toEqual([]);
    const stats = repo.readStats();
    for (const method of Object.keys(returned) as ReadStatsMethod[]) {
      expect(stats.methods[method], method).toEqual(counted(1, returned[method], 0, 0));
    }
    expect(stats.totals).toEqual(counted(5, 11, 0, 0));
    expect(stats.fallbackRate).toBe(0);
  });

  it('counts reads in dual_read only, in a transaction too, and not forUpdate reads nor countPersons', async () => {
    const f = await setUp({ dualRead: false });
    expect(await repo.fetchPerson(1, 'seed-1')).toBeDefined();
    expect(await repo.listPersons(1)).toMatchObject({ persons: expect.any(Array) });
    expect(repo.readStats().totals).toEqual(none);
    await f.migration.startDualRead();
    expect(await repo.countPersons(1)).toBe(10);
    await repo.inTransaction(async (tx) => {
      expect(await tx.fetchPerson(1, 'seed-2')).toBeDefined();
      expect(await tx.fetchPerson(1, 'seed-3', { forUpdate: true })).toBeDefined();
      // The transaction's repository shares the counters.
      expect(tx.readStats().methods.fetchPerson).toEqual(counted(1, 1, 1, 1));
    });
    expect(fallbacks).toEqual([{ method: 'fetchPerson', rows: 1, total: 1 }]);
    expect(repo.readStats().totals).toEqual(counted(1, 1, 1, 1));
    await f.forcePhase('new');
    expect(await repo.fetchPerson(1, 'seed-3')).toBeDefined(); // copied by the forUpdate read
    expect(repo.readStats().totals).toEqual(counted(1, 1, 1, 1));
  });

  it('resetReadStats sets every counter to zero and moves since', async () => {
    const f = await setUp();
    const before = repo.readStats();
    expect(before.totals).toEqual(none);
    await readEveryMethod(f);
    expect(repo.readStats().totals.reads).toBe(5);
    await new Promise((resolve) => setTimeout(resolve, 5));
    repo.resetReadStats();
    const after = repo.readStats();
    expect(after.totals).toEqual(none);
    expect(Object.values(after.methods)).toEqual(Array(5).fill(none));
    expect(after.fallbackRate).toBe(0);
    expect(after.since.getTime()).toBeGreaterThan(before.since.getTime());
    // A snapshot is a value: later reads do not change it.
    await repo.fetchPerson(1, 'seed-1');
    expect(after.totals.reads).toBe(0);
    expect(repo.readStats().totals.reads).toBe(1);
  });

  it('with sampleRate 1, every point and batch read reports the exact key of an old-only person, and none of a copied one', async () => {
    const o = observed(handle);
    const f = await setUp({ db: o.handle, shadowReads: { sampleRate: 1, timeoutMs: 10_000 } });
    const [a, b] = [seeded(f, 0), seeded(f, 1)];
    await repo.updatePerson(1, a, { properties: { plan: 'paid' } }); // a is copied, b is not
    const oldOnly = [{ teamId: 1, personId: b }];
    const reads: [ReadStatsMethod, () => Promise<unknown>, boolean][] = [
      ['fetchPerson', () => repo.fetchPerson(1, 'seed-1'), false],
      ['fetchPerson', () => repo.fetchPerson(1, 'seed-2'), true],
      [
        'fetchPersonsByDistinctIds',
        () =>
          repo.fetchPersonsByDistinctIds([
            { teamId: 1, distinctId: 'seed-1' },
            { teamId: 1, distinctId: 'seed-2' },
          ]),
        true,
      ],
      [
        'fetchPersonsByPersonIds',
        () => repo.fetchPersonsByPersonIds([{ teamId: 1, personId: a }]),
        false,
      ],
      [
        'fetchPersonsByPersonIds',
        () =>
          repo.fetchPersonsByPersonIds([
            { teamId: 1, personId: a },
            { teamId: 1, personId: b },
          ]),
        true,
      ],
      ['fetchPersonByUuid', async () => repo.fetchPersonByUuid(1, await uuidOf(f, a)), false],
      ['fetchPersonByUuid', async () => repo.fetchPersonByUuid(1, await uuidOf(f, b)), true],
    ];
    for (const [method, read, mismatch] of reads) {
      mismatches.length = 0;
      const before = repo.readStats().methods[method].shadow;
      expect(await read()).toBeTruthy();
      await shadowReadsSettled(repo);
      expect(mismatches, method).toEqual(mismatch ? [{ method, keys: oldOnly }] : []);
      const after = repo.readStats().methods[method].shadow;
      expect(after.sampled - before.sampled).toBe(1);
      expect(after.mismatched - before.mismatched).toBe(mismatch ? 1 : 0);
      expect(after.matched - before.matched).toBe(mismatch ? 0 : 1);
    }
    expect(failures).toEqual([]);
    expect(repo.readStats().totals.shadow).toEqual({
      sampled: 7,
      matched: 3,
      mismatched: 4,
      mismatchedKeys: 4,
      failed: 0,
      skipped: 0,
    });
    // Each shadow read is one statement on the new table alone.
    const shadow = shadowStatements(o.statements);
    expect(shadow).toHaveLength(7);
    for (const text of shadow) {
      expect(text).toContain(`"${f.schema}"."posthog_person_new"`);
      expect(text).not.toContain(`"${f.schema}"."posthog_person" `);
    }
    // Not sampled: a page, a read that found nobody, a read in a transaction.
    await repo.listPersons(1);
    await repo.fetchPerson(1, 'nobody');
    await repo.inTransaction((tx) => tx.fetchPerson(1, 'seed-3'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(repo.readStats().totals.shadow.sampled).toBe(7);
    expect(shadowStatements(o.statements)).toHaveLength(7);
  });

  it('a shadow read compares with the answer as returned: a caller changing it fakes no mismatch, a row changed in the new table meanwhile is reported', async () => {
    let change: (() => Promise<unknown>) | undefined;
    // On the server the change commits while the shadow read's transaction waits after its
    // first statement; on PGlite (one session) it is queued before the shadow read starts.
    const o = observed(handle, (statement) => {
      if (!statement.includes(shadowTimeoutStatement) || !change) return undefined;
      const run = change;
      change = undefined;
      return run();
    });
    const f = await setUp({ db: o.handle, shadowReads: { sampleRate: 1, timeoutMs: 10_000 } });
    const [a, b, c] = [seeded(f, 0), seeded(f, 1), seeded(f, 2)];
    await copyAll(f);

    const person = await repo.fetchPerson(1, 'seed-1');
    if (!person) throw new Error('seed-1 not found');
    person.properties.plan = 'changed by the caller';
    person.version = 99;
    const settled = await shadowReadsSettled(repo);
    expect(settled.totals.shadow).toMatchObject({ sampled: 1, matched: 1, mismatched: 0 });
    expect(mismatches).toEqual([]);

    // a: same version, other content; b: a newer version; c: unchanged.
    const changeRows = () =>
      sql`UPDATE ${f.newTable()}
        SET properties = CASE WHEN id = ${a}::bigint THEN properties || '{"plan": "paid"}' ELSE properties END,
            version = CASE WHEN id = ${b}::bigint THEN version + 1 ELSE version END
        WHERE id IN (${a}::bigint, ${b}::bigint)`.execute(handle.db);
    if (backend === 'postgres') change = changeRows;
    const rows = await repo.fetchPersonsByPersonIds(
      [a, b, c].map((personId) => ({ teamId: 1, personId })),
    );
    const queued = backend === 'pglite' ? changeRows() : undefined;
    expect(rows.map((r) => [r.id, r.version, r.properties.plan]).sort()).toEqual(
      [
        [a, 0, 'free'],
        [b, 0, 'free'],
        [c, 0, 'free'],
      ].sort(),
    );
    await queued;
    await shadowReadsSettled(repo);
    expect(change).toBeUndefined(); // the change did run before the shadow read's SELECT
    expect(mismatches).toHaveLength(1);
    expect(mismatches[0]?.method).toBe('fetchPersonsByPersonIds');
    expect(mismatches[0]?.keys.map((k) => k.personId).sort()).toEqual([a, b].sort());
    expect(mismatches[0]?.keys.every((k) => k.teamId === 1)).toBe(true);
    expect(repo.readStats().totals.shadow).toMatchObject({ mismatched: 1, mismatchedKeys: 2 });
  });

  it('with sampleRate 0, the new table is never read alone', async () => {
    const o = observed(handle);
    const f = await setUp({ db: o.handle, shadowReads: { sampleRate: 0 } });
    await repo.updatePerson(1, seeded(f, 0), { properties: { plan: 'paid' } });
    for (let i = 0; i < 5; i++) await readEveryMethod(f);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(shadowStatements(o.statements)).toEqual([]);
    expect(o.statements.some((s) => s.includes(shadowTimeoutStatement))).toBe(false);
    const stats = repo.readStats();
    expect(stats.totals.shadow).toEqual(none.shadow);
    expect(stats.totals.reads).toBe(25); // the fallback counters still count
    expect(mismatches).toEqual([]);
  });

  it('a sampleRate between 0 and 1 samples about that fraction of reads', async () => {
    await setUp({ shadowReads: { sampleRate: 0.5 } });
    for (let i = 0; i < 200; i++) await repo.fetchPerson(1, `seed-${(i % 10) + 1}`);
    const { sampled } = (await shadowReadsSettled(repo)).totals.shadow;
    // Binomial(200, 0.5): outside 60..140 with probability below 1e-8.
    expect(sampled).toBeGreaterThan(60);
    expect(sampled).toBeLessThan(140);
  });

  it('a shadow read that times out emits read:shadow-failed and leaves the answer alone', async () => {
    const gate = new Gate();
    // The shadow read's transaction is held after its first statement, past its timeout.
    const o = observed(handle, (statement) =>
      statement.includes(shadowTimeoutStatement) ? gate.promise : undefined,
    );
    const f = await setUp({ db: o.handle, shadowReads: { sampleRate: 1, timeoutMs: 50 } });
    const pairs = f.seededIds.map((personId) => ({ teamId: 1, personId }));
    const started = Date.now();
    const rows = await repo.fetchPersonsByPersonIds(pairs);
    expect(failures).toEqual([]); // the answer came first
    expect(rows.map((r) => r.id).sort()).toEqual([...f.seededIds].sort());
    expect(rows.every((r) => r.version === 0 && r.properties.plan === 'free')).toBe(true);
    await waitUntil(() => failures.length === 1, 'read:shadow-failed');
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    const error = failures[0]?.error;
    expect(failures[0]?.method).toBe('fetchPersonsByPersonIds');
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '57014' });
    expect(String((error as Error).message)).toContain('timed out after 50 ms');
    // The error names the statement and its parameter count (team ids, person ids), no values.
    expect(error).toMatchObject({ parameterCount: 2 });
    expect((error as { sql: string }).sql).toContain(statementTagText('shadow-read'));
    gate.open();
    // The late answer (every person old-only: a mismatch) is dropped.
    await repo.close();
    expect(mismatches).toEqual([]);
    expect(repo.readStats().totals.shadow).toEqual({ ...none.shadow, sampled: 1, failed: 1 });
    // And the repository goes on answering.
    expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({ version: 0 });
  });

  it('pending shadow reads do not break migration.close() and db.close()', async () => {
    const own = await openBackend(backend);
    const f = await createMigrationFixture(own, {
      seed: 10,
      dualRead: true,
      shadowReads: { sampleRate: 1, timeoutMs: 1_000 },
    });
    try {
      const ownRepo = f.migration.repository() as PhaseAwareRepository;
      const pairs = f.seededIds.map((personId) => ({ teamId: 1, personId }));
      for (let i = 0; i < 3; i++) {
        expect(await ownRepo.fetchPersonsByPersonIds(pairs)).toHaveLength(10);
      }
      expect(ownRepo.readStats().totals.shadow.sampled).toBe(3);
      await f.migration.close();
      await own.close();
      // Every shadow read ends (compared, or failed on the closed handle) without an
      // unhandled rejection, which would fail this file.
      const stats = await shadowReadsSettled(ownRepo);
      expect(stats.totals.shadow.sampled).toBe(3);
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      await own.close();
      if (backend === 'postgres') await dropSchemas(handle, f.schema, f.controlSchema);
    }
  });

  it('the repository close() waits for running shadow reads and silences them', async () => {
    const gate = new Gate();
    const o = observed(handle, (statement) =>
      statement.includes(shadowTimeoutStatement) ? gate.promise : undefined,
    );
    const f = await setUp({ db: o.handle, shadowReads: { sampleRate: 1, timeoutMs: 10_000 } });
    expect(await repo.fetchPerson(1, 'seed-1')).toBeDefined(); // old-only: would mismatch
    await waitUntil(
      () => o.statements.some((s) => s.includes(shadowTimeoutStatement)),
      'the shadow read to start',
    );
    let closed = false;
    const closing = repo.close().then(() => {
      closed = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(closed).toBe(false);
    gate.open();
    await closing;
    expect(mismatches).toEqual([]);
    expect(failures).toEqual([]);
    expect(repo.readStats().totals.shadow).toEqual({ ...none.shadow, sampled: 1, skipped: 1 });
    // No new shadow read after close(); reads go on.
    expect(await repo.fetchPerson(1, 'seed-2')).toBeDefined();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(shadowStatements(o.statements)).toHaveLength(1);
    expect(f.migration.options.shadowReads).toEqual({ sampleRate: 1, timeoutMs: 10_000 });
  });
});

describeOnRealServer('shadow read timeout on the server', () => {
  let handle: DatabaseHandle;

  beforeAll(async () => {
    handle = await openBackend('postgres');
  });
  afterAll(async () => {
    openAllGates();
    await handle.close();
  });

  it('statement_timeout ends a shadow read blocked by a lock while the lock is still held', async () => {
    const raw = await openRawSession();
    let fixture: MigrationFixture | undefined;
    try {
      let locked = false;
      // Once the shadow read has set its timeout, another session locks the new table: the
      // shadow read's SELECT waits for that lock, which is never released during the test.
      const o = observed(handle, async (statement) => {
        if (!statement.includes(shadowTimeoutStatement) || locked || !fixture) return;
        locked = true;
        await raw.query(
          `BEGIN; LOCK TABLE "${fixture.schema}".posthog_person_new IN ACCESS EXCLUSIVE MODE`,
        );
      });
      fixture = await createMigrationFixture(handle, {
        seed: 3,
        dualRead: true,
        db: o.handle,
        shadowReads: { sampleRate: 1, timeoutMs: 200 },
      });
      const failures: unknown[] = [];
      fixture.migration.events.on('read:shadow-failed', ({ error }) => failures.push(error));
      const repo = fixture.migration.repository() as PhaseAwareRepository;
      expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({ version: 0 });
      await waitUntil(() => failures.length === 1, 'read:shadow-failed');
      // Without statement_timeout the SELECT would wait for the lock as long as it is held.
      const ended = await Promise.race([
        repo.close().then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5_000)),
      ]);
      expect(ended).toBe(true);
      const waiting = await raw.query(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE NOT l.granted AND c.relname = 'posthog_person_new'
           AND c.relnamespace = $1::regnamespace`,
        [fixture.schema],
      );
      expect(waiting[0]?.n).toBe(0);
      expect(locked).toBe(true);
    } finally {
      await raw.end();
      await fixture?.drop();
    }
  });
});

describe('option shadowReads', () => {
  // Validation happens before any query: a handle that was never opened is enough here.
  const fake = { db: {}, backend: 'postgres', close: async () => {} } as unknown as DatabaseHandle;

  function optionError(shadowReads: unknown): InvalidOptionsError {
    try {
      createPersonsMigration({ db: fake, shadowReads } as never);
    } catch (error) {
      if (error instanceof InvalidOptionsError) return error;
      throw error;
    }
    throw new Error('expected an InvalidOptionsError');
  }

  it.each([
    [{ sampleRate: 1.5 }, 'shadowReads.sampleRate must be a number from 0 to 1'],
    [{ sampleRate: -0.1 }, 'shadowReads.sampleRate must be a number from 0 to 1'],
    [{ sampleRate: '0.5' }, 'shadowReads.sampleRate must be a number from 0 to 1'],
    [{ sampleRate: Number.NaN }, 'shadowReads.sampleRate must be a number from 0 to 1'],
    [{}, 'shadowReads.sampleRate must be a number from 0 to 1'],
    [{ sampleRate: 1, timeoutMs: 0 }, 'shadowReads.timeoutMs must be an integer from 1 to 60000'],
    [
      { sampleRate: 1, timeoutMs: 60_001 },
      'shadowReads.timeoutMs must be an integer from 1 to 60000',
    ],
    [{ sampleRate: 1, timeoutMs: 2.5 }, 'shadowReads.timeoutMs must be an integer from 1 to 60000'],
    [{ sampleRate: 1, rate: 2 }, 'unknown option(s) shadowReads.rate'],
    [true, 'shadowReads must be an object'],
  ])('%j is refused with a message naming the option', (bad, message) => {
    const error = optionError(bad);
    expect(error.code).toBe('INVALID_OPTIONS');
    expect(error.message).toContain(message);
    expect(error.issues.map((i) => i.path.split('.')[0])).toContain('shadowReads');
  });

  it('is off by default; timeoutMs defaults to 200; the resolved option is frozen', () => {
    expect(createPersonsMigration({ db: fake }).options.shadowReads).toBeUndefined();
    const { shadowReads } = createPersonsMigration({
      db: fake,
      shadowReads: { sampleRate: 0.25 },
    }).options;
    expect(shadowReads).toEqual({ sampleRate: 0.25, timeoutMs: 200 });
    expect(Object.isFrozen(shadowReads)).toBe(true);
  });
});

/**
 * The backfill racing live writes, on a real server (the race of design.md: "the backfill
 * may have read an old row that a delete is removing, and copy it into the new table after
 * the delete ran").
 *
 * The protocol under test (RangeStore.batch and PersonWrites), in both lock modes:
 * - `lockMode: 'rows'`: a batch reads the old rows `FOR SHARE` as it inserts their copies; a
 *   batch reaching an old row a delete holds waits for it, then skips it;
 * - `lockMode: 'ranges'` (default): a batch locks its range's control row `FOR UPDATE` before the
 *   statement that reads and copies, and holds it until it commits; a delete locks the row of
 *   the range still to copy its key `FOR KEY SHARE` first, so a delete waits for a batch in
 *   flight in its range and a batch waits for a delete in flight in its range; planning and
 *   splits take the delete fence `SHARE`, which every delete holds `ROW EXCLUSIVE`;
 * - either way copies insert `ON CONFLICT DO NOTHING` when the batch's window already holds a
 *   copy, else without it (a write racing into the window then fails the batch with 23505: it
 *   is retried, and the rest of its range pre-checks); a delete removes the old row first,
 *   then the new row in a later statement (which sees the batch's copy), then the distinct ids.
 *
 * Per mode, two forced interleavings (each side holds its locks until the other is seen waiting
 * in pg_stat_activity) and a merge never being the deadlock victim of a batch (the batch gives
 * way); a range held by a delete left open being put off while the other is copied; a batch
 * without the arbiter meeting a racing copy; then randomized runs in each mode: a 3-worker
 * backfill of 20,000 old persons while three service instances create, update, delete, add
 * distinct ids and merge. A write that still fails with
 * a deadlock (40P01: batches give way after batchLockTimeoutMs, well before Postgres's 1 s
 * deadlock check, so this is rare) is counted and treated as not done: the end state must then
 * show none of it.
 */
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { planBackfill } from '../../src/backfill/backfill-plan.js';
import { RangeStore } from '../../src/backfill/range-store.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { resolveMigrationOptions } from '../../src/options/migration-options.js';
import { loadPersonColumns } from '../../src/persons/person-columns.js';
import type { PersonRow } from '../../src/repository/persons-repository.js';
import {
  Gate,
  MigrationEnv,
  openAllGates,
  openRawSession,
  pick,
  type RawSession,
  type ServiceInstance,
  seededRandom,
  track,
} from '../support/concurrency.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

/**
 * Seeds of the randomized runs: 1, 2 and 3, or `PG_DUAL_READ_SEEDS` as a list and/or ranges
 * (`PG_DUAL_READ_SEEDS=7,8,9`, `PG_DUAL_READ_SEEDS=1-20`). A failure names its seed.
 */
function raceSeeds(): number[] {
  const fromEnv = process.env.PG_DUAL_READ_SEEDS?.trim();
  if (!fromEnv) return [1, 2, 3];
  const seeds = fromEnv.split(',').flatMap((part) => {
    const [from, to] = part.trim().split('-').map(Number);
    if (from === undefined || !Number.isInteger(from)) return [];
    const last = to !== undefined && Number.isInteger(to) ? to : from;
    return Array.from({ length: Math.max(0, last - from + 1) }, (_, i) => from + i);
  });
  if (seeds.length === 0)
    throw new Error(`PG_DUAL_READ_SEEDS=${fromEnv}: expected e.g. 7,8,9 or 1-20`);
  return seeds;
}

/** The statements the races wait on, by their tags (see src/db/statement-tag.ts). */
const batchStatement = (env: MigrationEnv) => env.statementLike('backfill-batch');
/** A delete's statement that removes the old row (in dual_read it takes its fences first). */
const deleteOfOldRow = (env: MigrationEnv) => env.statementLike('delete-old-row');
const deleteTakingFence = deleteOfOldRow;
/** A batch's request of its range row, before its batch statement ('ranges' mode). */
const batchTakingRange = (env: MigrationEnv) => env.statementLike('backfill-range-fence');
/** The planner's (or a split's) request of the delete fence. */
const planTakingFence = (env: MigrationEnv) => env.statementLike('delete-fence-lock');

/** Cursors of the ranges being copied now. */
async function runningCursors(env: MigrationEnv) {
  const { rows } = await sql<{ cursor_team: string | null; cursor_id: string | null }>`
    SELECT cursor_team::text, cursor_id::text FROM ${sql.id(env.controlSchema, 'backfill_range')}
    WHERE status = 'running'`.execute(env.admin.db);
  return rows;
}

/**
 * A one-worker backfill (one range unless told) of 50-key batches that waits for any lock instead of giving
 * way (`batchLockTimeoutMs: 0`), as a forced interleaving needs; the batches it committed.
 */
function startWaitingBackfill(runner: ServiceInstance, lockMode: 'rows' | 'ranges', ranges = 1) {
  const batches: { scanned: number; copied: number }[] = [];
  runner.migration.events.on('backfill:batch', ({ scanned, copied }) =>
    batches.push({ scanned, copied }),
  );
  const backfill = track(
    runner.migration.backfill({
      workers: 1,
      ranges,
      batchSize: 50,
      targetBatchMs: 0,
      batchLockTimeoutMs: 0,
      lockMode,
    }),
  );
  return { batches, backfill };
}

/**
 * A copy-on-write update committed before the backfill starts: the first batch's window then
 * holds a copy, so its insert pre-checks the key index (`ON CONFLICT DO NOTHING`), the path a
 * forced interleaving below is about (an insert without it, into a window the new table had no
 * key of, meets a racing write with 23505 and is retried: see 'a batch without an arbiter').
 */
async function copiedBeforeTheBatch(writer: ServiceInstance, teamId: number, personId: string) {
  const row = await writer.repo.updatePerson(teamId, personId, { properties: { before: 'batch' } });
  expect(row?.version).toBe(1);
}

/**
 * Writes the plan (`ranges` of them) and copies nothing: a `backfill()` call aborted before its
 * first batch. A delete then finds its range (and planning does not wait for it).
 */
async function planOnly(runner: ServiceInstance, ranges: number) {
  expect(await runner.migration.backfill({ ranges, signal: AbortSignal.abort() })).toMatchObject({
    planned: true,
    finished: false,
    rowsScanned: 0,
  });
}

/** A delete through `instance` whose transaction stays open until `release.open()`. */
async function deleteHeldOpen(instance: ServiceInstance, teamId: number, personId: string) {
  const deleted = new Gate();
  const release = new Gate();
  const del = track(
    instance.repo.inTransaction(async (tx) => {
      const result = await tx.deletePerson(teamId, personId);
      deleted.open();
      await release.promise;
      return result;
    }),
  );
  await deleted.promise;
  return { del, release };
}

/** Starts a delete and checks it waits (in a statement like `waitsIn`) for backend `batchPid`. */
async function deleteWaitingFor(
  e: MigrationEnv,
  writer: ServiceInstance,
  teamId: number,
  personId: string,
  waitsIn: string,
  batchPid: number,
) {
  const del = track(writer.repo.deletePerson(teamId, personId));
  expect(
    await e.waitForLockWaiters(waitsIn, { giveUp: () => del.settled }),
    `the delete waits in ${waitsIn}`,
  ).toBe(true);
  const [deleteWait] = await e.lockWaiters(waitsIn);
  expect(deleteWait?.blockers, 'the delete waits for the batch').toEqual([batchPid]);
  expect(del.settled).toBe(false);
  return del;
}

/** Every old row has a copy, no copy is older than its old row, untouched copies are identical. */
async function expectNewTableCoversOld(env: MigrationEnv) {
  const old = sql.id(env.schema, 'posthog_person');
  const neu = sql.id(env.schema, 'posthog_person_new');
  const { rows } = await sql<{ missing: number; older: number; differ: number }>`
    SELECT
      (SELECT count(*)::int FROM ${old} o WHERE NOT EXISTS (
        SELECT 1 FROM ${neu} n WHERE n.team_id = o.team_id AND n.id = o.id)) AS missing,
      (SELECT count(*)::int FROM ${old} o JOIN ${neu} n ON n.team_id = o.team_id AND n.id = o.id
        WHERE COALESCE(n.version, 0) < COALESCE(o.version, 0)) AS older,
      (SELECT count(*)::int FROM ${old} o JOIN ${neu} n ON n.team_id = o.team_id AND n.id = o.id
        WHERE COALESCE(n.version, 0) = COALESCE(o.version, 0)
          AND (n.uuid, n.properties, n.created_at, n.is_identified)
            IS DISTINCT FROM (o.uuid, o.properties, o.created_at, o.is_identified)) AS differ`.execute(
    env.admin.db,
  );
  expect(rows[0], 'old rows without a copy / copies older than the old row / bad copies').toEqual({
    missing: 0,
    older: 0,
    differ: 0,
  });
}

/** The persons are in neither table, nor any read path of any instance, nor the distinct ids. */
async function expectGone(
  env: MigrationEnv,
  teamId: number,
  persons: readonly { id: string; distinctIds: readonly string[] }[],
) {
  const ids = persons.map((p) => p.id);
  const distinctIds = persons.flatMap((p) => p.distinctIds);
  expect(await env.storedPersons('old', teamId, ids), 'old table').toEqual([]);
  expect(await env.storedPersons('new', teamId, ids), 'new table').toEqual([]);
  expect(await env.storedDistinctIds(teamId, ids), 'distinct ids').toEqual([]);
  for (const { repo } of env.instances) {
    expect(
      await repo.fetchPersonsByPersonIds(ids.map((personId) => ({ teamId, personId }))),
    ).toEqual([]);
    if (distinctIds.length > 0) {
      expect(
        await repo.fetchPersonsByDistinctIds(
          distinctIds.map((distinctId) => ({ teamId, distinctId })),
        ),
      ).toEqual([]);
    }
    const listed = await repo.listPersons(teamId, { limit: 10_000 });
    expect(listed.persons.filter((p) => ids.includes(p.id))).toEqual([]);
  }
}

describeOnRealServer('backfill racing live writes (real server)', () => {
  let env: MigrationEnv | undefined;

  const extraHandles: DatabaseHandle[] = [];

  /**
   * A service instance's pool whose sessions commit without waiting for the WAL flush
   * (`synchronous_commit=off`): only durability across a server crash differs, not locking or
   * visibility, and the 400 batch commits of a run stop waiting for fsync.
   */
  async function openFastHandle(maxConnections: number): Promise<DatabaseHandle> {
    const url = new URL(realServerUrl() as string);
    url.searchParams.set('options', '-c synchronous_commit=off');
    const handle = await openDatabase(url.toString(), { maxConnections });
    extraHandles.push(handle);
    return handle;
  }

  afterEach(async () => {
    openAllGates();
    await env?.close();
    env = undefined;
    for (const handle of extraHandles.splice(0)) await handle.close();
  });

  describe("forced interleavings on one batch, lockMode: 'rows'", () => {
    it('backfill first: a delete of an old-only person whose row the batch holds FOR SHARE waits for the batch, then removes its copy', async () => {
      env = await MigrationEnv.create('rfb');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 31;
      const ids = await e.seed(teamId, 200, 'f');
      // One range, one worker, 50 keys a batch: the first batch is ids[0..49] in key order.
      const victim = ids[10] as string;
      const blocker = ids[30] as string;
      // After the blocker: the batch has not locked it nor inserted its copy yet.
      const updated = ids[40] as string;
      await copiedBeforeTheBatch(writer, teamId, ids[45] as string);

      const raw = await openRawSession();
      try {
        await raw.query('BEGIN');
        await raw.query(
          `SELECT id FROM ${e.oldTableText} WHERE team_id = $1 AND id = $2 FOR UPDATE`,
          [teamId, blocker],
        );
        const { batches, backfill } = startWaitingBackfill(runner, 'rows');
        // The batch has locked ids[0..29] FOR SHARE (and inserted their copies, uncommitted)
        // and waits for the raw session on ids[30].
        expect(await e.waitForBlockedBy(raw.pid, { giveUp: () => backfill.settled })).toBe(true);
        const [batchWait] = await e.lockWaiters(batchStatement(e));
        expect(batchWait?.blockers).toEqual([raw.pid]);
        const batchPid = batchWait?.pid as number;

        // A copy-on-write update of a row of the batch it has not reached: it commits now, and
        // the batch's later insert of that key must do nothing.
        const updatedRow = await writer.repo.updatePerson(teamId, updated, {
          properties: { during: 'batch' },
        });
        expect(updatedRow?.version).toBe(1);

        // The delete of an old-only row the batch holds waits for the batch.
        const del = await deleteWaitingFor(e, writer, teamId, victim, deleteOfOldRow(e), batchPid);
        expect(batches).toEqual([]);

        await raw.query('ROLLBACK');
        expect(await del.promise).toBe(true);
        expect(await backfill.promise).toMatchObject({ finished: true, rowsScanned: 200 });
        // The first batch copied the victim (48 = 50 minus the rows copied by the updates):
        // the delete really ran after the copy committed, and removed the copy.
        expect(batches[0]).toEqual({ scanned: 50, copied: 48 });
      } finally {
        await raw.end();
      }
      await expectGone(e, teamId, [{ id: victim, distinctIds: ['f-11'] }]);
      const [kept] = await e.storedPersons('new', teamId, [updated]);
      expect(kept).toMatchObject({ version: '1', properties: { during: 'batch', n: 41 } });
      expect(await e.orphanDistinctIds(teamId)).toEqual([]);
      await expectNewTableCoversOld(e);
      for (const { repo } of e.instances) expect(await repo.countPersons(teamId)).toBe(199);
    });

    it('delete first: a batch reaching an old row a delete holds waits for the delete, then skips the gone row', async () => {
      env = await MigrationEnv.create('rdf');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 32;
      const ids = await e.seed(teamId, 200, 'g');
      const victim = ids[10] as string;
      // The plan exists (a call aborted before its first batch): planning would wait for the
      // delete (see 'delete before the plan' below).
      await planOnly(runner, 1);

      // old row, new row (none) and distinct ids deleted, uncommitted
      const { del, release } = await deleteHeldOpen(writer, teamId, victim);
      const { batches, backfill } = startWaitingBackfill(runner, 'rows');
      expect(
        await e.waitForLockWaiters(batchStatement(e), { giveUp: () => backfill.settled }),
        'the batch waits for the delete',
      ).toBe(true);
      expect(batches).toEqual([]);
      expect(backfill.settled).toBe(false);

      release.open();
      expect(await del.promise).toBe(true);
      expect(await backfill.promise).toMatchObject({
        finished: true,
        rowsScanned: 200,
        rowsCopied: 199,
      });
      // The batch covered 50 keys (its snapshot still saw the victim) and copied 49: it waited
      // for the delete, then skipped the gone row; the keyset goes on without a hole.
      expect(batches[0]).toEqual({ scanned: 50, copied: 49 });
      await expectGone(e, teamId, [{ id: victim, distinctIds: ['g-11'] }]);
      expect(await e.orphanDistinctIds(teamId)).toEqual([]);
      await expectNewTableCoversOld(e);
      for (const { repo } of e.instances) expect(await repo.countPersons(teamId)).toBe(199);
    });
  });

  describe("forced interleavings on one batch, lockMode: 'ranges'", () => {
    it('backfill first: a delete in the range of the batch in flight waits for it, then removes its copy; deletes elsewhere, creates and updates do not wait', async () => {
      env = await MigrationEnv.create('ffb');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 34;
      const ids = await e.seed(teamId, 200, 'k');
      // Two ranges (ids[0..99], ids[100..199]), one worker, 50 keys a batch: the first batch
      // is ids[0..49] of range 1.
      const victim = ids[10] as string;
      const blocker = ids[30] as string;
      // After the blocker: the batch has not inserted its copy yet (it holds ids[0..29]'s).
      const updated = ids[40] as string;
      // In range 2, which no batch holds yet.
      const elsewhere = ids[150] as string;
      await copiedBeforeTheBatch(writer, teamId, ids[45] as string);

      const raw = await openRawSession();
      try {
        // An uncommitted copy of ids[30] in the new table: the batch (range row held, copies
        // of ids[0..29] inserted) waits for it when its insert reaches that key.
        await raw.query('BEGIN');
        await raw.query(
          `INSERT INTO ${e.newTableText} SELECT * FROM ${e.oldTableText} WHERE team_id = $1 AND id = $2`,
          [teamId, blocker],
        );
        const { batches, backfill } = startWaitingBackfill(runner, 'ranges', 2);
        expect(await e.waitForBlockedBy(raw.pid, { giveUp: () => backfill.settled })).toBe(true);
        const [batchWait] = await e.lockWaiters(batchStatement(e));
        expect(batchWait?.blockers).toEqual([raw.pid]);
        const batchPid = batchWait?.pid as number;

        // Creates and copy-on-write updates take no range: they commit now, and the batch's
        // later insert of the updated key must do nothing.
        const updatedRow = await writer.repo.updatePerson(teamId, updated, {
          properties: { during: 'batch' },
        });
        expect(updatedRow?.version).toBe(1);
        const created = await writer.repo.createPerson({
          teamId,
          properties: { created: 'during batch' },
          distinctIds: ['k-created'],
        });
        expect(created.status).toBe('created');
        // A delete in the other range does not wait for this batch.
        expect(await writer.repo.deletePerson(teamId, elsewhere)).toBe(true);

        // A delete of a row of the batch's range waits for the batch, at its range row.
        const del = await deleteWaitingFor(
          e,
          writer,
          teamId,
          victim,
          deleteTakingFence(e),
          batchPid,
        );
        expect(batches).toEqual([]);

        await raw.query('ROLLBACK');
        expect(await del.promise).toBe(true);
        expect(await backfill.promise).toMatchObject({ finished: true, rowsScanned: 199 });
        // The first batch copied the victim (48 = 50 minus the rows copied by the updates):
        // the delete really ran after the copy committed, and removed the copy.
        expect(batches[0]).toEqual({ scanned: 50, copied: 48 });
      } finally {
        await raw.end();
      }
      await expectGone(e, teamId, [
        { id: victim, distinctIds: ['k-11'] },
        { id: elsewhere, distinctIds: ['k-151'] },
      ]);
      const [kept] = await e.storedPersons('new', teamId, [updated]);
      expect(kept).toMatchObject({ version: '1', properties: { during: 'batch', n: 41 } });
      expect(await e.orphanDistinctIds(teamId)).toEqual([]);
      await expectNewTableCoversOld(e);
      for (const { repo } of e.instances) expect(await repo.countPersons(teamId)).toBe(199);
    });

    it('delete first: a batch waits at its range row for a delete in flight in its range, then does not see the gone row; deletes do not wait for each other', async () => {
      env = await MigrationEnv.create('fdf');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      const other = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 35;
      const ids = await e.seed(teamId, 200, 'm');
      const victim = ids[10] as string;
      const second = ids[12] as string;
      // The plan exists (a call aborted before its first batch), so the delete finds its range.
      await planOnly(runner, 1);

      // range row held FOR KEY SHARE, old row and distinct ids deleted, uncommitted
      const { del, release } = await deleteHeldOpen(writer, teamId, victim);
      // Another delete in the same range, from another instance, while the first holds the
      // range: not blocked.
      expect(await other.repo.deletePerson(teamId, second)).toBe(true);

      const { batches, backfill } = startWaitingBackfill(runner, 'ranges');
      expect(
        await e.waitForLockWaiters(batchTakingRange(e), { giveUp: () => backfill.settled }),
        'the batch waits at its range row for the delete',
      ).toBe(true);
      const [batchWait] = await e.lockWaiters(batchTakingRange(e));
      expect(batchWait?.blockers, 'the held delete, alone').toHaveLength(1);
      expect(batches).toEqual([]);
      expect(backfill.settled).toBe(false);

      release.open();
      expect(await del.promise).toBe(true);
      expect(await backfill.promise).toMatchObject({
        finished: true,
        rowsScanned: 198,
        rowsCopied: 198,
      });
      // The batch's snapshot followed the delete: 50 live rows, no hole in the keyset.
      expect(batches[0]).toEqual({ scanned: 50, copied: 50 });
      await expectGone(e, teamId, [
        { id: victim, distinctIds: ['m-11'] },
        { id: second, distinctIds: ['m-13'] },
      ]);
      expect(await e.orphanDistinctIds(teamId)).toEqual([]);
      await expectNewTableCoversOld(e);
      for (const { repo } of e.instances) expect(await repo.countPersons(teamId)).toBe(198);
    });

    it.each(['ranges', 'rows'] as const)(
      'delete before the plan (lockMode %s): planning waits at the delete fence for a delete in flight, so no batch copies the row it deleted',
      async (lockMode) => {
        env = await MigrationEnv.create('fpl');
        const e = env;
        const runner = await e.addInstance({ poolSize: 3 });
        const writer = await e.addInstance({ poolSize: 3 });
        await e.control.startDualRead();
        const teamId = 36;
        const ids = await e.seed(teamId, 200, 'p');
        const victim = ids[10] as string;

        // No plan yet, so no range to lock: the delete holds only the delete fence, and has
        // already looked for the new row (none) when the backfill starts.
        const { del, release } = await deleteHeldOpen(writer, teamId, victim);
        const { batches, backfill } = startWaitingBackfill(runner, lockMode);
        const planWaited = await e.waitForLockWaiters(planTakingFence(e), {
          giveUp: () => backfill.settled,
        });
        const planWhileDeleting = await e.control.backfillStatus();

        release.open();
        expect(await del.promise).toBe(true);
        await backfill.promise;
        // (Without the fence, a 'ranges' batch copies the victim while its delete is open.)
        await expectGone(e, teamId, [{ id: victim, distinctIds: ['p-11'] }]);
        await expectNewTableCoversOld(e);
        expect(planWaited, 'planning waits at the delete fence for the delete').toBe(true);
        expect(planWhileDeleting).toBeUndefined();
        expect(await backfill.promise).toMatchObject({
          finished: true,
          rowsScanned: 199,
          rowsCopied: 199,
        });
        expect(batches[0]).toEqual({ scanned: 50, copied: 50 });
      },
    );

    it('a split gives way to a delete in flight anywhere (it moves keys to a new range), and splits once the delete committed', async () => {
      env = await MigrationEnv.create('fsp');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 37;
      const ids = await e.seed(teamId, 400, 's');
      const options = resolveMigrationOptions({
        db: runner.handle,
        schema: e.schema,
        controlSchema: e.controlSchema,
      });
      await planBackfill(runner.handle.db, options, 2, undefined);
      const store = new RangeStore(options, await loadPersonColumns(runner.handle.db, options));
      // Worker w1 holds range 1 (ids[0..199]); an idle w2 would split it.
      expect(await store.claim(runner.handle.db, 'w1', 60_000)).toMatchObject({ rangeId: 1 });
      // A delete in range 2, which the split does not touch, held open.
      const { del, release } = await deleteHeldOpen(writer, teamId, ids[300] as string);
      expect(await store.split(runner.handle.db, 'w2', 60_000, 2)).toBeUndefined();
      release.open();
      expect(await del.promise).toBe(true);
      const split = await store.split(runner.handle.db, 'w2', 60_000, 2);
      expect(split).toMatchObject({ rangeId: 3, after: { team: String(teamId), id: ids[100] } });
    });
  });

  describe('a range held by a transaction left open', () => {
    it('is put off after its batches time out: the worker copies the other range meanwhile, and the put-off range once the delete commits', async () => {
      env = await MigrationEnv.create('fpo');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 38;
      const ids = await e.seed(teamId, 200, 'q');
      const victim = ids[10] as string;
      // Two ranges of 100 keys; the plan exists, so the delete finds (and holds) range 1.
      await planOnly(runner, 2);
      const { del, release } = await deleteHeldOpen(writer, teamId, victim);

      const deferred: { rangeId: number; times: number }[] = [];
      const done: number[] = [];
      let releasedAfter: { deferred: number; done: number[] } | undefined;
      // The delete commits once range 1 was put off and range 2 finished (either order).
      const maybeRelease = () => {
        if (releasedAfter || deferred.length === 0 || !done.includes(2)) return;
        releasedAfter = { deferred: deferred.length, done: [...done] };
        release.open();
      };
      runner.migration.events.on('backfill:range-deferred', ({ rangeId, times }) => {
        deferred.push({ rangeId, times });
        maybeRelease();
      });
      runner.migration.events.on('backfill:range-done', ({ rangeId }) => {
        done.push(rangeId);
        maybeRelease();
      });
      const result = await runner.migration.backfill({
        workers: 1,
        batchSize: 50,
        targetBatchMs: 0,
        batchLockTimeoutMs: 50,
        maxRetries: 3,
        retryBaseMs: 10,
      });
      expect(await del.promise).toBe(true);
      expect(result).toMatchObject({ finished: true, rowsCopied: 199 });
      expect(deferred[0]).toEqual({ rangeId: 1, times: 1 });
      expect(deferred.every((d) => d.rangeId === 1)).toBe(true);
      // Range 2 was finished while the delete still held range 1, which finished last.
      expect(releasedAfter?.done).toEqual([2]);
      expect(done).toEqual([2, 1]);
      await expectGone(e, teamId, [{ id: victim, distinctIds: ['q-11'] }]);
      await expectNewTableCoversOld(e);
      for (const { repo } of e.instances) expect(await repo.countPersons(teamId)).toBe(199);
    });
  });

  describe('a batch without an arbiter (the new table held no key of its window)', () => {
    it('meets a write racing into its window with 23505 and is retried with the arbiter, which the rest of the range keeps: a second race costs no retry', async () => {
      env = await MigrationEnv.create('fna');
      const e = env;
      const runner = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 37;
      const ids = await e.seed(teamId, 200, 'p');
      // One range, 50 keys a batch: ids[30] is in the first batch's window, ids[80] in the second's.
      const racers = [ids[30] as string, ids[80] as string];
      const retries: (string | undefined)[] = [];
      runner.migration.events.on('backfill:retry', ({ sqlState }) => retries.push(sqlState));

      // Two copy-on-write copies (a newer version), each in a transaction held open.
      const sessions = [await openRawSession(), await openRawSession()];
      try {
        for (const [i, raw] of sessions.entries()) {
          await raw.query('BEGIN');
          await raw.query(
            `INSERT INTO ${e.newTableText} SELECT * FROM ${e.oldTableText} WHERE team_id = $1 AND id = $2`,
            [teamId, racers[i]],
          );
          await raw.query(
            `UPDATE ${e.newTableText} SET properties = properties || '{"during": "batch"}',
               version = COALESCE(version, 0) + 1 WHERE team_id = $1 AND id = $2`,
            [teamId, racers[i]],
          );
        }
        const [first, second] = sessions as [RawSession, RawSession];
        const { batches, backfill } = startWaitingBackfill(runner, 'ranges');
        // The first batch's snapshot sees no copy in its window: it inserts without the
        // arbiter, and waits for the uncommitted copy of ids[30] on the key index.
        expect(await e.waitForBlockedBy(first.pid, { giveUp: () => backfill.settled })).toBe(true);
        await first.query('COMMIT');
        // Its insert fails (23505) and rolls back; the retry pre-checks the key index and
        // skips the committed copy. The second batch pre-checks too (the range's rule since
        // the failure): it waits for the copy of ids[80], then skips it without an error.
        expect(await e.waitForBlockedBy(second.pid, { giveUp: () => backfill.settled })).toBe(true);
        expect(retries).toEqual(['23505']);
        expect(batches).toEqual([{ scanned: 50, copied: 49 }]);
        await second.query('COMMIT');
        expect(await backfill.promise).toMatchObject({
          finished: true,
          rowsScanned: 200,
          rowsCopied: 198,
        });
        expect(retries, 'one retry in all').toEqual(['23505']);
        expect(batches.slice(0, 2)).toEqual([
          { scanned: 50, copied: 49 },
          { scanned: 50, copied: 49 },
        ]);
      } finally {
        for (const raw of sessions) await raw.end();
      }
      // The racing copies were not overwritten, and every other old row was copied.
      const kept = await e.storedPersons('new', teamId, racers);
      expect(kept.map((row) => [row.version, row.properties.during])).toEqual([
        ['1', 'batch'],
        ['1', 'batch'],
      ]);
      await expectNewTableCoversOld(e);
    });
  });

  // Found by this test (fixed): in 'rows' mode a batch holds every old row of its batch
  // FOR SHARE, then inserts the copies; a merge (moveDistinctIds + deletePerson in one
  // transaction) copies its target into the new table, then deletes its source's old row. When
  // both persons are in one batch, the batch waits for the merge's uncommitted copy of the
  // target and the merge waits for the batch's FOR SHARE on the source: a deadlock, and when
  // the merge waited first the server aborted the merge (40P01) after deadlock_timeout. In
  // 'ranges' mode the merge waits at the range row instead, the same cycle. The backfill is always
  // the side that yields: a batch lock_timeout below deadlock_timeout, retried.
  it.each(['rows', 'ranges'] as const)(
    'a merge racing a batch (lockMode: %s) that holds both persons is never the deadlock victim: the batch gives way',
    async (lockMode) => {
      // The merge is the victim when it waited first and the batch closed the cycle within
      // deadlock_timeout (1 s); on a badly overloaded machine the batch may close it later and
      // be the victim itself (the merge then succeeds), so the scenario is tried up to 3 times.
      const outcomes: string[] = [];
      for (let attempt = 0; attempt < 3 && !outcomes.includes('40P01'); attempt++) {
        outcomes.push(await mergeRacingBatch(lockMode));
        await env?.close();
        env = undefined;
      }
      expect(outcomes).toEqual(outcomes.map(() => 'merged'));
    },
  );

  /** Source and target of a merge both in the batch the backfill holds; the merge's outcome. */
  async function mergeRacingBatch(lockMode: 'rows' | 'ranges'): Promise<string> {
    env = await MigrationEnv.create('rdl');
    const e = env;
    const runner = await e.addInstance({ poolSize: 3 });
    const writer = await e.addInstance({ poolSize: 3 });
    await e.control.startDualRead();
    const teamId = 33;
    const ids = await e.seed(teamId, 200, 'h');
    const [source, target] = [ids[5], ids[8]] as [string, string];
    const raw = await openRawSession();
    try {
      await raw.query('BEGIN');
      if (lockMode === 'rows') {
        // The batch locks (and copies) ids[0..5] FOR SHARE, the source among them, then waits
        // for this lock on ids[6], before reaching the target.
        await raw.query(
          `SELECT id FROM ${e.oldTableText} WHERE team_id = $1 AND id = $2 FOR UPDATE`,
          [teamId, ids[6]],
        );
      } else {
        // The batch holds its range, inserts ids[0..1], then waits for this uncommitted copy
        // of ids[2], before reaching the source and the target.
        await raw.query(
          `INSERT INTO ${e.newTableText} SELECT * FROM ${e.oldTableText} WHERE team_id = $1 AND id = $2`,
          [teamId, ids[2]],
        );
      }
      const backfill = track(
        runner.migration.backfill({
          workers: 1,
          ranges: 1,
          batchSize: 50,
          targetBatchMs: 0,
          lockMode,
        }),
      );
      expect(await e.waitForBlockedBy(raw.pid, { giveUp: () => backfill.settled })).toBe(true);
      const merge = track(
        writer.repo.inTransaction(async (tx) => {
          await tx.moveDistinctIds(teamId, source, target); // copies the target (uncommitted)
          return tx.deletePerson(teamId, source); // waits for the batch (FOR SHARE or range)
        }),
      );
      const mergeWaits = lockMode === 'rows' ? deleteOfOldRow(e) : deleteTakingFence(e);
      expect(await e.waitForLockWaiters(mergeWaits, { giveUp: () => merge.settled })).toBe(true);
      // The batch goes on, reaches the target's copy and waits for the merge: a cycle.
      await raw.query('ROLLBACK');
      const outcome = await merge.promise.then(
        () => 'merged',
        (error: unknown) => (error as { sqlState?: string }).sqlState ?? String(error),
      );
      expect(await backfill.promise).toMatchObject({ finished: true });
      return outcome;
    } finally {
      await raw.end();
    }
  }

  describe.each(
    raceSeeds().flatMap((seed) =>
      (['ranges', 'rows'] as const).map((mode) => [seed, mode] as const),
    ),
  )('randomized writes during a 3-worker backfill, seed %i, lockMode %s', (seed, lockMode) => {
    it('loses no write, resurrects nobody, never lowers a version, copies every surviving old row', {
      timeout: 120_000,
    }, async () => {
      await randomizedRun(seed, lockMode);
    });
  });

  /** A person as the test's model expects it. */
  interface Expected {
    readonly teamId: number;
    readonly id: string;
    readonly initialVersion: number;
    updates: number;
    readonly properties: Record<string, unknown>;
    readonly distinctIds: Set<string>;
    /** Position in key order of a seeded person; -1 for a person created during the run. */
    readonly index: number;
    /** Written to during the run (or created): checked through every instance. */
    touched: boolean;
    alive: boolean;
    busy: boolean;
  }

  async function randomizedRun(seed: number, lockMode: 'ranges' | 'rows') {
    env = await MigrationEnv.create('rnd');
    const e = env;
    const runner = await e.addInstance({ handle: await openFastHandle(4) });
    const writers = [
      await e.addInstance({ handle: await openFastHandle(3) }),
      await e.addInstance({ handle: await openFastHandle(3) }),
      await e.addInstance({ handle: await openFastHandle(3) }),
    ];
    await e.control.startDualRead();

    // Several teams of uneven sizes (20,000 old persons), key order = (team_id, id).
    const teams: [number, number][] = [
      [41, 8_000],
      [42, 6_000],
      [43, 3_500],
      [44, 2_000],
      [45, 500],
    ];
    const persons = new Map<string, Expected>();
    const keyOrder: Expected[] = [];
    for (const [teamId, count] of teams) {
      const ids = await e.seed(teamId, count, `s${teamId}`);
      // Distinct id n got the n-th id of the sequence: key order is the order of n.
      expect(ids.every((id, i) => i === 0 || BigInt(id) > BigInt(ids[i - 1] as string))).toBe(true);
      for (const [i, id] of ids.entries()) {
        const p: Expected = {
          teamId,
          id,
          initialVersion: 0,
          updates: 0,
          properties: { n: i + 1, plan: 'free' },
          distinctIds: new Set([`s${teamId}-${i + 1}`]),
          index: keyOrder.length,
          touched: false,
          alive: true,
          busy: false,
        };
        persons.set(id, p);
        keyOrder.push(p);
      }
    }
    const teamIds = teams.map(([t]) => t);
    const createdDuringRun: Expected[] = [];

    // Targets are picked just ahead of the running ranges' cursors half of the time, so writes
    // land on keys batches are about to lock.
    let cursors: number[] = [];
    const indexAfter = (team: string, id: string) => {
      let lo = 0;
      let hi = keyOrder.length;
      const t = Number(team);
      const k = BigInt(id);
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const p = keyOrder[mid] as Expected;
        if (p.teamId < t || (p.teamId === t && BigInt(p.id) <= k)) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };

    const failures: string[] = [];
    let deadlocks = 0;
    let backfillDone = false;
    const counts = { create: 0, update: 0, delete: 0, add: 0, merge: 0 };

    const usable = (p: Expected | undefined) => (p?.alive && !p.busy ? p : undefined);
    const pickPerson = (random: () => number): Expected | undefined => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const roll = random();
        const p =
          cursors.length > 0 && roll < 0.5
            ? keyOrder[pick(cursors, random) + Math.floor(random() * 120)]
            : roll < 0.6 && createdDuringRun.length > 0
              ? pick(createdDuringRun, random)
              : keyOrder[Math.floor(random() * keyOrder.length)];
        if (usable(p)) return p;
      }
      return undefined;
    };
    /** A merge partner of the same team: a key close to `p` (same batch, often), or any. */
    const pickPartner = (random: () => number, p: Expected): Expected | undefined => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const q =
          p.index >= 0 && random() < 0.7
            ? keyOrder[p.index + Math.floor(random() * 61) - 30]
            : pick(keyOrder, random);
        if (q !== p && q?.teamId === p.teamId && usable(q)) return q;
      }
      return undefined;
    };

    const isDeadlock = (error: unknown) =>
      (error as { sqlState?: string }).sqlState === '40P01' ||
      (error as { code?: string }).code === '40P01';

    async function writerLoop(index: number, instance: ServiceInstance) {
      const random = seededRandom(seed * 1_000 + index);
      let n = 0;
      while (!backfillDone) {
        n++;
        const roll = random();
        const op =
          roll < 0.15
            ? 'create'
            : roll < 0.5
              ? 'update'
              : roll < 0.65
                ? 'delete'
                : roll < 0.8
                  ? 'add'
                  : 'merge';
        const tag = `w${index}-${n}`;
        try {
          if (op === 'create') {
            const teamId = pick(teamIds, random);
            const distinctIds = [`c-${tag}`, ...(random() < 0.5 ? [`c2-${tag}`] : [])];
            const created = await instance.repo.createPerson({
              teamId,
              distinctIds,
              properties: { created: tag },
            });
            if (created.status !== 'created') {
              failures.push(`${tag}: create ${created.status}`);
              continue;
            }
            counts.create++;
            const person: Expected = {
              teamId,
              id: created.person.id,
              initialVersion: created.person.version,
              updates: 0,
              properties: { created: tag },
              distinctIds: new Set(distinctIds),
              index: -1,
              touched: true,
              alive: true,
              busy: false,
            };
            persons.set(person.id, person);
            createdDuringRun.push(person);
            continue;
          }
          const p = pickPerson(random);
          if (!p) continue;
          if (op === 'merge') {
            const q = pickPartner(random, p);
            if (!q) continue;
            const [source, target] = random() < 0.5 ? [p, q] : [q, p];
            source.busy = true;
            target.busy = true;
            try {
              const outcome = await instance.repo.inTransaction(async (tx) => {
                const moved = await tx.moveDistinctIds(source.teamId, source.id, target.id);
                const deleted = await tx.deletePerson(source.teamId, source.id);
                return { moved, deleted };
              });
              if (outcome.moved.status !== 'moved' || !outcome.deleted) {
                failures.push(`${tag}: merge ${JSON.stringify(outcome)}`);
                continue;
              }
              const movedIds = [...outcome.moved.distinctIds].sort();
              const expectedMoved = [...source.distinctIds].sort();
              if (JSON.stringify(movedIds) !== JSON.stringify(expectedMoved)) {
                failures.push(`${tag}: merge moved ${movedIds} not ${expectedMoved}`);
              }
              for (const d of source.distinctIds) target.distinctIds.add(d);
              target.touched = true;
              source.distinctIds.clear();
              source.alive = false;
              counts.merge++;
            } finally {
              source.busy = false;
              target.busy = false;
            }
            continue;
          }
          p.busy = true;
          try {
            if (op === 'update') {
              const key = `u_${tag}`;
              const row: PersonRow | undefined = await instance.repo.updatePerson(p.teamId, p.id, {
                properties: { [key]: n },
              });
              if (!row) {
                failures.push(`${tag}: update of live person ${p.id} found nothing`);
                continue;
              }
              p.updates++;
              p.touched = true;
              p.properties[key] = n;
              if (row.version !== p.initialVersion + p.updates) {
                failures.push(
                  `${tag}: update returned version ${row.version}, expected ${p.initialVersion + p.updates}`,
                );
              }
              counts.update++;
            } else if (op === 'delete') {
              const deleted = await instance.repo.deletePerson(p.teamId, p.id);
              if (!deleted) failures.push(`${tag}: delete of live person ${p.id} deleted nothing`);
              p.alive = false;
              counts.delete++;
            } else {
              const distinctId = `a-${tag}`;
              const added = await instance.repo.addDistinctId(p.teamId, p.id, distinctId);
              if (added.status !== 'added') {
                failures.push(`${tag}: addDistinctId ${added.status}`);
                continue;
              }
              p.distinctIds.add(distinctId);
              p.touched = true;
              counts.add++;
            }
          } finally {
            p.busy = false;
          }
        } catch (error) {
          // A deadlock aborts the whole transaction: nothing of it happened (checked at the end,
          // since the model was not changed). Anything else is a failure.
          if (isDeadlock(error)) deadlocks++;
          else failures.push(`${tag}: ${op} threw ${(error as Error).message.slice(0, 300)}`);
        }
      }
    }

    const poller = (async () => {
      while (!backfillDone) {
        const running = await runningCursors(e);
        cursors = running
          .filter((r) => r.cursor_team !== null && r.cursor_id !== null)
          .map((r) => indexAfter(r.cursor_team as string, r.cursor_id as string));
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();

    const loops = writers.flatMap((w, i) => [writerLoop(2 * i, w), writerLoop(2 * i + 1, w)]);
    let batches = 0;
    runner.migration.events.on('backfill:batch', () => {
      batches++;
    });
    const retries: number[] = [];
    runner.migration.events.on('backfill:retry', ({ attempt }) => retries.push(attempt));
    let backfillResult: Awaited<ReturnType<typeof runner.migration.backfill>>;
    try {
      backfillResult = await runner.migration.backfill({
        workers: 3,
        batchSize: 50,
        targetBatchMs: 0,
        lockMode,
      });
    } finally {
      backfillDone = true;
      await Promise.all(loops);
      await poller;
    }
    const context = `seed ${seed}, lockMode ${lockMode}: ${JSON.stringify({ counts, deadlocks, batches, retries: retries.length, backfillMs: Math.round(backfillResult.ms) })}`;
    expect(failures, context).toEqual([]);
    expect(backfillResult, context).toMatchObject({ finished: true, aborted: false });
    // The writes really overlapped the backfill.
    expect(counts.update + counts.delete + counts.merge, context).toBeGreaterThan(50);

    // --- storage: every old row copied, no copy older than its old row, no orphan distinct id.
    await expectNewTableCoversOld(e);
    for (const teamId of teamIds) {
      expect(await e.orphanDistinctIds(teamId), `${context}: orphans of team ${teamId}`).toEqual(
        [],
      );
    }
    // The whole new table and distinct-ids table against the model: live persons all there at
    // the version their successful updates give, with every property they set and exactly
    // their distinct ids; dead (deleted or merged away) persons nowhere.
    const alive = [...persons.values()].filter((p) => p.alive);
    const dead = [...persons.values()].filter((p) => !p.alive);
    const stored = await sql<{
      id: string;
      in_old: boolean;
      in_new: boolean;
      version: string | null;
      properties: Record<string, unknown> | null;
    }>`
      SELECT COALESCE(n.id, o.id)::text AS id, o.id IS NOT NULL AS in_old, n.id IS NOT NULL AS in_new,
        COALESCE(n.version, 0)::text AS version, n.properties
      FROM ${sql.id(e.schema, 'posthog_person_new')} AS n
      FULL JOIN ${sql.id(e.schema, 'posthog_person')} AS o ON o.team_id = n.team_id AND o.id = n.id`.execute(
      e.admin.db,
    );
    const storedIds = await sql<{ person_id: string; distinct_id: string }>`
      SELECT person_id::text, distinct_id FROM ${sql.id(e.schema, 'posthog_persondistinctid')}`.execute(
      e.admin.db,
    );
    const rowsById = new Map(stored.rows.map((r) => [r.id, r]));
    const idsById = new Map<string, string[]>();
    for (const r of storedIds.rows) {
      idsById.set(r.person_id, [...(idsById.get(r.person_id) ?? []), r.distinct_id]);
    }
    const wrongStored: string[] = [];
    for (const p of alive) {
      const row = rowsById.get(p.id);
      if (!row?.in_new) {
        wrongStored.push(`${p.id} not in the new table`);
        continue;
      }
      if (Number(row.version) !== p.initialVersion + p.updates)
        wrongStored.push(
          `${p.id} version ${row.version}, expected ${p.initialVersion + p.updates}`,
        );
      for (const [k, v] of Object.entries(p.properties)) {
        if (row.properties?.[k] !== v) wrongStored.push(`${p.id} lost property ${k}`);
      }
      const got = (idsById.get(p.id) ?? []).sort().join(',');
      const want = [...p.distinctIds].sort().join(',');
      if (got !== want) wrongStored.push(`${p.id} distinct ids [${got}], expected [${want}]`);
    }
    for (const p of dead) {
      if (rowsById.has(p.id))
        wrongStored.push(`dead ${p.id} still stored (${JSON.stringify(rowsById.get(p.id))})`);
      if (idsById.has(p.id)) wrongStored.push(`dead ${p.id} still has distinct ids`);
    }
    expect(wrongStored.slice(0, 10), context).toEqual([]);
    expect(stored.rows.length, context).toBe(alive.length);

    // --- reads, through every instance: the persons written to (and a sample of the others),
    // by person id and by distinct id, their distinct ids, the counts; dead persons unreadable.
    const random = seededRandom(seed);
    const sample = (p: Expected) => p.touched || random() < 0.01;
    for (const [i, instance] of e.instances.entries()) {
      const wrong: string[] = [];
      for (const teamId of teamIds) {
        const expected = alive.filter((p) => p.teamId === teamId);
        const checked = expected.filter(sample);
        const where = `instance ${i}, team ${teamId}`;
        const count = await instance.repo.countPersons(teamId);
        if (count !== expected.length)
          wrong.push(`${where}: count ${count}, expected ${expected.length}`);
        const keys = checked.map((p) => ({ teamId, personId: p.id }));
        const got = new Map(
          (await instance.repo.fetchPersonsByPersonIds(keys)).map((r) => [r.id, r]),
        );
        const idsOf = new Map<string, string[]>();
        for (const d of await instance.repo.fetchDistinctIdsForPersons(keys)) {
          idsOf.set(d.personId, [...(idsOf.get(d.personId) ?? []), d.distinctId]);
        }
        for (const p of checked) {
          const row = got.get(p.id);
          if (!row) {
            wrong.push(`${where}: ${p.id} not readable`);
            continue;
          }
          if (row.version !== p.initialVersion + p.updates)
            wrong.push(
              `${where}: ${p.id} read at version ${row.version}, expected ${p.initialVersion + p.updates}`,
            );
          for (const [k, v] of Object.entries(p.properties)) {
            if (row.properties[k] !== v) wrong.push(`${where}: ${p.id} read without property ${k}`);
          }
          const ids = (idsOf.get(p.id) ?? []).sort().join(',');
          const want = [...p.distinctIds].sort().join(',');
          if (ids !== want)
            wrong.push(`${where}: ${p.id} distinct ids [${ids}], expected [${want}]`);
        }
        const pairs = checked.flatMap((p) =>
          [...p.distinctIds].map((distinctId) => ({ teamId, distinctId, id: p.id })),
        );
        const led = new Map(
          (await instance.repo.fetchPersonsByDistinctIds(pairs)).map((r) => [r.distinct_id, r.id]),
        );
        for (const pair of pairs) {
          if (led.get(pair.distinctId) !== pair.id)
            wrong.push(
              `${where}: ${pair.distinctId} leads to ${led.get(pair.distinctId)}, not ${pair.id}`,
            );
        }
        const deadHere = dead.filter((p) => p.teamId === teamId);
        if (deadHere.length > 0) {
          const resurrected = await instance.repo.fetchPersonsByPersonIds(
            deadHere.map((p) => ({ teamId, personId: p.id })),
          );
          for (const r of resurrected) wrong.push(`${where}: dead ${r.id} readable`);
        }
      }
      // Point reads of persons created during the run, by each of their distinct ids.
      for (const p of createdDuringRun.filter((c) => c.alive).slice(0, 10)) {
        for (const distinctId of p.distinctIds) {
          const row = await instance.repo.fetchPerson(p.teamId, distinctId);
          if (row?.id !== p.id)
            wrong.push(`instance ${i}: ${distinctId} -> ${row?.id}, not ${p.id}`);
        }
      }
      expect(wrong.slice(0, 10), context).toEqual([]);
    }
    console.info(context);
  }
});

/**
 * The backfill racing deletes in `lockMode: 'ranges'`, the default (docs/correctness.md
 * `range-fence` and `delete-fence`): a batch holds its range row `FOR UPDATE` until it commits, a
 * delete takes the row of the range still to copy its key `FOR KEY SHARE` first, and planning and
 * splits take the delete fence `SHARE`. Forced interleavings on one batch, each side holding its
 * locks until the other is seen waiting in pg_stat_activity: the batch first, the delete first, a
 * delete before the plan (in both modes) and a split meeting a delete in flight.
 */
import { describe, expect, it } from 'vitest';
import { planBackfill } from '../../../src/backfill/backfill-plan.js';
import { RangeStore } from '../../../src/backfill/range-store.js';
import { resolveMigrationOptions } from '../../../src/options/migration-options.js';
import { loadPersonColumns } from '../../../src/persons/person-columns.js';
import { openRawSession } from '../../support/concurrency.js';
import { describeOnRealServer } from '../../support/test-database.js';
import {
  batchStatement,
  batchTakingRange,
  copiedBeforeTheBatch,
  deleteHeldOpen,
  deleteTakingFence,
  deleteWaitingFor,
  expectGone,
  expectNewTableCoversOld,
  planOnly,
  planTakingFence,
  raceEnvs,
  startWaitingBackfill,
} from './race-support.js';

describeOnRealServer('backfill racing live writes (real server)', () => {
  const envs = raceEnvs();

  describe("forced interleavings on one batch, lockMode: 'ranges'", () => {
    it('backfill first: a delete in the range of the batch in flight waits for it, then removes its copy; deletes elsewhere, creates and updates do not wait', async () => {
      const e = await envs.create('ffb');
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
      const e = await envs.create('fdf');
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
        const e = await envs.create('fpl');
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
      const e = await envs.create('fsp');
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
});

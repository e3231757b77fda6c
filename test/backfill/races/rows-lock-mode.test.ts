/**
 * The backfill racing a delete in `lockMode: 'rows'` (docs/correctness.md `copy-excludes-delete`,
 * row locks): a batch reads its old rows `FOR SHARE` as it inserts their copies. Two forced
 * interleavings on one batch, each side holding its locks until the other is seen waiting in
 * pg_stat_activity: the batch first (the delete waits for it, then removes the copy), the delete
 * first (the batch waits for it, then skips the gone row).
 */
import { describe, expect, it } from 'vitest';
import { openRawSession } from '../../support/concurrency.js';
import { describeOnRealServer } from '../../support/test-database.js';
import {
  batchStatement,
  copiedBeforeTheBatch,
  deleteHeldOpen,
  deleteOfOldRow,
  deleteWaitingFor,
  expectGone,
  expectNewTableCoversOld,
  planOnly,
  raceEnvs,
  startWaitingBackfill,
} from './race-support.js';

describeOnRealServer('backfill racing live writes (real server)', () => {
  const envs = raceEnvs();

  describe("forced interleavings on one batch, lockMode: 'rows'", () => {
    it('backfill first: a delete of an old-only person whose row the batch holds FOR SHARE waits for the batch, then removes its copy', async () => {
      const e = await envs.create('rfb');
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
      const e = await envs.create('rdf');
      const runner = await e.addInstance({ poolSize: 3 });
      const writer = await e.addInstance({ poolSize: 3 });
      await e.control.startDualRead();
      const teamId = 32;
      const ids = await e.seed(teamId, 200, 'g');
      const victim = ids[10] as string;
      // The plan exists (a call aborted before its first batch): planning would wait for the
      // delete (see 'delete before the plan' in ranges-lock-mode.test.ts).
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
});

/**
 * A range held by a delete left open (docs/correctness.md `range-fence`): its batches time out
 * (`batchLockTimeoutMs`) and the range is put off while the worker copies the other one, then
 * copied once the delete commits.
 */
import { describe, expect, it } from 'vitest';
import { describeOnRealServer } from '../../support/test-database.js';
import {
  deleteHeldOpen,
  expectGone,
  expectNewTableCoversOld,
  planOnly,
  raceEnvs,
} from './race-support.js';

describeOnRealServer('backfill racing live writes (real server)', () => {
  const envs = raceEnvs();

  describe('a range held by a transaction left open', () => {
    it('is put off after its batches time out: the worker copies the other range meanwhile, and the put-off range once the delete commits', async () => {
      const e = await envs.create('fpo');
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
});

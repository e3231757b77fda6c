/**
 * A merge racing a batch that holds both its persons, in both lock modes (docs/correctness.md
 * `copy-excludes-delete`, `range-fence`): the merge is never the deadlock victim, the batch
 * (whose lock_timeout is below deadlock_timeout) gives way and is retried.
 */
import { expect, it } from 'vitest';
import { openRawSession, track } from '../../support/concurrency.js';
import { describeOnRealServer } from '../../support/test-database.js';
import { deleteOfOldRow, deleteTakingFence, raceEnvs } from './race-support.js';

describeOnRealServer('backfill racing live writes (real server)', () => {
  const envs = raceEnvs();

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
        await envs.close();
      }
      expect(outcomes).toEqual(outcomes.map(() => 'merged'));
    },
  );

  /** Source and target of a merge both in the batch the backfill holds; the merge's outcome. */
  async function mergeRacingBatch(lockMode: 'rows' | 'ranges'): Promise<string> {
    const e = await envs.create('rdl');
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
});

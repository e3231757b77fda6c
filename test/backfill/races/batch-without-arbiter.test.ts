/**
 * A batch whose window the new table held no key of inserts without an arbiter
 * (docs/correctness.md `copy-never-overwrites`): a copy racing into its window fails it with
 * 23505, never overwritten; the batch is retried with the arbiter, which the rest of its range
 * keeps.
 */
import { describe, expect, it } from 'vitest';
import { openRawSession, type RawSession } from '../../support/concurrency.js';
import { describeOnRealServer } from '../../support/test-database.js';
import { expectNewTableCoversOld, raceEnvs, startWaitingBackfill } from './race-support.js';

describeOnRealServer('backfill racing live writes (real server)', () => {
  const envs = raceEnvs();

  describe('a batch without an arbiter (the new table held no key of its window)', () => {
    it('meets a write racing into its window with 23505 and is retried with the arbiter, which the rest of the range keeps: a second race costs no retry', async () => {
      const e = await envs.create('fna');
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
});

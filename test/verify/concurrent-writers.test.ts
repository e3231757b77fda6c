/**
 * A verification running while services write reports no false mismatch (real server): after
 * a backfill, two service instances create, update, delete, merge persons and add distinct ids
 * through the repository without pause, while verify() runs again and again with both
 * methods. The join check reads each chunk in one snapshot; the checksum check reads the two
 * tables in separate statements (so keys written in between differ for a moment) and its
 * re-checks must settle them. Every run must be clean, and the writes must really have
 * happened during the runs.
 */
import { sql } from 'kysely';
import { afterEach, expect, it } from 'vitest';
import type { VerificationResult, VerifyOptions } from '../../src/index.js';
import {
  MigrationEnv,
  pick,
  type ServiceInstance,
  seededRandom,
  testSeed,
} from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';
import { byKey, key } from './verify-support.js';

interface Person {
  readonly teamId: number;
  readonly id: string;
  /** Seeded into the old table before the migration (else created through the repository). */
  readonly seeded: boolean;
  busy: boolean;
}

describeOnRealServer('verify() while services write (real server)', () => {
  let env: MigrationEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('every run of both methods is clean while persons are created, updated, deleted and merged', {
    timeout: 60_000,
  }, async () => {
    env = await MigrationEnv.create('vcw');
    const e = env;
    const verifier = await e.addInstance({ poolSize: 4 });
    const writers = [await e.addInstance({ poolSize: 3 }), await e.addInstance({ poolSize: 3 })];
    const teams: [number, number][] = [
      [81, 6_000],
      [82, 3_000],
      [83, 1_000],
    ];
    const alive: Person[] = [];
    for (const [teamId, count] of teams) {
      for (const id of await e.seed(teamId, count, `s${teamId}`)) {
        alive.push({ teamId, id, seeded: true, busy: false });
      }
    }
    await e.control.startDualRead();
    await verifier.migration.backfill();

    const seed = testSeed();
    const counts = { create: 0, update: 0, delete: 0, merge: 0, add: 0, deadlock: 0 };
    const writes = () => counts.create + counts.update + counts.delete + counts.merge + counts.add;
    const failures: string[] = [];
    let stop = false;

    const pickFree = (random: () => number, teamId?: number): Person | undefined => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const p = pick(alive, random);
        if (!p.busy && (teamId === undefined || p.teamId === teamId)) return p;
      }
      return undefined;
    };
    let seededGone = 0;
    const remove = (p: Person) => {
      if (p.seeded) seededGone++;
      const i = alive.indexOf(p);
      if (i >= 0) alive.splice(i, 1);
    };

    async function writerLoop(index: number, instance: ServiceInstance) {
      const random = seededRandom(seed * 100 + index);
      let n = 0;
      while (!stop) {
        n++;
        const roll = random();
        const tag = `w${index}-${n}`;
        const p = pickFree(random);
        if (!p) continue;
        p.busy = true;
        let q: Person | undefined;
        try {
          if (roll < 0.15) {
            const teamId = pick(teams, random)[0];
            const created = await instance.repo.createPerson({
              teamId,
              distinctIds: [`c-${tag}`],
              properties: { created: tag },
            });
            if (created.status !== 'created') failures.push(`${tag}: create ${created.status}`);
            else {
              counts.create++;
              alive.push({ teamId, id: created.person.id, seeded: false, busy: false });
            }
          } else if (roll < 0.6) {
            const row = await instance.repo.updatePerson(p.teamId, p.id, {
              properties: { [`u_${index}`]: n },
            });
            if (!row) failures.push(`${tag}: update of ${p.id} found nothing`);
            else counts.update++;
          } else if (roll < 0.72) {
            if (!(await instance.repo.deletePerson(p.teamId, p.id))) {
              failures.push(`${tag}: delete of ${p.id} deleted nothing`);
            }
            remove(p);
            counts.delete++;
          } else if (roll < 0.87) {
            q = pickFree(random, p.teamId);
            if (!q || q === p) continue;
            q.busy = true;
            const target = q;
            const outcome = await instance.repo.inTransaction(async (tx) => {
              const moved = await tx.moveDistinctIds(p.teamId, p.id, target.id);
              const deleted = await tx.deletePerson(p.teamId, p.id);
              return { moved: moved.status, deleted };
            });
            if (outcome.moved !== 'moved' || !outcome.deleted) {
              failures.push(`${tag}: merge ${JSON.stringify(outcome)}`);
            }
            remove(p);
            counts.merge++;
          } else {
            const added = await instance.repo.addDistinctId(p.teamId, p.id, `a-${tag}`);
            if (added.status !== 'added') failures.push(`${tag}: addDistinctId ${added.status}`);
            else counts.add++;
          }
        } catch (error) {
          // Two writers' transactions can deadlock each other (nothing to do with verify):
          // the transaction is rolled back, so the person is as it was.
          if ((error as { sqlState?: string }).sqlState === '40P01') counts.deadlock++;
          else failures.push(`${tag}: ${(error as Error).message.slice(0, 200)}`);
        } finally {
          p.busy = false;
          if (q) q.busy = false;
        }
      }
    }

    const loops = writers.flatMap((w, i) => [writerLoop(2 * i, w), writerLoop(2 * i + 1, w)]);
    const runs: { method: string; writes: number; rechecks: number; result: VerificationResult }[] =
      [];
    const plans: VerifyOptions[] = [
      { method: 'join', chunkRows: 1_000, settleMs: 50 },
      { method: 'checksum', chunkRows: 2_500, leafRows: 400, fanout: 8, settleMs: 50 },
    ];
    try {
      while (writes() < 20) await new Promise((resolve) => setTimeout(resolve, 10));
      for (let round = 0; round < 3; round++) {
        for (const plan of plans) {
          const before = writes();
          const result = await verifier.migration.verify(plan);
          runs.push({
            method: plan.method as string,
            writes: writes() - before,
            rechecks: result.rechecks,
            result,
          });
        }
      }
    } finally {
      stop = true;
      await Promise.all(loops);
    }
    const context = `seed ${seed}: ${JSON.stringify(counts)}; runs ${JSON.stringify(
      runs.map((r) => ({ method: r.method, writes: r.writes, rechecks: r.rechecks })),
    )}`;
    expect(failures, context).toEqual([]);
    for (const [i, run] of runs.entries()) {
      expect(run.result.keys, `run ${i} (${run.method}): ${context}`).toEqual([]);
      expect(run.result.clean, `run ${i} (${run.method}): ${context}`).toBe(true);
      // The writes really happened while this run was checking.
      expect(run.writes, `run ${i} (${run.method}): ${context}`).toBeGreaterThan(0);
    }
    expect(counts.update, context).toBeGreaterThan(20);
    expect(counts.create + counts.delete + counts.merge, context).toBeGreaterThan(20);

    // Once the writes stopped: still clean, and the check sees what the writers did.
    const final = await verifier.migration.verify({ settleMs: 0 });
    expect(final.clean, context).toBe(true);
    expect(final.counts.newer_in_new ?? 0, context).toBeGreaterThan(0);
    expect(final.counts.created_in_new ?? 0, context).toBeGreaterThan(0);
    expect(final.oldRows, context).toBe(10_000 - seededGone);
    console.info(`verify under writes: ${context}`);
  });
  it.each(['join', 'checksum'] as const)(
    'keys that change after the scan are re-checked once they settle: fixed ones dropped, others under their new class (%s)',
    async (method) => {
      env = await MigrationEnv.create('vst');
      const e = env;
      const verifier = await e.addInstance({ poolSize: 4 });
      const teamId = 85;
      const ids = await e.seed(teamId, 500, 's');
      await e.control.startDualRead();
      await verifier.migration.backfill();
      const [fixed, changed, stays] = [ids[100], ids[200], ids[300]] as [string, string, string];
      const newTable = sql.id(e.schema, 'posthog_person_new');
      const oldTable = sql.id(e.schema, 'posthog_person');
      await sql`DELETE FROM ${newTable} WHERE id = ANY(${[fixed, changed, stays]}::bigint[])`.execute(
        e.admin.db,
      );
      // As soon as the scan is over (all three missing_in_new), one key is copied as it is and
      // one is copied with other content, while verify() waits for the keys to settle.
      let writes: Promise<unknown> | undefined;
      verifier.migration.events.on('verify:chunk', ({ chunk, chunks, mismatches }) => {
        if (chunk !== chunks || writes) return;
        expect(mismatches).toBe(3);
        writes = (async () => {
          await sql`INSERT INTO ${newTable} SELECT * FROM ${oldTable} WHERE id = ${fixed}::bigint`.execute(
            e.admin.db,
          );
          await sql`INSERT INTO ${newTable} SELECT * FROM ${oldTable} WHERE id = ${changed}::bigint`.execute(
            e.admin.db,
          );
          await sql`UPDATE ${newTable} SET properties = '{"other":true}' WHERE id = ${changed}::bigint`.execute(
            e.admin.db,
          );
        })();
      });
      const result = await verifier.migration.verify({
        method,
        settleMs: 300,
        leafRows: 50,
        fanout: 4,
      });
      await writes;
      expect(writes).toBeDefined();
      expect(result.keys).toEqual(
        [key(teamId, changed, 'content_differs'), key(teamId, stays, 'missing_in_new')].sort(byKey),
      );
      expect(result.rechecks).toBeGreaterThanOrEqual(1);
      expect(result).toMatchObject({ clean: false, mismatches: 2 });
      expect(result.counts).toMatchObject({ missing_in_new: 1, content_differs: 1 });
    },
  );
});

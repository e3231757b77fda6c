/**
 * REPRODUCTION of a liveness bug in the phase fence (src/phases/phase-store.ts), opt-in until
 * it is fixed: run with `PG_DUAL_READ_REPRO_STARVATION=1 npx vitest run test/concurrency`.
 *
 * Writers take the control row `FOR KEY SHARE`; `transition()` takes it `FOR UPDATE`. Row
 * locks are not queued fairly: a new `FOR KEY SHARE` on a row that is only locked (not
 * updated) never waits, even while a `FOR UPDATE` waits for the current lockers. Under a
 * steady stream of overlapping write transactions there is always a locker, so the phase
 * change waits as long as the stream lasts (observed: over 100 s with 18 writers, and a 500 ms lock timeout never fired). And
 * `lock_timeout` (phaseChangeLockTimeoutMs) does not bound it: each wait is for the next
 * locker's transaction id, a new lock wait with a fresh timeout.
 *
 * Proposed fix: in `PhaseStore.transition`, before `SELECT ... FOR UPDATE`, take
 * `LOCK TABLE <control>.migration IN EXCLUSIVE MODE` (conflicts with the ROW SHARE lock every
 * fence takes on the table, not with the plain reads that carry the epoch; heavyweight locks
 * queue fairly, so new fences wait behind the phase change, and lock_timeout bounds a single
 * wait). Or a per-migration advisory lock: `pg_advisory_xact_lock_shared(key)` in `fence`,
 * `pg_advisory_xact_lock(key)` in `transition`. With the first fix this test passes in ~0.2 s.
 * Once fixed, drop the `skipIf`.
 */
import { afterAll, expect, it } from 'vitest';
import { delay, MigrationEnv, type ServiceInstance, track } from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

describeOnRealServer('startDualRead under a sustained write stream (real server)', () => {
  let env: MigrationEnv | undefined;
  afterAll(async () => {
    await env?.close();
  });

  it.skipIf(!process.env.PG_DUAL_READ_REPRO_STARVATION)(
    'startDualRead finishes, or gives up, within its lock timeout while twenty-four writers keep writing',
    async () => {
      env = await MigrationEnv.create('starve');
      const teamId = 701;
      const ids = await env.seed(teamId, 30, 'sv');
      const writers: ServiceInstance[] = [];
      for (let i = 0; i < 3; i++) writers.push(await env.addInstance({ poolSize: 8 }));
      const operator = await env.addInstance({ poolSize: 1, phaseChangeLockTimeoutMs: 1_000 });
      let stop = false;
      let ops = 0;
      const loops = writers.flatMap((w) =>
        Array.from({ length: 8 }, async (_, k) => {
          for (let n = k; !stop; n++) {
            await w.repo.updatePerson(teamId, ids[n % ids.length] as string, { properties: { n } });
            ops++;
          }
        }),
      );
      try {
        while (ops < 200) await delay(5);
        const startedAt = Date.now();
        const transition = track(operator.migration.startDualRead());
        while (!transition.settled && Date.now() - startedAt < 3_000) await delay(10);
        const waitedMs = Date.now() - startedAt;
        stop = true;
        await Promise.all(loops);
        await transition.promise.catch(() => undefined);
        // The contract: "Waits (up to phaseChangeLockTimeoutMs) for in-flight writes".
        expect(waitedMs, 'startDualRead was still waiting after 3 s with a 1 s lock timeout').toBeLessThan(3_000);
      } finally {
        stop = true;
        await Promise.all(loops);
      }
    },
    30_000,
  );
});

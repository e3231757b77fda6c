/**
 * A phase change under a sustained stream of writes finishes (or gives up) within its lock
 * timeout. Writers hold the control row FOR KEY SHARE; row locks are not queued fairly, so
 * before the fix (LOCK TABLE ... IN EXCLUSIVE MODE in PhaseStore.transition) a new writer
 * never waited behind the waiting FOR UPDATE and startDualRead() waited as long as the
 * stream lasted (over 100 s observed, with a 500 ms lock timeout that never fired).
 */
import { afterAll, expect, it } from 'vitest';
import { delay, MigrationEnv, type ServiceInstance, track } from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

describeOnRealServer('startDualRead under a sustained write stream (real server)', () => {
  let env: MigrationEnv | undefined;
  afterAll(async () => {
    await env?.close();
  });

  it('startDualRead finishes, or gives up, within its lock timeout while twenty-four writers keep writing', async () => {
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
      expect(
        waitedMs,
        'startDualRead was still waiting after 3 s with a 1 s lock timeout',
      ).toBeLessThan(3_000);
    } finally {
      stop = true;
      await Promise.all(loops);
    }
  }, 30_000);
});

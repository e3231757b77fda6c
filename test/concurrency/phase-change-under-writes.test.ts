/**
 * `startDualRead()` while several service instances keep writing, on a real server.
 * Invariant: nothing lost across a phase change — a write that routed itself by the old phase
 * commits before the phase changes (the phase fence), and every write after it goes where the
 * merged reads look.
 */
import { afterAll, afterEach, expect, it } from 'vitest';
import type { PhaseState } from '../../src/model/phase.js';
import {
  Gate,
  MigrationEnv,
  openAllGates,
  pick,
  type ServiceInstance,
  seededRandom,
  testSeed,
  track,
} from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

describeOnRealServer('phase change under concurrent writes (real server)', () => {
  const envs: MigrationEnv[] = [];
  afterEach(openAllGates);

  afterAll(async () => {
    for (const env of envs) await env.close();
  });

  async function newEnv(
    prefix: string,
    instances: number,
    poolSize: number,
  ): Promise<MigrationEnv> {
    const env = await MigrationEnv.create(prefix);
    envs.push(env);
    for (let i = 0; i < instances; i++) await env.addInstance({ poolSize });
    return env;
  }

  it('a write transaction that fenced the old phase delays startDualRead until it commits, and what it wrote is read after the change', async () => {
    const env = await newEnv('fence', 2, 4);
    const [a, b] = env.instances as [ServiceInstance, ServiceInstance];
    const teamId = 301;
    const [seededId] = (await env.seed(teamId, 2, 'held')) as [string];
    const written = new Gate();
    const release = new Gate();

    const write = track(
      a.repo.inTransaction(async (tx) => {
        const created = await tx.createPerson({
          teamId,
          distinctIds: ['held-new'],
          properties: { held: true },
        });
        const updated = await tx.updatePerson(teamId, seededId, { properties: { held: true } });
        written.open();
        await release.promise;
        return { created, updated };
      }),
    );
    await written.promise;
    const transition = track(b.migration.startDualRead());
    // The transition is seen waiting for its lock on the control table (which the fence of the
    // write in flight conflicts with)...
    const waited = await env.waitForLockWaiters(env.statementLike('phase-change'), {
      giveUp: () => transition.settled,
    });
    expect(waited).toBe(true);
    expect(transition.settled).toBe(false);
    expect((await env.control.status()).phase).toBe('old');
    release.open();

    const { created, updated } = await write.promise;
    const state: PhaseState = await transition.promise;
    expect(state.phase).toBe('dual_read');
    expect(created.status).toBe('created');
    expect(updated?.version).toBe(1);
    // The write went to the old table (the phase it fenced)...
    const newId = created.status === 'created' ? created.person.id : '';
    expect(await env.storedPersons('old', teamId, [newId, seededId])).toHaveLength(2);
    expect(await env.storedPersons('new', teamId, [newId, seededId])).toHaveLength(0);
    // ...and every instance reads it under dual_read.
    for (const { repo } of env.instances) {
      expect((await repo.fetchPerson(teamId, 'held-new'))?.properties).toMatchObject({
        held: true,
      });
      const seeded = await repo.fetchPerson(teamId, 'held-1');
      expect(seeded?.version).toBe(1);
      expect(seeded?.properties).toMatchObject({ held: true, n: 1 });
    }
    // A write after the change goes to the new table, continuing the version.
    expect(
      (await a.repo.updatePerson(teamId, seededId, { properties: { after: true } }))?.version,
    ).toBe(2);
    expect(await env.storedPersons('new', teamId, [seededId])).toHaveLength(1);
  });

  it('startDualRead in the middle of a stream of creates, updates and distinct-id adds from three instances loses none of them: every instance reads every person with every update and the exact version', async () => {
    const env = await newEnv('stream', 3, 4);
    const instances = env.instances;
    const teamId = 302;
    const seed = testSeed();
    const random = seededRandom(seed);
    const seededIds = await env.seed(teamId, 30, 's');

    interface Expected {
      id: string;
      distinctIds: string[];
      keys: Set<string>;
      updates: number;
    }
    const persons: Expected[] = seededIds.map((id, i) => ({
      id,
      distinctIds: [`s-${i + 1}`],
      keys: new Set(),
      updates: 0,
    }));
    const writersPerInstance = 3;
    const errors: unknown[] = [];
    let ops = 0;
    let stop = false;

    const writer = async (instance: ServiceInstance, name: string) => {
      for (let n = 0; !stop; n++) {
        const roll = random();
        try {
          if (roll < 0.25) {
            const distinctId = `${name}-c${n}`;
            const result = await instance.repo.createPerson({
              teamId,
              distinctIds: [distinctId],
              properties: { by: name },
            });
            if (result.status !== 'created')
              throw new Error(`create ${distinctId}: ${result.status}`);
            persons.push({
              id: result.person.id,
              distinctIds: [distinctId],
              keys: new Set(),
              updates: 0,
            });
          } else if (roll < 0.4) {
            const target = pick(persons, random);
            const distinctId = `${name}-d${n}`;
            const result = await instance.repo.addDistinctId(teamId, target.id, distinctId);
            if (result.status !== 'added') throw new Error(`add ${distinctId}: ${result.status}`);
            target.distinctIds.push(distinctId);
          } else {
            const target = pick(persons, random);
            const key = `${name}_${n}`;
            const row = await instance.repo.updatePerson(teamId, target.id, {
              properties: { [key]: n },
            });
            if (!row) throw new Error(`update ${target.id}: not found`);
            target.keys.add(key);
            target.updates++;
          }
          ops++;
        } catch (error) {
          errors.push(error);
          return;
        }
      }
    };

    const writers = instances.flatMap((instance, i) =>
      Array.from({ length: writersPerInstance }, (_, w) => writer(instance, `i${i}w${w}`)),
    );
    const opsUntil = (count: number) =>
      new Promise<void>((resolve) => {
        const check = () =>
          ops >= count || errors.length > 0 || stop ? resolve() : setTimeout(check, 5);
        check();
      });

    await opsUntil(300);
    const opsBefore = ops;
    const startedAt = Date.now();
    let state: PhaseState | undefined;
    try {
      state = await (instances[1] as ServiceInstance).migration.startDualRead();
    } finally {
      const transitionMs = Date.now() - startedAt;
      const opsDuring = ops - opsBefore;
      await opsUntil(ops + 600);
      stop = true;
      await Promise.all(writers);
      // Visible in the test output when something goes wrong.
      if (errors.length > 0 || !state)
        console.error({ seed, transitionMs, opsBefore, opsDuring, ops, errors });
    }
    expect(errors, `seed ${seed}`).toEqual([]);
    expect(state?.phase).toBe('dual_read');

    // Writes landed in both phases: creates in the old table before, in the new one after.
    const createdIds = persons.slice(seededIds.length).map((p) => p.id);
    const inOld = new Set((await env.storedPersons('old', teamId, createdIds)).map((r) => r.id));
    const inNew = new Set((await env.storedPersons('new', teamId, createdIds)).map((r) => r.id));
    expect(inOld.size, `seed ${seed}: created under old`).toBeGreaterThan(0);
    expect(
      [...inNew].filter((id) => !inOld.has(id)).length,
      `seed ${seed}: created under dual_read`,
    ).toBeGreaterThan(0);
    expect(createdIds.filter((id) => !inOld.has(id) && !inNew.has(id))).toEqual([]);

    // Every instance sees every person, every distinct id, every update, the exact version.
    for (const { repo } of instances) {
      expect(await repo.countPersons(teamId)).toBe(persons.length);
      const byId = new Map(
        (await repo.fetchPersonsByPersonIds(persons.map((p) => ({ teamId, personId: p.id })))).map(
          (r) => [r.id, r],
        ),
      );
      const byDistinctId = new Map(
        (
          await repo.fetchPersonsByDistinctIds(
            persons.flatMap((p) => p.distinctIds.map((distinctId) => ({ teamId, distinctId }))),
          )
        ).map((r) => [r.distinct_id, r.id]),
      );
      for (const person of persons) {
        const row = byId.get(person.id);
        expect(row, `seed ${seed}: person ${person.id}`).toBeDefined();
        expect(row?.version, `seed ${seed}: version of ${person.id}`).toBe(person.updates);
        for (const key of person.keys)
          expect(row?.properties, `seed ${seed}: ${person.id}`).toHaveProperty(key);
        for (const distinctId of person.distinctIds)
          expect(byDistinctId.get(distinctId)).toBe(person.id);
      }
    }
    expect(await env.orphanDistinctIds(teamId)).toEqual([]);
  });
});

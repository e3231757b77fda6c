/**
 * Deletes racing copy-on-write updates and distinct-id adds, on a real server. Invariant:
 * nothing resurrected — a deleted person is in neither table, no read sees it, and no distinct
 * id is left pointing at it. Both orders are forced (one side holds its locks in an open
 * transaction until the other is seen waiting in pg_stat_activity), then randomized.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { PersonUpdate } from '../../src/repository/persons-repository.js';
import {
  delay,
  Gate,
  MigrationEnv,
  openAllGates,
  openRawSession,
  pick,
  type ServiceInstance,
  seededRandom,
  shuffle,
  testSeed,
  track,
} from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

describeOnRealServer('deletes racing copies and distinct-id adds (real server)', () => {
  let env: MigrationEnv;
  let a: ServiceInstance;
  let b: ServiceInstance;
  let c: ServiceInstance;
  let oldEnv: MigrationEnv;

  beforeAll(async () => {
    env = await MigrationEnv.create('del');
    a = await env.addInstance({ poolSize: 6 });
    b = await env.addInstance({ poolSize: 6 });
    c = await env.addInstance({ poolSize: 6 });
    await env.control.startDualRead();
    // A second migration left in phase `old` (rule 3 holds there too).
    oldEnv = await MigrationEnv.create('delold');
    await oldEnv.addInstance({ poolSize: 6 });
    await oldEnv.addInstance({ poolSize: 6 });
  });

  afterEach(openAllGates);

  afterAll(async () => {
    await env?.close();
    await oldEnv?.close();
  });

  // `"posthog_person"` (closing quote included) does not match `"posthog_person_new"`.
  const deleteOfOldRow = () => env.statementLike('delete-old-row');
  const copyStatement = () => env.statementLike('copy-on-write');

  /** Asserts `ids` are gone for good: raw tables, every instance's reads, distinct ids. */
  async function expectDeleted(
    e: MigrationEnv,
    teamId: number,
    persons: readonly { id: string; distinctIds: readonly string[] }[],
    survivors: number,
  ) {
    const ids = persons.map((p) => p.id);
    const distinctIds = persons.flatMap((p) => p.distinctIds);
    expect(await e.storedPersons('old', teamId, ids), 'old table').toEqual([]);
    expect(await e.storedPersons('new', teamId, ids), 'new table').toEqual([]);
    expect(await e.storedDistinctIds(teamId, ids), 'distinct ids').toEqual([]);
    expect(await e.orphanDistinctIds(teamId), 'orphan distinct ids').toEqual([]);
    for (const { repo } of e.instances) {
      expect(
        await repo.fetchPersonsByPersonIds(ids.map((personId) => ({ teamId, personId }))),
      ).toEqual([]);
      expect(
        await repo.fetchPersonsByDistinctIds(
          distinctIds.map((distinctId) => ({ teamId, distinctId })),
        ),
      ).toEqual([]);
      for (const distinctId of distinctIds.slice(0, 3)) {
        expect(await repo.fetchPerson(teamId, distinctId)).toBeUndefined();
      }
      expect(await repo.countPersons(teamId)).toBe(survivors);
      const listed = await repo.listPersons(teamId, { limit: 10_000 });
      expect(listed.persons.filter((p) => ids.includes(p.id))).toEqual([]);
    }
  }

  it('a delete that arrives while a copy-on-write update holds the old row FOR SHARE waits for it, then removes the copy: the person stays deleted', async () => {
    const teamId = 201;
    const ids = await env.seed(teamId, 3, 'a'); // the other two are controls
    const id = ids[1] as string;
    const updated = new Gate();
    const release = new Gate();

    const update = track(
      a.repo.inTransaction(async (tx) => {
        const row = await tx.updatePerson(teamId, id, { properties: { updated: true } });
        updated.open();
        await release.promise; // the copy is in the new table, uncommitted; old row held FOR SHARE
        return row;
      }),
    );
    await updated.promise;
    const del = track(b.repo.deletePerson(teamId, id));
    const deleteWaited = await env.waitForLockWaiters(deleteOfOldRow(), {
      giveUp: () => del.settled,
    });
    const settledBeforeCommit = del.settled;
    release.open();

    expect((await update.promise)?.version).toBe(1);
    expect(await del.promise).toBe(true);
    await expectDeleted(env, teamId, [{ id, distinctIds: ['a-2'] }], 2);
    // Rule 2 as documented: the delete of the old row waited for the copy's FOR SHARE.
    expect(deleteWaited).toBe(true);
    expect(settledBeforeCommit).toBe(false);
  });

  it('an update that arrives while a delete transaction holds the person finds nothing to copy: it returns undefined and the person stays deleted', async () => {
    const teamId = 202;
    const ids = await env.seed(teamId, 3, 'b');
    const id = ids[1] as string;
    const deleted = new Gate();
    const release = new Gate();

    const del = track(
      b.repo.inTransaction(async (tx) => {
        const result = await tx.deletePerson(teamId, id);
        deleted.open();
        await release.promise; // all three deletes ran, uncommitted
        return result;
      }),
    );
    await deleted.promise;
    const update = track(a.repo.updatePerson(teamId, id, { properties: { resurrected: true } }));
    const updateWaited = await env.waitForLockWaiters(copyStatement(), {
      giveUp: () => update.settled,
    });
    const settledBeforeCommit = update.settled;
    release.open();

    expect(await del.promise).toBe(true);
    expect(await update.promise).toBeUndefined();
    await expectDeleted(env, teamId, [{ id, distinctIds: ['b-2'] }], 2);
    // Rule 1 as documented: the copy's FOR SHARE waited for the delete of the old row.
    expect(updateWaited).toBe(true);
    expect(settledBeforeCommit).toBe(false);
  });

  it('an update whose copy waits on a delete paused between its old-row and new-row statements copies nothing: the person stays deleted', async () => {
    const teamId = 203;
    const ids = await env.seed(teamId, 3, 'c');
    const id = ids[1] as string;
    // What deletePerson does, one statement at a time, from a raw session.
    const raw = await openRawSession();
    try {
      await raw.query('BEGIN');
      await raw.query(`DELETE FROM ${env.oldTableText} WHERE team_id = $1 AND id = $2`, [
        teamId,
        id,
      ]);
      const update = track(a.repo.updatePerson(teamId, id, { properties: { resurrected: true } }));
      const updateWaited = await env.waitForBlockedBy(raw.pid, { giveUp: () => update.settled });
      await raw.query(`DELETE FROM ${env.newTableText} WHERE team_id = $1 AND id = $2`, [
        teamId,
        id,
      ]);
      await raw.query(
        `DELETE FROM ${env.distinctIdsTableText} WHERE team_id = $1 AND person_id = $2`,
        [teamId, id],
      );
      await raw.query('COMMIT');

      expect(await update.promise).toBeUndefined();
      await expectDeleted(env, teamId, [{ id, distinctIds: ['c-2'] }], 2);
      expect(updateWaited).toBe(true);
    } finally {
      await raw.end();
    }
  });

  it('randomized: updates and a delete of 200 persons fired concurrently in random order from three instances never resurrect a deleted person, and survivors keep every update', async () => {
    const teamId = 204;
    const seed = testSeed();
    const random = seededRandom(seed);
    const total = 200;
    const perRound = 10;
    const ids = await env.seed(teamId, total, 'r');
    const instances = [a, b, c];
    type Op = { kind: 'update'; k: number } | { kind: 'delete' };
    const deletedIds = new Set<string>();
    const updatesLanded = new Map<string, number>();
    let updatesAfterDelete = 0;
    let deletedAfterAnUpdate = 0;

    for (let start = 0; start < total; start += perRound) {
      const round = ids.slice(start, start + perRound);
      const ops: { id: string; op: Op }[] = [];
      for (const [i, id] of round.entries()) {
        ops.push({ id, op: { kind: 'update', k: 0 } }, { id, op: { kind: 'update', k: 1 } });
        if ((start + i) % 4 !== 0) ops.push({ id, op: { kind: 'delete' } }); // a quarter survive
      }
      shuffle(ops, random);
      await Promise.all(
        ops.map(async ({ id, op }) => {
          await delay(Math.floor(random() * 3));
          const repo = pick(instances, random).repo;
          if (op.kind === 'delete') {
            const gone = await repo.deletePerson(teamId, id);
            expect(gone, `seed ${seed}: delete of ${id}`).toBe(true);
            deletedIds.add(id);
            if ((updatesLanded.get(id) ?? 0) > 0) deletedAfterAnUpdate++;
          } else {
            const update: PersonUpdate = { properties: { [`k${op.k}`]: op.k } };
            const row = await repo.updatePerson(teamId, id, update);
            if (row) updatesLanded.set(id, (updatesLanded.get(id) ?? 0) + 1);
            else updatesAfterDelete++;
          }
        }),
      );
    }

    const survivors = ids.filter((id) => !deletedIds.has(id));
    expect(survivors).toHaveLength(total / 4);
    await expectDeleted(
      env,
      teamId,
      [...deletedIds].map((id) => ({ id, distinctIds: [`r-${ids.indexOf(id) + 1}`] })),
      survivors.length,
    );
    const rows = await c.repo.fetchPersonsByPersonIds(
      ids.map((personId) => ({ teamId, personId })),
    );
    expect(rows.map((r) => r.id).sort(), `seed ${seed}`).toEqual([...survivors].sort());
    for (const row of rows) {
      expect(row.version, `seed ${seed}: ${row.id}`).toBe(2);
      expect(row.properties).toMatchObject({ k0: 0, k1: 1 });
    }
    expect(await env.storedPersons('new', teamId, survivors)).toHaveLength(survivors.length);
    // Both orders really happened (update before delete, and after it).
    expect(deletedAfterAnUpdate, `seed ${seed}`).toBeGreaterThan(0);
    expect(updatesAfterDelete, `seed ${seed}`).toBeGreaterThan(0);
  });

  it('an addDistinctId that holds an old-only person (its copy) makes a racing delete wait, and the delete then removes the added distinct id: no orphan', async () => {
    const teamId = 205;
    const ids = await env.seed(teamId, 3, 'd');
    const id = ids[1] as string;
    const added = new Gate();
    const release = new Gate();
    const add = track(
      a.repo.inTransaction(async (tx) => {
        const result = await tx.addDistinctId(teamId, id, 'd-2-extra');
        added.open();
        await release.promise;
        return result;
      }),
    );
    await added.promise;
    const del = track(b.repo.deletePerson(teamId, id));
    const deleteWaited = await env.waitForLockWaiters(deleteOfOldRow(), {
      giveUp: () => del.settled,
    });
    release.open();

    expect(await add.promise).toEqual({ status: 'added' });
    expect(await del.promise).toBe(true);
    await expectDeleted(env, teamId, [{ id, distinctIds: ['d-2', 'd-2-extra'] }], 2);
    expect(deleteWaited).toBe(true);
  });

  it('an addDistinctId that holds a person created in dual_read (new table only) makes a racing delete wait on the new row, and the distinct id goes with the person', async () => {
    const teamId = 206;
    const created = await a.repo.createPerson({ teamId, distinctIds: ['e-new'] });
    if (created.status !== 'created') throw new Error('create failed');
    const id = created.person.id;
    const added = new Gate();
    const release = new Gate();
    const add = track(
      b.repo.inTransaction(async (tx) => {
        const result = await tx.addDistinctId(teamId, id, 'e-new-extra');
        added.open();
        await release.promise; // holds the new row FOR KEY SHARE
        return result;
      }),
    );
    await added.promise;
    const del = track(c.repo.deletePerson(teamId, id));
    const deleteWaited = await env.waitForLockWaiters(env.statementLike('delete-new-row'), {
      giveUp: () => del.settled,
    });
    release.open();

    expect(await add.promise).toEqual({ status: 'added' });
    expect(await del.promise).toBe(true);
    await expectDeleted(env, teamId, [{ id, distinctIds: ['e-new', 'e-new-extra'] }], 0);
    expect(deleteWaited).toBe(true);
  });

  it('an addDistinctId that arrives while a delete transaction holds the person waits, then finds it gone: person_not_found and no orphan', async () => {
    const teamId = 207;
    const ids = await env.seed(teamId, 3, 'f');
    const created = await a.repo.createPerson({ teamId, distinctIds: ['f-new'] });
    if (created.status !== 'created') throw new Error('create failed');
    // One old-only person (the add's copy waits) and one new-only person (its FOR KEY SHARE waits).
    let survivors = ids.length + 1;
    for (const [id, distinctId, waitingStatement] of [
      [ids[1] as string, 'f-2', 'copy-on-write'],
      [created.person.id, 'f-new', 'add-distinct-id'],
    ] as const) {
      survivors--;
      const deleted = new Gate();
      const release = new Gate();
      const del = track(
        b.repo.inTransaction(async (tx) => {
          const result = await tx.deletePerson(teamId, id);
          deleted.open();
          await release.promise;
          return result;
        }),
      );
      await deleted.promise;
      const add = track(c.repo.addDistinctId(teamId, id, `${distinctId}-late`));
      const addWaited = await env.waitForLockWaiters(env.statementLike(waitingStatement), {
        giveUp: () => add.settled,
      });
      release.open();

      expect(await del.promise).toBe(true);
      expect(await add.promise).toEqual({ status: 'person_not_found' });
      await expectDeleted(
        env,
        teamId,
        [{ id, distinctIds: [distinctId, `${distinctId}-late`] }],
        survivors,
      );
      expect(addWaited, distinctId).toBe(true);
    }
  });

  it('randomized: addDistinctId racing deletePerson on 200 persons (old-only, copied, and created in dual_read) never leaves an orphan distinct id', async () => {
    const teamId = 208;
    const seed = testSeed();
    const random = seededRandom(seed);
    const seeded = await env.seed(teamId, 140, 'g');
    // A third of the seeded persons already have a copy in the new table.
    for (const id of seeded.slice(0, 70))
      await a.repo.updatePerson(teamId, id, { properties: { copied: true } });
    const persons: { id: string; distinctIds: string[] }[] = seeded.map((id, i) => ({
      id,
      distinctIds: [`g-${i + 1}`],
    }));
    for (let i = 0; i < 60; i++) {
      const created = await b.repo.createPerson({ teamId, distinctIds: [`g-new-${i}`] });
      if (created.status !== 'created') throw new Error('create failed');
      persons.push({ id: created.person.id, distinctIds: [`g-new-${i}`] });
    }
    shuffle(persons, random);
    const instances = [a, b, c];
    const deleted = new Set<string>();
    const addResults = new Map<string, string>();

    for (let start = 0; start < persons.length; start += 10) {
      const round = persons.slice(start, start + 10);
      const ops: (() => Promise<void>)[] = [];
      for (const [i, person] of round.entries()) {
        for (const k of [0, 1]) {
          const distinctId = `${person.distinctIds[0]}-add${k}`;
          person.distinctIds.push(distinctId);
          ops.push(async () => {
            const result = await pick(instances, random).repo.addDistinctId(
              teamId,
              person.id,
              distinctId,
            );
            addResults.set(distinctId, result.status);
          });
        }
        if ((start + i) % 5 !== 0) {
          ops.push(async () => {
            expect(
              await pick(instances, random).repo.deletePerson(teamId, person.id),
              `seed ${seed}`,
            ).toBe(true);
            deleted.add(person.id);
          });
        }
      }
      shuffle(ops, random);
      await Promise.all(ops.map(async (op) => delay(Math.floor(random() * 3)).then(op)));
    }

    expect(await env.orphanDistinctIds(teamId), `seed ${seed}`).toEqual([]);
    const gone = persons.filter((p) => deleted.has(p.id));
    const kept = persons.filter((p) => !deleted.has(p.id));
    await expectDeleted(env, teamId, gone, kept.length);
    for (const person of kept) {
      for (const distinctId of person.distinctIds.slice(1))
        expect(addResults.get(distinctId)).toBe('added');
      const rows = await a.repo.fetchPersonsByDistinctIds(
        person.distinctIds.map((distinctId) => ({ teamId, distinctId })),
      );
      expect(rows.map((r) => r.id)).toEqual(person.distinctIds.map(() => person.id));
    }
    // Both orders really happened.
    const statuses = [...addResults.values()];
    expect(statuses.filter((s) => s === 'person_not_found').length, `seed ${seed}`).toBeGreaterThan(
      0,
    );
    expect(
      gone.some((p) => p.distinctIds.slice(1).some((d) => addResults.get(d) === 'added')),
      `seed ${seed}`,
    ).toBe(true);
  });

  it('randomized, phase old: addDistinctId racing deletePerson on 100 persons never leaves an orphan distinct id', async () => {
    const teamId = 209;
    const seed = testSeed();
    const random = seededRandom(seed);
    const ids = await oldEnv.seed(teamId, 100, 'h');
    const persons = ids.map((id, i) => ({ id, distinctIds: [`h-${i + 1}`] }));
    const deleted = new Set<string>();
    for (let start = 0; start < persons.length; start += 10) {
      const ops: (() => Promise<void>)[] = [];
      for (const person of persons.slice(start, start + 10)) {
        for (const k of [0, 1]) {
          const distinctId = `${person.distinctIds[0]}-add${k}`;
          person.distinctIds.push(distinctId);
          ops.push(async () => {
            await pick(oldEnv.instances, random).repo.addDistinctId(teamId, person.id, distinctId);
          });
        }
        ops.push(async () => {
          await pick(oldEnv.instances, random).repo.deletePerson(teamId, person.id);
          deleted.add(person.id);
        });
      }
      shuffle(ops, random);
      await Promise.all(ops.map(async (op) => delay(Math.floor(random() * 3)).then(op)));
    }
    expect((await oldEnv.control.status()).phase).toBe('old');
    expect(deleted.size).toBe(100);
    expect(await oldEnv.orphanDistinctIds(teamId), `seed ${seed}`).toEqual([]);
    await expectDeleted(oldEnv, teamId, persons, 0);
  });
});

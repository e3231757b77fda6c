/**
 * Concurrent copy-on-write updates in phase `dual_read`, on a real server: several
 * connections update an old-only person at the same instant, so several transactions decide
 * "the new table has no copy yet" together. Invariants: nothing lost, versions never go back.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  MigrationEnv,
  openRawSession,
  type ServiceInstance,
  track,
} from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

describeOnRealServer('concurrent copy-on-write updates (dual_read, real server)', () => {
  let env: MigrationEnv;
  let a: ServiceInstance;
  let b: ServiceInstance;
  let c: ServiceInstance;
  const poolSize = 6;

  beforeAll(async () => {
    // A partitioned new table: ON CONFLICT must also work through partition routing.
    env = await MigrationEnv.create('cow', { partitions: 4 });
    a = await env.addInstance({ poolSize });
    b = await env.addInstance({ poolSize });
    c = await env.addInstance({ poolSize });
    await env.control.startDualRead();
  });

  afterAll(async () => {
    await env?.close();
  });

  /**
   * Holds the old rows of `ids` FOR UPDATE from a raw session, runs `start()`, waits until
   * `waiters` sessions queue behind that lock (the copies, all past their "no copy yet" check
   * with the same snapshot), then releases it so they all copy at once.
   */
  async function pileUpBehindOldRows<T>(
    teamId: number,
    ids: readonly string[],
    waiters: number,
    start: () => Promise<T>[],
  ): Promise<{ results: T[]; piledUp: boolean }> {
    const raw = await openRawSession();
    try {
      await raw.query('BEGIN');
      await raw.query(
        `SELECT id FROM ${env.oldTableText} WHERE team_id = $1 AND id = ANY($2::bigint[]) FOR UPDATE`,
        [teamId, ids],
      );
      const ops = start().map(track);
      // Every copy waits on the raw lock (FOR SHARE waiters queue together, not behind each other).
      const piledUp = await env.waitForLockWaiters(env.statementLike('copy-on-write'), {
        count: waiters,
        giveUp: () => ops.every((op) => op.settled),
      });
      await raw.query('COMMIT');
      return { results: await Promise.all(ops.map((op) => op.promise)), piledUp };
    } finally {
      await raw.end();
    }
  }

  it('two updates of an old-only person from two connections, both past the copy check at once, both land: version +2, both properties, one row in the new table', async () => {
    const teamId = 101;
    const [id] = (await env.seed(teamId, 1, 'two')) as [string];

    const { results, piledUp } = await pileUpBehindOldRows(teamId, [id], 2, () => [
      a.repo.updatePerson(teamId, id, { properties: { from_a: 'A' } }),
      b.repo.updatePerson(teamId, id, { properties: { from_b: 'B' } }),
    ]);

    // Both updates landed, one after the other (each saw the other's version or none).
    expect(results.map((r) => r?.version).sort()).toEqual([1, 2]);
    const seen = await c.repo.fetchPerson(teamId, 'two-1');
    expect(seen?.version).toBe(2);
    expect(seen?.properties).toMatchObject({ n: 1, from_a: 'A', from_b: 'B' });
    const copies = await env.storedPersons('new', teamId, [id]);
    expect(copies).toHaveLength(1);
    expect(copies[0]?.version).toBe('2');
    // Copy-on-write leaves the old row as it was.
    const old = await env.storedPersons('old', teamId, [id]);
    expect(old[0]?.version).toBe('0');
    expect(old[0]?.properties).not.toHaveProperty('from_a');
    // The interleaving really happened: both copies waited together on the old row.
    expect(piledUp).toBe(true);
  });

  it('twenty concurrent updates of each of five old-only persons from three instances all land: version +20, every property, versions 1 to 20 each returned once', async () => {
    const teamId = 102;
    const persons = 5;
    const updatesEach = 20;
    const ids = await env.seed(teamId, persons, 'many');
    const instances = [a, b, c];

    const { results, piledUp } = await pileUpBehindOldRows(
      teamId,
      ids,
      instances.length * poolSize, // every pooled connection queues behind the old rows
      () =>
        Array.from({ length: updatesEach }, (_, u) =>
          ids.map((id, p) =>
            (instances[(u + p) % instances.length] as ServiceInstance).repo.updatePerson(
              teamId,
              id,
              {
                properties: { [`u${u}`]: u },
              },
            ),
          ),
        ).flat(),
    );

    for (const [p, id] of ids.entries()) {
      const returned = results.filter((r) => r?.id === id).map((r) => r?.version);
      expect(returned.sort((x, y) => (x ?? 0) - (y ?? 0))).toEqual(
        Array.from({ length: updatesEach }, (_, i) => i + 1),
      );
      for (const instance of instances) {
        const [person] = await instance.repo.fetchPersonsByPersonIds([{ teamId, personId: id }]);
        expect(person?.version).toBe(updatesEach);
        for (let u = 0; u < updatesEach; u++) expect(person?.properties[`u${u}`]).toBe(u);
        expect(person?.properties.n).toBe(p + 1);
      }
    }
    const copies = await env.storedPersons('new', teamId, ids);
    expect(copies.map((r) => r.id)).toEqual([...ids].sort((x, y) => Number(x) - Number(y)));
    expect(copies.every((r) => r.version === String(updatesEach))).toBe(true);
    expect(await a.repo.countPersons(teamId)).toBe(persons);
    expect(piledUp).toBe(true);
  });

  it('versions never go backwards: concurrent copy-on-write updates and version-asserted read-modify-write loops continue from the old row version, and a stale version gets no_match', async () => {
    const teamId = 103;
    const persons = 6;
    const plainEach = 4;
    const assertedEach = 4;
    const ids = await env.seed(teamId, persons, 'ver');
    // Historic versions, as a live table has them (set before any copy exists).
    const admin = await openRawSession();
    try {
      await admin.query(
        `UPDATE ${env.oldTableText} SET version = 10 + 7 * (properties->>'n')::int WHERE team_id = $1`,
        [teamId],
      );
    } finally {
      await admin.end();
    }
    const oldVersion = (p: number) => 10 + 7 * (p + 1);
    const instances = [a, b, c];
    const errors: string[] = [];

    const assertedLoop = async (instance: ServiceInstance, p: number, k: number) => {
      const distinctId = `ver-${p + 1}`;
      for (let attempt = 0; attempt < 200; attempt++) {
        const person = await instance.repo.fetchPerson(teamId, distinctId);
        if (!person) throw new Error(`${distinctId} vanished`);
        const result = await instance.repo.updatePersonAssertVersion(
          teamId,
          person.id,
          person.version,
          {
            properties: { [`asserted${k}`]: true },
          },
        );
        if (result.status === 'updated') {
          if (result.person.version !== person.version + 1) {
            errors.push(
              `${distinctId}: asserted ${person.version} but got ${result.person.version}`,
            );
          }
          return;
        }
      }
      throw new Error(`${distinctId}: asserted update ${k} never won in 200 attempts`);
    };

    await Promise.all(
      ids.flatMap((id, p) => [
        ...Array.from({ length: plainEach }, (_, k) =>
          (instances[k % 3] as ServiceInstance).repo
            .updatePerson(teamId, id, { properties: { [`plain${k}`]: true } })
            .then((r) => {
              if (!r || r.version <= oldVersion(p))
                errors.push(`${id}: plain update returned ${r?.version}`);
            }),
        ),
        ...Array.from({ length: assertedEach }, (_, k) =>
          assertedLoop(instances[(k + 1) % 3] as ServiceInstance, p, k),
        ),
      ]),
    );
    expect(errors).toEqual([]);

    const olds = await env.storedPersons('old', teamId, ids);
    const news = await env.storedPersons('new', teamId, ids);
    expect(news).toHaveLength(persons);
    for (const [p, id] of ids.entries()) {
      const oldRow = olds.find((r) => r.id === id);
      const newRow = news.find((r) => r.id === id);
      expect(Number(oldRow?.version)).toBe(oldVersion(p)); // untouched by copy-on-write
      expect(Number(newRow?.version)).toBeGreaterThanOrEqual(Number(oldRow?.version));
      expect(Number(newRow?.version)).toBe(oldVersion(p) + plainEach + assertedEach);
      for (let k = 0; k < plainEach; k++)
        expect(newRow?.properties).toHaveProperty(`plain${k}`, true);
      for (let k = 0; k < assertedEach; k++)
        expect(newRow?.properties).toHaveProperty(`asserted${k}`, true);

      // A stale version (the old table's, or one behind) matches nothing and changes nothing.
      const current = oldVersion(p) + plainEach + assertedEach;
      for (const stale of [oldVersion(p), current - 1]) {
        const result = await b.repo.updatePersonAssertVersion(teamId, id, stale, {
          properties: { stale: true },
        });
        expect(result).toEqual({ status: 'no_match' });
      }
      const after = await c.repo.fetchPersonsByPersonIds([{ teamId, personId: id }]);
      expect(after[0]?.version).toBe(current);
      expect(after[0]?.properties).not.toHaveProperty('stale');
    }
  });

  it('concurrent version-asserted updates of an old-only person that all expect its old version: exactly one wins, the others get no_match', async () => {
    const teamId = 104;
    const [id] = (await env.seed(teamId, 1, 'race')) as [string];
    const raw = await openRawSession();
    try {
      await raw.query(
        `UPDATE ${env.oldTableText} SET version = 41 WHERE team_id = $1 AND id = $2`,
        [teamId, id],
      );
    } finally {
      await raw.end();
    }
    const contenders = 9;
    const { results, piledUp } = await pileUpBehindOldRows(teamId, [id], contenders, () =>
      Array.from({ length: contenders }, (_, k) =>
        ([a, b, c][k % 3] as ServiceInstance).repo.updatePersonAssertVersion(teamId, id, 41, {
          properties: { winner: k },
        }),
      ),
    );

    const winners = results.flatMap((r, k) =>
      r.status === 'updated' ? [{ k, version: r.person.version }] : [],
    );
    expect(winners).toHaveLength(1);
    expect(winners[0]?.version).toBe(42);
    expect(results.filter((r) => r.status === 'no_match')).toHaveLength(contenders - 1);
    const [stored] = await env.storedPersons('new', teamId, [id]);
    expect(stored?.version).toBe('42');
    expect(stored?.properties.winner).toBe(winners[0]?.k);
    expect(piledUp).toBe(true);
  });
});

/**
 * Issue 14, the whole lifecycle under a steady write load on a real server: three service
 * instances (each its own pool and migration object) create, update, add distinct ids to and
 * delete persons while the operator runs startDualRead, backfill, verify, cutover, rollback,
 * cutover and finalize. Decided from the final (consolidated) table against the acknowledged
 * history, exactly: no failed write, every acknowledged write readable with its content, no
 * deleted person readable, no orphan distinct id.
 */
import { sql } from 'kysely';
import { afterAll, expect, it } from 'vitest';
import { delay, MigrationEnv, type ServiceInstance } from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

interface Expected {
  readonly distinctIds: Set<string>;
  properties: Record<string, unknown>;
  deleted: boolean;
}

describeOnRealServer('the lifecycle under writes (real server)', () => {
  let env: MigrationEnv | undefined;
  afterAll(async () => {
    await env?.close();
  });

  it('startDualRead, backfill, verify, cutover, rollback, cutover, finalize: nothing lost, nothing resurrected, no orphan', async () => {
    env = await MigrationEnv.create('lifecycle_writes');
    const teamId = 1402;
    const seeded = await env.seed(teamId, 300, 'lw');
    const expected = new Map<string, Expected>();
    seeded.forEach((id, i) => {
      expected.set(id, { distinctIds: new Set([`lw-${i + 1}`]), properties: {}, deleted: false });
    });
    const writers: ServiceInstance[] = [];
    for (let i = 0; i < 3; i++) writers.push(await env.addInstance({ poolSize: 4 }));
    const failures: string[] = [];
    let stop = false;
    let ops = 0;
    const loops = writers.map(async (writer, w) => {
      const mine = seeded.filter((_, i) => i % writers.length === w);
      const created: string[] = [];
      for (let n = 0; !stop; n++) {
        try {
          const kind = n % 5;
          if (kind === 0) {
            const distinctId = `lw-w${w}-${n}`;
            const result = await writer.repo.createPerson({
              teamId,
              distinctIds: [distinctId],
              properties: { w, n },
            });
            if (result.status !== 'created') throw new Error(`create ${result.status}`);
            created.push(result.person.id);
            expected.set(result.person.id, {
              distinctIds: new Set([distinctId]),
              properties: { w, n },
              deleted: false,
            });
          } else if (kind === 1 || kind === 2) {
            const id = (kind === 1 ? mine : created)[
              n % Math.max(1, (kind === 1 ? mine : created).length)
            ];
            const entry = id ? expected.get(id) : undefined;
            if (id && entry && !entry.deleted) {
              const row = await writer.repo.updatePerson(teamId, id, { properties: { w, n } });
              if (!row) throw new Error('update found nobody');
              entry.properties = { ...entry.properties, w, n };
            }
          } else if (kind === 3) {
            const id = mine[n % mine.length] as string;
            const entry = expected.get(id);
            if (entry && !entry.deleted) {
              const distinctId = `lw-add-w${w}-${n}`;
              const result = await writer.repo.addDistinctId(teamId, id, distinctId);
              if (result.status !== 'added') throw new Error(`add ${result.status}`);
              entry.distinctIds.add(distinctId);
            }
          } else {
            const id = created.shift();
            const entry = id ? expected.get(id) : undefined;
            if (id && entry) {
              if (!(await writer.repo.deletePerson(teamId, id)))
                throw new Error('delete found nobody');
              entry.deleted = true;
            }
          }
          ops++;
        } catch (error) {
          failures.push(`${(error as { code?: string }).code ?? ''} ${(error as Error).message}`);
        }
      }
    });
    const control = env.control;
    const steps: [string, () => Promise<unknown>][] = [
      ['startDualRead', () => control.startDualRead()],
      ['backfill', () => control.backfill({ workers: 2, batchSize: 50 })],
      ['verify', () => control.verify()],
      ['cutover', () => control.cutover({ actor: 'test' })],
      ['rollback', () => control.rollback({ actor: 'test' })],
      ['cutover again', () => control.cutover({ actor: 'test' })],
      ['finalize', () => control.finalize({ actor: 'test' })],
    ];
    try {
      for (const [, step] of steps) {
        const before = ops;
        while (ops < before + 60) await delay(5);
        await step();
      }
      const before = ops;
      while (ops < before + 60) await delay(5);
    } finally {
      stop = true;
      await Promise.all(loops);
    }
    expect(failures).toEqual([]);
    expect((await control.status()).phase).toBe('finalized');

    const table = sql.id(env.schema, 'posthog_person'); // the consolidated table
    const { rows: persons } = await sql<{ id: string; properties: Record<string, unknown> }>`
      SELECT id::text AS id, properties FROM ${table} WHERE team_id = ${teamId}`.execute(
      env.admin.db,
    );
    const { rows: distinct } = await sql<{ distinct_id: string; person_id: string }>`
      SELECT distinct_id, person_id::text AS person_id FROM ${sql.id(env.schema, 'posthog_persondistinctid')}
      WHERE team_id = ${teamId}`.execute(env.admin.db);
    const stored = new Map(persons.map((p) => [p.id, p.properties]));
    const lost: string[] = [];
    const resurrected: string[] = [];
    for (const [id, entry] of expected) {
      const properties = stored.get(id);
      if (entry.deleted) {
        if (properties) resurrected.push(id);
      } else if (!properties) {
        lost.push(id);
      } else if (
        JSON.stringify({ ...properties }) !== JSON.stringify({ ...properties, ...entry.properties })
      ) {
        lost.push(`${id} (content)`);
      }
    }
    const owner = new Map(distinct.map((d) => [d.distinct_id, d.person_id]));
    for (const [id, entry] of expected) {
      if (entry.deleted) continue;
      for (const distinctId of entry.distinctIds) {
        if (owner.get(distinctId) !== id) lost.push(`${distinctId} -> ${id}`);
      }
    }
    const orphans = distinct.filter((d) => !stored.has(d.person_id)).map((d) => d.distinct_id);
    expect({ lost, resurrected, orphans }).toEqual({ lost: [], resurrected: [], orphans: [] });
    expect(ops).toBeGreaterThan(400);
  }, 120_000);
});

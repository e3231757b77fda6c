/**
 * Reads from a service instance whose cached phase is stale, on a real server. Each instance
 * here has no LISTEN session and a 10-minute refresh interval, so nothing but the epoch that
 * every read statement carries can tell it that another instance changed the phase.
 * Invariant: nothing lost — a committed write is visible to every later read, from every
 * instance, whatever the instance had cached.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { PersonsRepository } from '../../src/repository/persons-repository.js';
import { MigrationEnv, type ServiceInstance } from '../support/concurrency.js';
import { describeOnRealServer } from '../support/test-database.js';

describeOnRealServer('reads from an instance with a stale phase cache (real server)', () => {
  const teamId = 601;
  let env: MigrationEnv;
  let writer: ServiceInstance;
  /** One stale instance per read method (the first read that notices refreshes the cache). */
  const stale = new Map<string, ServiceInstance>();
  const retries = new Map<string, { from: string; to: string }[]>();
  const methods = [
    'fetchPerson',
    'fetchPersonsByDistinctIds',
    'fetchPersonsByPersonIds',
    'fetchPersonByUuid',
    'countPersons',
    'listPersons',
    'updatePerson',
  ] as const;
  let ids: string[];
  let copiedId: string;
  let copiedUuid: string;
  let createdId: string;
  let secondCopiedId: string;

  beforeAll(async () => {
    env = await MigrationEnv.create('stale');
    ids = await env.seed(teamId, 5, 'st');
    copiedId = ids[2] as string;
    const shared = await env.addInstance({
      poolSize: 4,
      listen: false,
      phaseRefreshIntervalMs: 600_000,
    });
    for (const method of methods) {
      const instance =
        method === 'fetchPerson'
          ? shared
          : await env.addInstance({
              handle: shared.handle,
              listen: false,
              phaseRefreshIntervalMs: 600_000,
            });
      const seen: { from: string; to: string }[] = [];
      instance.migration.events.on('read:phase-retry', ({ from, to }) => seen.push({ from, to }));
      stale.set(method, instance);
      retries.set(method, seen);
      // Caches `old` (epoch 1) through an ordinary read.
      expect(await instance.repo.fetchPerson(teamId, 'st-3')).toMatchObject({ version: 0 });
      expect((await instance.migration.currentPhase()).phase).toBe('old');
    }

    // Another instance (it does LISTEN, but the stale ones do not) changes the phase, then
    // updates a person by copy-on-write and creates one in the new table.
    writer = await env.addInstance({ poolSize: 2 });
    expect((await writer.migration.startDualRead()).phase).toBe('dual_read');
    const updated = await writer.repo.updatePerson(teamId, copiedId, {
      properties: { plan: 'paid' },
    });
    expect(updated?.version).toBe(1);
    copiedUuid = updated?.uuid ?? '';
    secondCopiedId = ids[3] as string;
    expect(
      (await writer.repo.updatePerson(teamId, secondCopiedId, { properties: { plan: 'team' } }))
        ?.version,
    ).toBe(1);
    const created = await writer.repo.createPerson({
      teamId,
      distinctIds: ['st-new'],
      properties: { fresh: true },
    });
    if (created.status !== 'created') throw new Error('create failed');
    createdId = created.person.id;
    for (const instance of stale.values()) {
      expect((await instance.migration.currentPhase()).phase).toBe('old'); // really stale
    }
  });

  afterAll(async () => {
    await env?.close();
  });

  /** Runs one read on the instance kept stale for `method`, and checks it noticed the change. */
  async function onStale<T>(
    method: (typeof methods)[number],
    read: (repo: PersonsRepository) => Promise<T>,
  ) {
    const instance = stale.get(method) as ServiceInstance;
    expect((await instance.migration.currentPhase()).phase).toBe('old');
    const result = await read(instance.repo);
    expect((await instance.migration.currentPhase()).phase).toBe('dual_read');
    return { result, retries: retries.get(method) ?? [] };
  }

  it('fetchPerson on an instance that still caches phase old returns the copy-on-write version from the new table', async () => {
    const { result, retries } = await onStale('fetchPerson', (repo) =>
      repo.fetchPerson(teamId, 'st-3'),
    );
    expect(result?.version).toBe(1);
    expect(result?.properties).toMatchObject({ plan: 'paid', n: 3 });
    // The statement's epoch told it: exactly one re-run, from old to dual_read.
    expect(retries).toEqual([{ from: 'old', to: 'dual_read' }]);
  });

  it('fetchPersonsByDistinctIds on a stale instance returns the new version and the person created in the new table', async () => {
    const { result, retries } = await onStale('fetchPersonsByDistinctIds', (repo) =>
      repo.fetchPersonsByDistinctIds([
        { teamId, distinctId: 'st-3' },
        { teamId, distinctId: 'st-new' },
      ]),
    );
    const byDistinctId = new Map(result.map((r) => [r.distinct_id, r]));
    expect(byDistinctId.get('st-3')?.version).toBe(1);
    expect(byDistinctId.get('st-new')?.id).toBe(createdId);
    expect(retries).toEqual([{ from: 'old', to: 'dual_read' }]);
  });

  it('fetchPersonsByPersonIds on a stale instance returns the new version, the other persons once each, and the created person', async () => {
    const { result, retries } = await onStale('fetchPersonsByPersonIds', (repo) =>
      repo.fetchPersonsByPersonIds([...ids, createdId].map((personId) => ({ teamId, personId }))),
    );
    expect(result.map((r) => r.id).sort()).toEqual([...ids, createdId].sort());
    expect(result.find((r) => r.id === copiedId)?.version).toBe(1);
    expect(retries).toEqual([{ from: 'old', to: 'dual_read' }]);
  });

  it('fetchPersonByUuid on a stale instance returns the new version', async () => {
    const { result, retries } = await onStale('fetchPersonByUuid', (repo) =>
      repo.fetchPersonByUuid(teamId, copiedUuid),
    );
    expect(result?.version).toBe(1);
    expect(retries).toEqual([{ from: 'old', to: 'dual_read' }]);
  });

  it('countPersons on a stale instance counts the person created in the new table, and the copied person once', async () => {
    const { result, retries } = await onStale('countPersons', (repo) => repo.countPersons(teamId));
    expect(result).toBe(ids.length + 1);
    expect(retries).toEqual([{ from: 'old', to: 'dual_read' }]);
  });

  it('listPersons on a stale instance lists the created person and the new version of the copied one', async () => {
    const { result, retries } = await onStale('listPersons', (repo) =>
      repo.listPersons(teamId, { limit: 100 }),
    );
    expect(result.persons.map((p) => p.id)).toEqual(
      [...ids, createdId].sort((x, y) => (BigInt(x) < BigInt(y) ? -1 : 1)),
    );
    expect(result.persons.find((p) => p.id === copiedId)?.version).toBe(1);
    expect(retries).toEqual([{ from: 'old', to: 'dual_read' }]);
  });

  it('an update from a stale instance routes by the fenced phase, not its cache: it continues the new version in the new table and leaves the old row alone', async () => {
    const instance = stale.get('updatePerson') as ServiceInstance;
    expect((await instance.migration.currentPhase()).phase).toBe('old');
    const row = await instance.repo.updatePerson(teamId, secondCopiedId, {
      properties: { from_stale: true },
    });
    expect(row?.version).toBe(2);
    expect(row?.properties).toMatchObject({ plan: 'team', from_stale: true });
    // The write's fence taught the instance the phase.
    expect((await instance.migration.currentPhase()).phase).toBe('dual_read');
    const [newRow] = await env.storedPersons('new', teamId, [secondCopiedId]);
    const [oldRow] = await env.storedPersons('old', teamId, [secondCopiedId]);
    expect(newRow?.version).toBe('2');
    expect(oldRow?.version).toBe('0');
    expect(oldRow?.properties).not.toHaveProperty('from_stale');
    expect((await writer.repo.fetchPerson(teamId, 'st-4'))?.version).toBe(2);
  });
});

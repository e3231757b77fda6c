import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { type PersonsRepository, UuidTakenError } from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';

describe.each(availableBackends())('writes in dual_read on %s', (backend) => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture;
  let repo: PersonsRepository;

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await fixture.drop();
  });

  async function dualRead(seed = 5) {
    fixture = await createMigrationFixture(handle, { seed, dualRead: true });
    repo = fixture.migration.repository();
    return fixture.seededIds;
  }

  async function distinctIdsOf(personId: string): Promise<string[]> {
    const { rows } = await sql<{ distinct_id: string }>`
      SELECT distinct_id FROM ${sql.id(fixture.schema, 'posthog_persondistinctid')}
      WHERE person_id = ${personId}::bigint ORDER BY distinct_id`.execute(handle.db);
    return rows.map((r) => r.distinct_id);
  }

  it('createPerson writes to the new table only, with an id from the old sequence', async () => {
    const seeded = await dualRead();
    const created = await repo.createPerson({
      teamId: 1,
      distinctIds: ['a', { distinctId: 'b', version: 3 }],
      properties: { plan: 'free' },
      isIdentified: true,
    });
    if (created.status !== 'created') throw new Error('expected created');
    expect(BigInt(created.person.id)).toBeGreaterThan(BigInt(seeded.at(-1) ?? 0));
    expect(created.person).toMatchObject({ team_id: 1, version: 0, is_identified: true });
    expect(await fixture.rowsIn('new', created.person.id)).toHaveLength(1);
    expect(await fixture.rowsIn('old', created.person.id)).toHaveLength(0);
    expect(await distinctIdsOf(created.person.id)).toEqual(['a', 'b']);
  });

  it('createPerson with a taken distinct id returns a conflict and writes nothing', async () => {
    await dualRead();
    const before = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM ${fixture.newTable()}`.execute(handle.db);
    const result = await repo.createPerson({ teamId: 1, distinctIds: ['fresh', 'seed-2'] });
    expect(result).toEqual({ status: 'conflict', distinctIds: ['seed-2'] });
    const after = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM ${fixture.newTable()}`.execute(handle.db);
    expect(after.rows[0]?.n).toBe(before.rows[0]?.n);
    expect(await repo.fetchPerson(1, 'fresh')).toBeUndefined();
  });

  it('a creation conflict inside inTransaction leaves the rest of the transaction intact', async () => {
    const [first = ''] = await dualRead();
    const outcome = await repo.inTransaction(async (tx) => {
      await tx.updatePerson(1, first, { properties: { step: 1 } });
      const conflict = await tx.createPerson({ teamId: 1, distinctIds: ['seed-3'] });
      const created = await tx.createPerson({ teamId: 1, distinctIds: ['other'] });
      return [conflict.status, created.status];
    });
    expect(outcome).toEqual(['conflict', 'created']);
    expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({
      version: 1,
      properties: { step: 1 },
    });
    expect(await repo.fetchPerson(1, 'other')).toBeDefined();
  });

  it('createPerson refuses the uuid of a person in the old table, and that person stays updatable', async () => {
    const [first = ''] = await dualRead();
    const old = await repo.fetchPerson(1, 'seed-1');
    const error = await repo
      .createPerson({ teamId: 1, uuid: String(old?.uuid), distinctIds: ['dup'] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UuidTakenError);
    expect(error).toMatchObject({ code: 'UUID_TAKEN' });
    expect(await repo.fetchPerson(1, 'dup')).toBeUndefined();
    expect(await repo.updatePerson(1, first, { isIdentified: true })).toMatchObject({ version: 1 });
  });

  it('updatePerson copies an old-only person, continues its version and sets and unsets properties', async () => {
    const [first = ''] = await dualRead();
    await sql`UPDATE ${fixture.oldTable()} SET version = 41 WHERE id = ${first}::bigint`.execute(
      handle.db,
    );
    const updated = await repo.updatePerson(1, first, {
      properties: { plan: 'paid' },
      unsetProperties: ['email'],
      isIdentified: true,
      propertiesLastUpdatedAt: { plan: '2026-01-01' },
    });
    expect(updated).toMatchObject({ id: first, version: 42, is_identified: true });
    expect(updated?.properties).toEqual({ n: 1, plan: 'paid' });
    expect(updated?.properties_last_updated_at).toEqual({ plan: '2026-01-01' });
    expect(await fixture.rowsIn('old', first)).toEqual([expect.objectContaining({ version: 41 })]);
    expect(await repo.updatePerson(1, '424242', { properties: { a: 1 } })).toBeUndefined();
  });

  it('updatePersonAssertVersion updates at the expected version and reports no_match otherwise', async () => {
    const [first = ''] = await dualRead();
    expect(await repo.updatePersonAssertVersion(1, first, 3, { properties: { a: 1 } })).toEqual({
      status: 'no_match',
    });
    const result = await repo.updatePersonAssertVersion(1, first, 0, { properties: { a: 1 } });
    expect(result).toMatchObject({ status: 'updated', person: { version: 1 } });
    expect(await repo.updatePersonAssertVersion(1, first, 0, { properties: { a: 2 } })).toEqual({
      status: 'no_match',
    });
    expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({ version: 1, properties: { a: 1 } });
  });

  it('deletePerson removes a copied person from both tables with its distinct ids', async () => {
    const [first = '', second = ''] = await dualRead();
    await repo.updatePerson(1, first, { properties: { a: 1 } });
    expect(await repo.deletePerson(1, first)).toBe(true);
    expect(await repo.deletePerson(1, second)).toBe(true);
    for (const id of [first, second]) {
      expect(await fixture.rowsIn('old', id)).toEqual([]);
      expect(await fixture.rowsIn('new', id)).toEqual([]);
      expect(await distinctIdsOf(id)).toEqual([]);
    }
    expect(await repo.fetchPerson(1, 'seed-1')).toBeUndefined();
    expect(await repo.countPersons(1)).toBe(3);
    expect(await repo.deletePerson(1, first)).toBe(false);
  });

  it('addDistinctId attaches to an existing person and refuses a taken id or a missing person', async () => {
    const [first = ''] = await dualRead();
    expect(await repo.addDistinctId(1, first, 'alias', 2)).toEqual({ status: 'added' });
    expect(await repo.addDistinctId(1, first, 'seed-2')).toEqual({ status: 'conflict' });
    expect(await repo.addDistinctId(1, '777777', 'x')).toEqual({ status: 'person_not_found' });
    expect(await distinctIdsOf(first)).toEqual(['alias', 'seed-1']);
    expect(await fixture.rowsIn('new', first)).toHaveLength(1);
  });

  it('a merge moves every distinct id to the target, and deleting the source leaves it gone', async () => {
    const [first = '', second = ''] = await dualRead();
    await repo.addDistinctId(1, first, 'alias');
    const moved = await repo.moveDistinctIds(1, first, second);
    expect(moved).toEqual({ status: 'moved', distinctIds: ['alias', 'seed-1'] });
    expect(await repo.deletePerson(1, first)).toBe(true);
    expect(await distinctIdsOf(second)).toEqual(['alias', 'seed-1', 'seed-2']);
    expect((await repo.fetchPerson(1, 'seed-1'))?.id).toBe(second);
    expect(await repo.moveDistinctIds(1, second, '888888')).toEqual({ status: 'target_not_found' });
    expect(await distinctIdsOf(second)).toHaveLength(3);
  });

  it('inTransaction rolls back every write, copies included, when the function throws', async () => {
    const [first = ''] = await dualRead();
    await expect(
      repo.inTransaction(async (tx) => {
        await tx.updatePerson(1, first, { properties: { a: 1 } });
        await tx.createPerson({ teamId: 1, distinctIds: ['rolled-back'] });
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await fixture.rowsIn('new', first)).toEqual([]);
    expect(await repo.fetchPerson(1, 'rolled-back')).toBeUndefined();
    expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({ version: 0 });
  });
});

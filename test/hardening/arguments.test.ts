import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { InvalidOptionsError, type PersonsRepository } from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';
import { everythingIn, offlineMigration, personsSnapshot } from './argument-support.js';

/** The rejection of `promise` (fails the test when it resolves). */
async function refusal(promise: Promise<unknown>): Promise<InvalidOptionsError> {
  const error = await promise.then(
    () => {
      throw new Error('expected the call to be refused');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(InvalidOptionsError);
  return error as InvalidOptionsError;
}

describe.each(availableBackends())(
  'caller input is checked before any statement on %s',
  (backend) => {
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

    async function dualRead(): Promise<string[]> {
      fixture = await createMigrationFixture(handle, { seed: 3, dualRead: true });
      repo = fixture.migration.repository();
      return fixture.seededIds;
    }

    async function personWithAB(): Promise<string> {
      const created = await repo.createPerson({
        teamId: 1,
        distinctIds: ['ab-person'],
        properties: { a: 1, b: 2, ab: 3 },
      });
      if (created.status !== 'created') throw new Error('expected created');
      return created.person.id;
    }

    it("unsetProperties: 'ab' is refused naming it, and does not delete the keys a and b", async () => {
      await dualRead();
      const id = await personWithAB();
      const before = await personsSnapshot(handle, fixture);
      const error = await refusal(
        repo.updatePerson(1, id, { unsetProperties: 'ab' as unknown as string[] }),
      );
      expect(error.code).toBe('INVALID_OPTIONS');
      expect(error.issues[0]?.path).toBe('update.unsetProperties');
      expect(error.message).toContain('must be an array of property names');
      expect(await repo.fetchPerson(1, 'ab-person')).toMatchObject({
        version: 0,
        properties: { a: 1, b: 2, ab: 3 },
      });
      expect(await personsSnapshot(handle, fixture)).toEqual(before);
      // The array form still works.
      expect(await repo.updatePerson(1, id, { unsetProperties: ['ab'] })).toMatchObject({
        version: 1,
        properties: { a: 1, b: 2 },
      });
    });

    it('BigInt, circular, NaN and function properties are refused naming the argument, nothing written', async () => {
      const [first = ''] = await dualRead();
      const circular: Record<string, unknown> = { a: 1 };
      circular.self = circular;
      const before = await personsSnapshot(handle, fixture);
      const cases: [Record<string, unknown>, string][] = [
        [{ seats: 10n }, 'BigInt'],
        [circular, 'circular'],
        [{ nested: { score: Number.NaN } }, 'NaN'],
        [{ callback: () => 1 }, 'function'],
        [{ tags: new Set(['a']) }, 'plain objects'],
      ];
      for (const [properties, problem] of cases) {
        const updated = await refusal(repo.updatePerson(1, first, { properties }));
        expect(updated.issues[0]?.path, problem).toBe('update.properties');
        expect(updated.message, problem).toContain(problem);
        const created = await refusal(
          repo.createPerson({ teamId: 1, distinctIds: ['new-one'], properties }),
        );
        expect(created.issues[0]?.path, problem).toBe('input.properties');
      }
      const lastUpdated = await refusal(
        repo.updatePerson(1, first, { propertiesLastUpdatedAt: { at: 1n } }),
      );
      expect(lastUpdated.issues[0]?.path).toBe('update.propertiesLastUpdatedAt');
      expect(await personsSnapshot(handle, fixture)).toEqual(before);
      expect(await repo.fetchPerson(1, 'new-one')).toBeUndefined();
    });

    it('distinctIds that is not an array is refused naming it, nothing written', async () => {
      await dualRead();
      const before = await personsSnapshot(handle, fixture);
      for (const distinctIds of ['anon-1', { 0: 'anon-1', length: 1 }, null, 42, [42], [['x']]]) {
        const error = await refusal(
          repo.createPerson({ teamId: 1, distinctIds: distinctIds as unknown as string[] }),
        );
        expect(error.issues[0]?.path, JSON.stringify(distinctIds)).toMatch(/^input\.distinctIds/);
      }
      const pairs = await refusal(
        repo.fetchPersonsByDistinctIds(
          'seed-1' as unknown as { teamId: number; distinctId: string }[],
        ),
      );
      expect(pairs.issues[0]?.path).toBe('pairs');
      expect(await personsSnapshot(handle, fixture)).toEqual(before);
    });

    it('a person id given as an array or an object is refused, not read as its string form', async () => {
      const [first = ''] = await dualRead();
      const before = await personsSnapshot(handle, fixture);
      // String([id]) === id: the person would have been deleted.
      await refusal(repo.deletePerson(1, [first] as unknown as string));
      await refusal(repo.deletePerson(1, { toString: () => first } as unknown as string));
      const outOfRange = await refusal(repo.deletePerson(1, '9999999999999999999'));
      expect(outOfRange.message).toContain('bigint (int8)');
      expect(await personsSnapshot(handle, fixture)).toEqual(before);
    });

    it('a distinct id Postgres cannot store is refused up front, so the caller transaction goes on', async () => {
      const [first = ''] = await dualRead();
      const longId = 'x'.repeat(401);
      const outcome = await repo.inTransaction(async (tx) => {
        await tx.updatePerson(1, first, { properties: { step: 1 } });
        const error = await tx
          .createPerson({ teamId: 1, distinctIds: [longId] })
          .catch((e: unknown) => e);
        const nul = await tx.addDistinctId(1, first, 'a\u0000b').catch((e: unknown) => e);
        await tx.updatePerson(1, first, { properties: { step: 2 } });
        return [error, nul];
      });
      expect(outcome[0]).toBeInstanceOf(InvalidOptionsError);
      expect((outcome[0] as InvalidOptionsError).message).toContain('at most 400 characters');
      expect(outcome[1]).toBeInstanceOf(InvalidOptionsError);
      expect(await repo.fetchPerson(1, 'seed-1')).toMatchObject({
        version: 2,
        properties: { step: 2 },
      });
      // 400 characters (not UTF-16 units) is within the column.
      const emoji = '😀'.repeat(400);
      expect(await repo.createPerson({ teamId: 1, distinctIds: [emoji] })).toMatchObject({
        status: 'created',
      });
    });

    it('an update or options object with an unknown key is refused (a typo must not bump the version)', async () => {
      const [first = ''] = await dualRead();
      const before = await personsSnapshot(handle, fixture);
      const typo = await refusal(
        repo.updatePerson(1, first, { isIdentifed: true } as unknown as { isIdentified: boolean }),
      );
      expect(typo.message).toContain('unknown key(s) isIdentifed');
      await refusal(repo.listPersons(1, { limt: 5 } as unknown as { limit: number }));
      await refusal(repo.fetchPerson(1, 'seed-1', { forUpdate: 'yes' as unknown as boolean }));
      await refusal(repo.fetchPerson(1, 'seed-1', null as unknown as { forUpdate: boolean }));
      await refusal(repo.inTransaction('not a function' as never));
      expect(await personsSnapshot(handle, fixture)).toEqual(before);
    });

    it('createdAt takes a Date or an ISO timestamp with a zone, and refuses a day that does not exist', async () => {
      await dualRead();
      await refusal(
        repo.createPerson({ teamId: 1, distinctIds: ['d1'], createdAt: '2024-02-30T00:00:00Z' }),
      );
      await refusal(
        repo.createPerson({ teamId: 1, distinctIds: ['d1'], createdAt: new Date(Number.NaN) }),
      );
      await refusal(repo.createPerson({ teamId: 1, distinctIds: ['d1'], createdAt: '2024-02-01' }));
      const created = await repo.createPerson({
        teamId: 1,
        distinctIds: ['d1'],
        createdAt: '2024-02-29T23:30:00+02:00',
      });
      if (created.status !== 'created') throw new Error('expected created');
      expect((created.person.created_at as Date).toISOString()).toBe('2024-02-29T21:30:00.000Z');
    });

    it('mismatches() with options that are not an object is an InvalidOptionsError, not a TypeError', async () => {
      await dualRead();
      const pages = fixture.migration.mismatches('1', null as never);
      const error = await refusal(pages.next());
      expect(error.issues[0]?.path).toBe('options');
      await refusal(fixture.migration.mismatches('1', { includeRepaired: 'yes' as never }).next());
    });

    it('no message echoes the refused value', async () => {
      const [first = ''] = await dualRead();
      const secret = 'alice@example.com';
      const errors = await Promise.all([
        refusal(repo.fetchPerson(1, `${secret}\u0000`)),
        refusal(repo.updatePerson(1, first, { properties: { email: `${secret}\ud800` } })),
        refusal(repo.updatePerson(1, first, { unsetProperties: secret as never })),
        refusal(repo.deletePerson(1, secret)),
        refusal(repo.fetchPersonByUuid(1, secret)),
      ]);
      for (const error of errors) expect(everythingIn(error)).not.toContain(secret);
    });
  },
);

describe('bad arguments are refused without touching the database', () => {
  it('every check runs before the first statement (a database that fails any statement)', async () => {
    const offline = offlineMigration();
    const repo = offline.migration.repository();
    const calls: [string, () => Promise<unknown>][] = [
      ['unsetProperties', () => repo.updatePerson(1, '1', { unsetProperties: 'ab' as never })],
      ['properties', () => repo.updatePerson(1, '1', { properties: { n: 1n } })],
      ['distinctIds', () => repo.createPerson({ teamId: 1, distinctIds: 'a' as never })],
      ['pairs', () => repo.fetchPersonsByPersonIds({} as never)],
      ['distinctId', () => repo.fetchPerson(1, 42 as never)],
      ['version', () => repo.addDistinctId(1, '1', 'd', -1)],
      ['fn', () => repo.inTransaction(null as never)],
    ];
    for (const [name, call] of calls) {
      await expect(call(), name).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    expect(offline.attempts()).toBe(0);
    // The same database does fail a valid call: the checks above did not just get lucky.
    await expect(repo.countPersons(1)).rejects.not.toBeInstanceOf(InvalidOptionsError);
    expect(offline.attempts()).toBeGreaterThan(0);
    await offline.migration.close();
  });
});

describe('the checks accept what Postgres accepts', () => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture;
  beforeAll(async () => {
    handle = await openBackend('pglite');
    fixture = await createMigrationFixture(handle, { seed: 2, dualRead: true });
  });
  afterAll(async () => {
    await fixture.drop();
    await handle.close();
  });

  it('an empty distinct id, a null-prototype object, Dates, unicode keys and undefined values are fine', async () => {
    const repo = fixture.migration.repository();
    const properties = Object.assign(Object.create(null) as Record<string, unknown>, {
      'ключ.with dots; and "quotes"': '😀',
      when: new Date('2024-01-01T00:00:00Z'),
      skipped: undefined,
      list: [1, 'two', null, { three: true }],
    });
    const created = await repo.createPerson({ teamId: 1, distinctIds: [''], properties });
    if (created.status !== 'created') throw new Error('expected created');
    expect(created.person.properties).toEqual({
      'ключ.with dots; and "quotes"': '😀',
      when: '2024-01-01T00:00:00.000Z',
      list: [1, 'two', null, { three: true }],
    });
    expect(await repo.fetchPerson(1, '')).toMatchObject({ id: created.person.id });
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.id(fixture.schema, 'posthog_persondistinctid')}
      WHERE distinct_id = ''`.execute(handle.db);
    expect(rows[0]?.n).toBe(1);
  });
});

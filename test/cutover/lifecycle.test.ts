/**
 * Issue 14: cutover, rollback, finalize and dropRetiredTable, on PGlite and PostgreSQL 15:
 * every guard refuses with a typed error naming it (all at once) and changes nothing; a
 * rollback keeps every write made in `new`; finalize swaps the tables under the old name,
 * keeps the sequence, refuses what would follow the old table; the retired table is dropped
 * only when named.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { PhaseTransitionError, TransitionRefusedError } from '../../src/errors.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';

const refusal = async (promise: Promise<unknown>) => {
  const error = await promise.catch((e: unknown) => e);
  expect(error).toBeInstanceOf(TransitionRefusedError);
  return (error as TransitionRefusedError).unmet.map((g) => g.guard);
};

describe.each(availableBackends())('cutover, rollback and finalize on %s', (backend) => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture;

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await fixture.drop();
  });

  const phase = async () => (await fixture.migration.status()).phase;

  it('cutover refuses with every unmet guard at once, changing nothing, until each is met', async () => {
    fixture = await createMigrationFixture(handle, { seed: 20, dualRead: true });
    const { migration } = fixture;
    expect(await refusal(migration.cutover())).toEqual([
      'backfill_unfinished',
      'verification_missing',
    ]);
    expect((await migration.status()).cutoverGuards.map((g) => g.guard)).toEqual([
      'backfill_unfinished',
      'verification_missing',
    ]);
    // force cannot waive the backfill's guard
    expect(await refusal(migration.cutover({ force: true }))).toContain('backfill_unfinished');
    await migration.verify(); // before the backfill: stale (and unclean)
    await migration.backfill({ workers: 1, batchSize: 7 });
    expect(await refusal(migration.cutover())).toEqual(
      expect.arrayContaining(['verification_stale']),
    );
    expect(await phase()).toBe('dual_read');
    await migration.verify();
    expect((await migration.status()).cutoverGuards).toEqual([]);
    await expect(migration.cutover({ actor: 'test' })).resolves.toMatchObject({ phase: 'new' });
    const error = await migration.cutover().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PhaseTransitionError);
    expect((await migration.status()).history[0]).toMatchObject({
      from: 'dual_read',
      to: 'new',
      actor: 'test',
      forced: [],
    });
  });

  it('a write to the old table from outside the library is recorded and blocks the cutover; force records the waiver', async () => {
    fixture = await createMigrationFixture(handle, { seed: 5, dualRead: true });
    const { migration } = fixture;
    await migration.backfill({ workers: 1 });
    const [id] = fixture.seededIds;
    // A library delete of an old row is not a stray write.
    await migration.repository().deletePerson(1, fixture.seededIds[4] as string);
    await sql`UPDATE ${fixture.oldTable()} SET properties = '{"stray": true}' WHERE id = ${id}::bigint`.execute(
      handle.db,
    );
    expect((await migration.verify({ repair: true })).strayWrites).toBe(1);
    const { strayWrites } = await migration.status();
    expect(strayWrites.count).toBe(1);
    expect(strayWrites.keys[0]).toMatchObject({ teamId: 1, personId: id, operation: 'update' });
    // The stray update also made the tables disagree: verify says so too.
    expect(await refusal(migration.cutover())).toEqual(['verification_unclean', 'stray_writes']);
    // A TRUNCATE has no rows: it is recorded under the key (0, 0).
    await sql`TRUNCATE ${sql.id(fixture.schema, 'posthog_person')} CASCADE`.execute(handle.db);
    expect((await migration.status()).strayWrites.keys[0]).toMatchObject({
      operation: 'truncate',
      teamId: 0,
      personId: '0',
    });
    await migration.cutover({ force: true, actor: 'ops:test' });
    expect((await migration.status()).history[0]).toMatchObject({
      to: 'new',
      actor: 'ops:test',
      forced: ['verification_unclean', 'stray_writes'],
    });
  });

  it('a rollback keeps every create, update, merge, distinct id and delete made in new', async () => {
    fixture = await createMigrationFixture(handle, { seed: 6, dualRead: true });
    const { migration, seededIds } = fixture;
    const repo = migration.repository();
    await migration.backfill({ workers: 1 });
    await migration.verify();
    await migration.cutover();
    const created = await repo.createPerson({
      teamId: 1,
      distinctIds: ['in-new'],
      properties: { a: 1 },
    });
    if (created.status !== 'created') throw new Error('not created');
    await repo.updatePerson(1, seededIds[0] as string, { properties: { updatedInNew: true } });
    expect(await repo.deletePerson(1, seededIds[1] as string)).toBe(true);
    await repo.addDistinctId(1, seededIds[2] as string, 'added-in-new');
    await repo.moveDistinctIds(1, seededIds[3] as string, seededIds[4] as string);
    await repo.deletePerson(1, seededIds[3] as string);
    await migration.rollback({ actor: 'test' });
    expect(await phase()).toBe('dual_read');
    expect(await repo.fetchPerson(1, 'in-new')).toMatchObject({ properties: { a: 1 } });
    expect(
      await repo.fetchPersonsByPersonIds([{ teamId: 1, personId: seededIds[0] as string }]),
    ).toMatchObject([{ properties: { updatedInNew: true } }]);
    expect(
      await repo.fetchPersonsByPersonIds([{ teamId: 1, personId: seededIds[1] as string }]),
    ).toEqual([]);
    expect(
      await repo.fetchPersonsByPersonIds([{ teamId: 1, personId: seededIds[3] as string }]),
    ).toEqual([]);
    expect(await repo.fetchPerson(1, 'added-in-new')).toMatchObject({ id: seededIds[2] });
    expect(await repo.fetchPerson(1, 'seed-4')).toMatchObject({ id: seededIds[4] });
    expect(await repo.countPersons(1)).toBe(5);
    expect((await migration.verify()).clean).toBe(true);
  });

  it('finalize refuses from dual_read and with a view on the old table; swaps the tables; the sequence outlives the retired table', async () => {
    fixture = await createMigrationFixture(handle, { seed: 4, dualRead: true });
    const { migration, schema } = fixture;
    const repo = migration.repository();
    expect(await migration.finalize().catch((e: unknown) => e)).toBeInstanceOf(
      PhaseTransitionError,
    );
    await migration.backfill({ workers: 1 });
    await migration.verify();
    await migration.cutover();
    const created = await repo.createPerson({ teamId: 1, distinctIds: ['before-finalize'] });
    if (created.status !== 'created') throw new Error('not created');
    await sql`CREATE VIEW ${sql.id(schema, 'persons_view')} AS SELECT id FROM ${fixture.oldTable()}`.execute(
      handle.db,
    );
    expect(await refusal(migration.finalize())).toEqual([`view:${schema}.persons_view`]);
    expect(await phase()).toBe('new');
    await sql`DROP VIEW ${sql.id(schema, 'persons_view')}`.execute(handle.db);
    const finalized = await migration.finalize({ actor: 'test' });
    expect(finalized).toMatchObject({ phase: 'finalized', retiredTable: 'posthog_person_retired' });
    const status = await migration.status();
    expect(status).toMatchObject({
      phase: 'finalized',
      retiredTable: `${schema}.posthog_person_retired`,
    });
    // The old name is the consolidated table: it holds the person created in new.
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${fixture.oldTable()}
      WHERE id = ${created.person.id}::bigint`.execute(handle.db);
    expect(rows[0]?.n).toBe(1);
    expect(await repo.fetchPerson(1, 'before-finalize')).toMatchObject({ id: created.person.id });
    // The consolidated table's indexes (and key constraint) carry the old table's names; the
    // retired table's moved aside.
    const indexes = async (table: string) =>
      (
        await sql<{ name: string }>`SELECT indexname::text AS name FROM pg_indexes
          WHERE schemaname = ${schema} AND tablename = ${table} ORDER BY 1`.execute(handle.db)
      ).rows.map((r) => r.name);
    const consolidated = await indexes('posthog_person');
    expect(consolidated).toContain('posthog_person_pkey');
    expect(consolidated.filter((name) => name.includes('posthog_person_new'))).toEqual([]);
    expect(await indexes('posthog_person_retired')).toContain('posthog_person_pkey_retired');
    const { rows: keys } = await sql<{ name: string }>`SELECT conname::text AS name
      FROM pg_constraint WHERE contype = 'p' AND conrelid = ${`"${schema}"."posthog_person"`}::regclass`.execute(
      handle.db,
    );
    expect(keys.map((k) => k.name)).toEqual(['posthog_person_pkey']);
    // The runtime role's grants name the consolidated table, not the gone new name.
    const grants = (await migration.runtimeGrants('persons_service')).join('\n');
    expect(grants).toContain(`"${schema}"."posthog_person"`);
    expect(grants).not.toContain('posthog_person_new');
    expect(await migration.rollback().catch((e: unknown) => e)).toBeInstanceOf(
      PhaseTransitionError,
    );
    expect(await refusal(migration.dropRetiredTable({ confirm: 'posthog_person' }))).toEqual([
      'confirm_mismatch',
    ]);
    await expect(
      migration.dropRetiredTable({ confirm: 'posthog_person_retired' }),
    ).resolves.toEqual({
      dropped: `${schema}.posthog_person_retired`,
    });
    const after = await repo.createPerson({ teamId: 1, distinctIds: ['after-drop'] });
    expect(after.status).toBe('created');
    if (after.status === 'created')
      expect(BigInt(after.person.id)).toBeGreaterThan(BigInt(created.person.id));
    expect(await repo.countPersons(1)).toBe(6);
  });
});

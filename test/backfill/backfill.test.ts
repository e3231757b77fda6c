import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { planBackfill } from '../../src/backfill/backfill-plan.js';
import { RangeStore } from '../../src/backfill/range-store.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { BackfillDataError, BackfillRefusedError } from '../../src/index.js';
import { resolveMigrationOptions } from '../../src/options/migration-options.js';
import { loadPersonColumns } from '../../src/persons/person-columns.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';

describe.each(availableBackends())('backfill on %s', (backend) => {
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

  /** Rows of a table as `id:version`, sorted, straight from SQL. */
  async function contents(table: 'old' | 'new'): Promise<string[]> {
    const ref = table === 'old' ? fixture.oldTable() : fixture.newTable();
    const { rows } = await sql<{ key: string }>`
      SELECT id::text || ':' || COALESCE(version, 0)::text || ':' || md5(properties::text) AS key
      FROM ${ref} ORDER BY id`.execute(handle.db);
    return rows.map((r) => r.key);
  }

  it('is refused before dual_read, with what to do, and copies nothing', async () => {
    fixture = await createMigrationFixture(handle, { seed: 5 });
    const error = await fixture.migration.backfill().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackfillRefusedError);
    expect((error as Error).message).toContain('startDualRead()');
    expect(await contents('new')).toEqual([]);
    expect(await fixture.migration.backfillStatus()).toBeUndefined();
  });

  it('copies every old row the new table lacks, keeps newer copies and deleted persons out', async () => {
    fixture = await createMigrationFixture(handle, { seed: 300, dualRead: true });
    const repo = fixture.migration.repository();
    const [first = '', second = '', third = ''] = fixture.seededIds;
    await repo.updatePerson(1, first, { properties: { plan: 'paid' } });
    await repo.updatePerson(1, first, { properties: { plan: 'team' } });
    await repo.deletePerson(1, second);
    await repo.updatePerson(1, third, { isIdentified: true });
    await repo.deletePerson(1, third);
    const created = await repo.createPerson({ teamId: 1, distinctIds: ['fresh'] });

    const result = await fixture.migration.backfill({ batchSize: 7, ranges: 4, workers: 2 });
    expect(result).toMatchObject({ finished: true, aborted: false, planned: true });
    expect(result.rowsScanned).toBe(298);
    expect(result.rowsCopied).toBe(297);

    const copied = await contents('new');
    const expected = [...(await contents('old'))];
    // The person updated through the repository keeps its newer copy (version 2).
    const updated = copied.find((k) => k.startsWith(`${first}:`));
    expect(updated?.split(':')[1]).toBe('2');
    expect(
      copied.filter(
        (k) =>
          !k.startsWith(`${first}:`) &&
          !k.startsWith(`${created.status === 'created' ? created.person.id : ''}:`),
      ),
    ).toEqual(expected.filter((k) => !k.startsWith(`${first}:`)));
    expect(copied.some((k) => k.startsWith(`${second}:`) || k.startsWith(`${third}:`))).toBe(false);
    expect(await repo.countPersons(1)).toBe(299);

    const status = await fixture.migration.backfillStatus();
    expect(status).toMatchObject({
      state: 'done',
      rowsScanned: 298,
      rowsCopied: 297,
      rowsToGo: 0,
      percent: 100,
    });
    expect(status?.ranges.every((r) => r.status === 'done')).toBe(true);
    expect((await fixture.migration.status()).backfill?.state).toBe('done');
  });

  it('resumes a finished plan as a no-op and refuses a second plan with other ranges', async () => {
    fixture = await createMigrationFixture(handle, { seed: 20, dualRead: true });
    await fixture.migration.backfill({ ranges: 2 });
    const again = await fixture.migration.backfill();
    expect(again).toMatchObject({ finished: true, planned: false, rowsScanned: 0 });
    const error = await fixture.migration.backfill({ ranges: 3 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BACKFILL_REFUSED' });
    expect((error as Error).message).toContain('resetBackfill()');
    await fixture.migration.resetBackfill();
    expect(await fixture.migration.backfillStatus()).toBeUndefined();
  });

  it.each(['ranges', 'rows'] as const)(
    'handles an empty table, a single row, a batch size of 1 and ids above 2^53 (lockMode %s)',
    async (lockMode) => {
      fixture = await createMigrationFixture(handle, { seed: 0, dualRead: true });
      expect(await fixture.migration.backfill({ lockMode })).toMatchObject({
        finished: true,
        rowsScanned: 0,
      });
      expect((await fixture.migration.backfillStatus())?.state).toBe('done');
      await fixture.drop();

      fixture = await createMigrationFixture(handle, { seed: 0, dualRead: true });
      await sql`INSERT INTO ${fixture.oldTable()} (id, team_id, uuid, version)
      VALUES (9007199254740993, 3, gen_random_uuid(), 4), (1, 2, gen_random_uuid(), 0),
             (9007199254740995, 3, gen_random_uuid(), 0)`.execute(handle.db);
      const result = await fixture.migration.backfill({
        batchSize: 1,
        targetBatchMs: 0,
        ranges: 2,
        lockMode,
      });
      expect(result).toMatchObject({ finished: true, rowsScanned: 3, rowsCopied: 3 });
      expect(await contents('new')).toEqual(await contents('old'));
      expect((await contents('new')).map((k) => k.split(':')[0])).toEqual([
        '1',
        '9007199254740993',
        '9007199254740995',
      ]);
    },
  );

  it.each(['ranges', 'rows'] as const)(
    'copies many teams of one person each and ids with gaps, every key exactly once (lockMode %s)',
    async (lockMode) => {
      fixture = await createMigrationFixture(handle, { seed: 0, dualRead: true });
      await sql`INSERT INTO ${fixture.oldTable()} (id, team_id, uuid, version)
      SELECT g * 1000 + (g % 7), g, gen_random_uuid(), g % 3
      FROM generate_series(1, 500) AS g`.execute(handle.db);
      const result = await fixture.migration.backfill({
        batchSize: 13,
        targetBatchMs: 0,
        ranges: 9,
        lockMode,
      });
      expect(result).toMatchObject({ finished: true, rowsScanned: 500, rowsCopied: 500 });
      expect(await contents('new')).toEqual(await contents('old'));
    },
  );

  it('plans ranges in numeric key order when text order differs (ids 8..12 and 95..105)', async () => {
    fixture = await createMigrationFixture(handle, { seed: 0, dualRead: true });
    // '9' > '10' as text: a plan sorted as text would cut overlapping or empty ranges, and a
    // "largest key" found as text ('99' in team 2) would leave 100..105 uncopied.
    await sql`INSERT INTO ${fixture.oldTable()} (id, team_id, uuid, version)
      SELECT g, CASE WHEN g < 50 THEN 1 ELSE 2 END, gen_random_uuid(), 0
      FROM (SELECT generate_series(8, 12) AS g UNION ALL SELECT generate_series(95, 105)) AS s`.execute(
      handle.db,
    );
    const result = await fixture.migration.backfill({ ranges: 5, batchSize: 2, targetBatchMs: 0 });
    expect(result).toMatchObject({ finished: true, rowsScanned: 16, rowsCopied: 16 });
    expect(await contents('new')).toEqual(await contents('old'));
    const ranges = (await fixture.migration.backfillStatus())?.ranges ?? [];
    expect(ranges.every((r) => r.rowsScanned <= r.rowsEstimated)).toBe(true);
  });

  it('a batch starts at the committed checkpoint, never at a stale one (a COMMIT whose reply was lost is not counted twice)', async () => {
    fixture = await createMigrationFixture(handle, { seed: 30, dualRead: true });
    const options = resolveMigrationOptions({
      db: handle,
      schema: fixture.schema,
      controlSchema: fixture.controlSchema,
    });
    await planBackfill(handle.db, options, 1, undefined);
    const store = new RangeStore(options, await loadPersonColumns(handle.db, options));
    const leased = await store.claim(handle.db, 'w1', 30_000);
    if (!leased) throw new Error('no range to lease');
    const settings = {
      limit: 10,
      leaseMs: 30_000,
      lockTimeoutMs: 0,
      lockMode: 'ranges',
      arbiter: 'when-needed',
    } as const;
    const first = await store.batch(handle.db, 'w1', leased, settings);
    expect(first).toMatchObject({ kind: 'copied', scanned: 10, copied: 10 });
    const last = first.kind === 'copied' ? first.last : undefined;
    // The worker did not hear of the first batch and sends it again from where it started.
    const stale = await store.batch(handle.db, 'w1', leased, settings);
    expect(stale).toEqual({ kind: 'moved', after: last, end: leased.end });
    expect((await fixture.migration.backfillStatus())?.rowsScanned).toBe(10);
    const next = await store.batch(
      handle.db,
      'w1',
      { ...leased, after: last },
      { ...settings, lockMode: 'rows' },
    );
    expect(next).toMatchObject({ kind: 'copied', scanned: 10, copied: 10 });
    expect((await fixture.migration.backfillStatus())?.rowsScanned).toBe(20);
    expect(await contents('new')).toHaveLength(20);
  });

  it.each([
    {
      kind: 'CHECK',
      sqlState: '23514',
      constraint: 'version_below_1000',
      add: sql`ADD CONSTRAINT version_below_1000 CHECK (version < 1000)`,
      spoil: sql`version = 5000`,
      fix: sql`version = 7`,
    },
    {
      kind: 'NOT NULL',
      sqlState: '23502',
      constraint: 'is_user_id',
      add: sql`ALTER COLUMN is_user_id SET NOT NULL`,
      spoil: sql`is_user_id = NULL`,
      fix: sql`is_user_id = 0`,
    },
  ])(
    'an old row violating a $kind constraint of the new table stops the backfill at once with the constraint, the range and the listing of its key; it finishes after the fix',
    async ({ sqlState, constraint, add, spoil, fix }) => {
      fixture = await createMigrationFixture(handle, { seed: 20, dualRead: true });
      await sql`UPDATE ${fixture.oldTable()} SET is_user_id = 0`.execute(handle.db);
      await sql`ALTER TABLE ${fixture.newTable()} ${add}`.execute(handle.db);
      const { rows } = await sql<{ id: string }>`
      UPDATE ${fixture.oldTable()} SET ${spoil}
      WHERE id = (SELECT id FROM ${fixture.oldTable()} ORDER BY id OFFSET 12 LIMIT 1)
      RETURNING id::text`.execute(handle.db);
      const spoilt = rows[0]?.id as string;
      const retries: number[] = [];
      fixture.migration.events.on('backfill:retry', ({ attempt }) => retries.push(attempt));
      const error = await fixture.migration
        .backfill({ workers: 1, ranges: 1, batchSize: 5, targetBatchMs: 0, retryBaseMs: 1 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BackfillDataError);
      expect(error).toMatchObject({ code: 'BACKFILL_DATA', sqlState, constraint, rangeId: 1 });
      expect(retries).toEqual([]);
      const { rows: listed } = await sql
        .raw<{ id: string }>((error as BackfillDataError).listing)
        .execute(handle.db);
      expect(listed.map((r) => String(r.id))).toEqual([spoilt]);
      expect((await fixture.migration.backfillStatus())?.rowsScanned).toBe(10);

      await sql`UPDATE ${fixture.oldTable()} SET ${fix} WHERE id = ${spoilt}::bigint`.execute(
        handle.db,
      );
      expect(await fixture.migration.backfill()).toMatchObject({ finished: true, rowsScanned: 10 });
      expect(await contents('new')).toEqual(await contents('old'));
    },
  );

  it("a different person holding an old person's uuid in the new table: the backfill stops at once naming the index, the range and the listing, never a value, and resumes once it is gone", async () => {
    fixture = await createMigrationFixture(handle, { seed: 20, dualRead: true });
    const { rows } = await sql<{ uuid: string; id: string }>`
      SELECT o.uuid::text, o.id::text FROM ${fixture.oldTable()} AS o ORDER BY o.id OFFSET 10 LIMIT 1`.execute(
      handle.db,
    );
    const uuid = rows[0]?.uuid as string;
    const oldId = rows[0]?.id as string;
    await sql`INSERT INTO ${fixture.newTable()} (id, team_id, uuid, version)
      VALUES (999999, 1, ${uuid}::uuid, 0)`.execute(handle.db);
    const retries: number[] = [];
    fixture.migration.events.on('backfill:retry', ({ attempt }) => retries.push(attempt));
    const error = await fixture.migration
      .backfill({
        workers: 1,
        ranges: 1,
        batchSize: 5,
        targetBatchMs: 0,
        maxRetries: 2,
        retryBaseMs: 1,
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackfillDataError);
    expect(error).toMatchObject({
      code: 'BACKFILL_DATA',
      sqlState: '23505',
      rangeId: 1,
      constraint: 'posthog_person_new_team_id_uuid_key',
    });
    expect((error as Error).message).not.toContain(uuid);
    expect((error as Error).message).toContain('range 1');
    expect(retries).toEqual([]);
    // The listing names the key at fault and the person holding its uuid.
    const { rows: listed } = await sql
      .raw<{ id: string; holder_id: string }>((error as BackfillDataError).listing)
      .execute(handle.db);
    expect(listed.map((r) => [String(r.id), String(r.holder_id)])).toEqual([
      [String(oldId), '999999'],
    ]);
    // The batches before the conflict committed; the one with the conflict did not.
    expect((await fixture.migration.backfillStatus())?.rowsScanned).toBe(10);

    await sql`DELETE FROM ${fixture.newTable()} WHERE id = 999999`.execute(handle.db);
    expect(await fixture.migration.backfill()).toMatchObject({ finished: true, rowsScanned: 10 });
    expect(await contents('new')).toEqual(await contents('old'));
  });

  it('refuses invalid options naming the option', async () => {
    fixture = await createMigrationFixture(handle, { seed: 1, dualRead: true });
    for (const [options, message] of [
      [{ batchSize: 0 }, 'batchSize must be an integer from 1 to 100000'],
      [{ workers: 100 }, 'workers must be an integer from 1 to 64'],
      [{ leaseMs: 10 }, 'leaseMs must be an integer from 200 to 3600000'],
      [{ batchSize: 500, maxBatchSize: 100 }, 'batchSize must not exceed maxBatchSize'],
      [{ speed: 'fast' }, 'unknown option(s) speed'],
      [{ lockMode: 'table' }, "lockMode must be 'ranges' or 'rows'"],
    ] as const) {
      await expect(fixture.migration.backfill(options as never)).rejects.toThrow(message);
    }
    expect(await fixture.migration.backfillStatus()).toBeUndefined();
  });
});

/**
 * Proof of `verify({ repair: true })`: it copies the missing rows and overwrites the stale ones
 * (and nothing else), says what it changed, and, on a real server, never brings back a person
 * deleted through the repository while it runs (the backfill's race protocol: old rows read
 * `FOR SHARE` in the transaction that copies them; a delete removes the old row first).
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import type { VerifyOptions } from '../../src/index.js';
import {
  Gate,
  MigrationEnv,
  openAllGates,
  openRawSession,
  type ServiceInstance,
  seededRandom,
  shuffle,
  testSeed,
  track,
} from '../support/concurrency.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, describeOnRealServer, openBackend } from '../support/test-database.js';
import { byKey, key, streamed } from './verify-support.js';

const methods: Record<'join' | 'checksum', VerifyOptions> = {
  join: { method: 'join', chunkRows: 1_000, settleMs: 0 },
  checksum: { method: 'checksum', chunkRows: 1_000, leafRows: 16, fanout: 4, settleMs: 0 },
};

/** Every column of the rows of `ids`, as JSON, from the old or the new table. */
async function rowsAsJson(
  f: MigrationFixture,
  which: 'old' | 'new',
  ids: readonly string[],
): Promise<Record<string, unknown>> {
  const table = which === 'old' ? f.oldTable() : f.newTable();
  const { rows } = await sql<{ id: string; row: unknown }>`
    SELECT t.id::text AS id, to_jsonb(t) AS row FROM ${table} AS t
    WHERE t.id = ANY(${ids}::bigint[]) ORDER BY t.id`.execute(f.handle.db);
  return Object.fromEntries(rows.map((r) => [r.id, r.row]));
}

describe.each(availableBackends())('verify({ repair: true }) on %s', (backend) => {
  let handle: DatabaseHandle;
  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle?.close();
  });

  it.each(Object.keys(methods) as (keyof typeof methods)[])(
    'copies missing rows and updates stale ones, leaves content_differs and resurrected keys alone, and the next run is clean but for those (%s)',
    async (name) => {
      const f = await createMigrationFixture(handle, { seed: 1_000, dualRead: true });
      try {
        const db = handle.db;
        await f.migration.backfill();
        const at = (i: number) => f.seededIds[i] as string;
        const missing = [at(10), at(800)];
        const stale = [at(20), at(500)];
        const changed = at(30);
        const resurrected = at(40);
        await sql`DELETE FROM ${f.newTable()} WHERE id = ANY(${missing}::bigint[])`.execute(db);
        await sql`UPDATE ${f.oldTable()} SET version = 2, properties = properties || '{"plan":"paid"}'
        WHERE id = ANY(${stale}::bigint[])`.execute(db);
        await sql`UPDATE ${f.newTable()} SET properties = properties || '{"plan":"team"}'
        WHERE id = ${changed}::bigint`.execute(db);
        const saved = sql.id(f.schema, 'saved_copy');
        await sql`CREATE TABLE ${saved} AS SELECT * FROM ${f.newTable()} WHERE id = ${resurrected}::bigint`.execute(
          db,
        );
        expect(await f.migration.repository().deletePerson(1, resurrected)).toBe(true);
        await sql`INSERT INTO ${f.newTable()} SELECT * FROM ${saved}`.execute(db);
        const untouched = await rowsAsJson(f, 'new', [changed, resurrected]);

        const result = await f.migration.verify({ ...methods[name], repair: true });
        expect(result.repair).toEqual({ copied: 2, updated: 2, skipped: 0 });
        const open = [
          key(1, changed, 'content_differs'),
          key(1, resurrected, 'person_without_distinct_id'),
          key(1, resurrected, 'resurrected'),
        ].sort(byKey);
        expect(result.keys).toEqual(open);
        expect(result).toMatchObject({ clean: false, mismatches: 2 });
        expect(result.counts).toMatchObject({
          content_differs: 1,
          resurrected: 1,
          person_without_distinct_id: 1,
        });
        expect(result.counts.missing_in_new).toBeUndefined();
        expect(result.counts.older_in_new).toBeUndefined();

        // The repaired rows are now the old rows, every column; the others were not touched.
        const repaired = [...missing, ...stale];
        expect(await rowsAsJson(f, 'new', repaired)).toEqual(await rowsAsJson(f, 'old', repaired));
        expect(await rowsAsJson(f, 'new', [changed, resurrected])).toEqual(untouched);

        const withRepaired = [
          ...open,
          ...missing.map((id) => key(1, id, 'missing_in_new', true)),
          ...stale.map((id) => key(1, id, 'older_in_new', true)),
        ].sort(byKey);
        expect(
          await streamed(f.migration, result.id, { includeRepaired: true, pageSize: 2 }),
        ).toEqual(withRepaired);
        expect(await streamed(f.migration, result.id, { pageSize: 2 })).toEqual(open);

        const next = await f.migration.verify(methods[name]);
        expect(next.keys).toEqual(open);
        expect(next).toMatchObject({ clean: false, mismatches: 2, repair: undefined });
        expect(next.counts).toEqual({
          same: 998, // 999 old rows (one deleted), one of them changed
          content_differs: 1,
          resurrected: 1,
          person_without_distinct_id: 1,
        });
      } finally {
        await f.drop();
      }
    },
  );

  it('before any backfill, repair copies every old row, a page of keys at a time, and the run is clean', async () => {
    const f = await createMigrationFixture(handle, { seed: 1_100, dualRead: true });
    try {
      const result = await f.migration.verify({ ...methods.join, repair: true, maxKeys: 10 });
      expect(result).toMatchObject({
        clean: true,
        mismatches: 0,
        keys: [],
        truncated: false,
        repair: { copied: 1_100, updated: 0, skipped: 0 },
      });
      expect(await f.migration.verification()).toMatchObject({ id: result.id, status: 'clean' });
      const all = await streamed(f.migration, result.id, { includeRepaired: true });
      expect(all).toEqual(f.seededIds.map((id) => key(1, id, 'missing_in_new', true)));
      expect(await rowsAsJson(f, 'new', f.seededIds)).toEqual(
        await rowsAsJson(f, 'old', f.seededIds),
      );
      const again = await f.migration.verify({ ...methods.checksum, repair: true });
      expect(again).toMatchObject({
        clean: true,
        counts: { same: 1_100 },
        repair: { copied: 0, updated: 0, skipped: 0 },
      });
    } finally {
      await f.drop();
    }
  });
});

describeOnRealServer('repair racing live writes (real server)', () => {
  let env: MigrationEnv | undefined;
  afterEach(async () => {
    openAllGates();
    await env?.close();
    env = undefined;
  });

  const insertOfNewRow = (e: MigrationEnv) => e.statementLike('repair-copy');
  const deleteOfOldRow = (e: MigrationEnv) => e.statementLike('delete-old-row');

  it('a delete holding the old row makes the repair wait, and the repair then copies nothing of the deleted person', async () => {
    env = await MigrationEnv.create('vrd');
    const e = env;
    const runner = await e.addInstance({ poolSize: 3 });
    const writer = await e.addInstance({ poolSize: 3 });
    const teamId = 51;
    const ids = await e.seed(teamId, 300, 'd');
    await e.control.startDualRead();
    const victim = ids[150] as string;

    const deleted = new Gate();
    const release = new Gate();
    const del = track(
      writer.repo.inTransaction(async (tx) => {
        const result = await tx.deletePerson(teamId, victim);
        deleted.open();
        await release.promise; // old row deleted, not committed
        return result;
      }),
    );
    await deleted.promise;
    const verify = track(runner.migration.verify({ settleMs: 0, repair: true }));
    expect(
      await e.waitForLockWaiters(insertOfNewRow(e), { giveUp: () => verify.settled }),
      'the repair waits for the delete',
    ).toBe(true);
    release.open();
    expect(await del.promise).toBe(true);
    const result = await verify.promise;
    expect(result.repair).toEqual({ copied: 299, updated: 0, skipped: 1 });
    expect(result.clean).toBe(true);
    expect(await e.storedPersons('old', teamId, [victim])).toEqual([]);
    expect(await e.storedPersons('new', teamId, [victim])).toEqual([]);
    for (const { repo } of e.instances) {
      expect(await repo.fetchPersonsByPersonIds([{ teamId, personId: victim }])).toEqual([]);
    }
    expect((await e.storedPersons('new', teamId, ids)).length).toBe(299);
    expect(await runner.migration.verify({ settleMs: 0 })).toMatchObject({ clean: true });
  });

  // The repair holds the old rows of a page FOR SHARE while it inserts their copies, like a
  // backfill batch; a merge copies its target into the new table, then deletes its source's
  // old row. Source and target in one page: the merge waits for the repair's FOR SHARE on the
  // source while the repair waits for the merge's uncommitted copy of the target. The backfill
  // gives way in that cycle (batchLockTimeoutMs, below deadlock_timeout, then a retry) so a
  // live write is never the deadlock victim; the repair must too.
  it('a merge racing a repair that holds both persons is never the deadlock victim: the repair gives way', async () => {
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < 3 && !outcomes.some((o) => o !== 'merged'); attempt++) {
      outcomes.push(await mergeRacingRepair());
      await env?.close();
      env = undefined;
    }
    expect(outcomes).toEqual(outcomes.map(() => 'merged'));
  });

  /** The merge's outcome ('merged' or its SQLSTATE), or the repair's when it failed instead. */
  async function mergeRacingRepair(): Promise<string> {
    env = await MigrationEnv.create('vrm');
    const e = env;
    const runner = await e.addInstance({ poolSize: 3 });
    const writer = await e.addInstance({ poolSize: 3 });
    const teamId = 52;
    const ids = await e.seed(teamId, 100, 'm');
    await e.control.startDualRead();
    await runner.migration.backfill();
    const [source, blocker, target] = [ids[10], ids[20], ids[30]] as [string, string, string];
    // Only these three keys are missing in the new table: the repair's one page.
    await sql`DELETE FROM ${sql.id(e.schema, 'posthog_person_new')}
      WHERE team_id = ${teamId} AND id = ANY(${[source, blocker, target]}::bigint[])`.execute(
      e.admin.db,
    );
    const raw = await openRawSession();
    try {
      await raw.query('BEGIN');
      await raw.query(
        `SELECT id FROM ${e.oldTableText} WHERE team_id = $1 AND id = $2 FOR UPDATE`,
        [teamId, blocker],
      );
      const moved = new Gate();
      const release = new Gate();
      const merge = track(
        writer.repo.inTransaction(async (tx) => {
          await tx.moveDistinctIds(teamId, source, target); // copies the target (uncommitted)
          moved.open();
          await release.promise;
          return tx.deletePerson(teamId, source);
        }),
      );
      await moved.promise;
      const verify = track(runner.migration.verify({ settleMs: 0, repair: true }));
      // The repair holds the source FOR SHARE and waits for the raw session on the blocker.
      expect(await e.waitForBlockedBy(raw.pid, { giveUp: () => verify.settled })).toBe(true);
      release.open();
      expect(
        await e.waitForLockWaiters(deleteOfOldRow(e), { giveUp: () => merge.settled }),
        'the merge waits for the repair',
      ).toBe(true);
      await raw.query('ROLLBACK');
      const outcome = await merge.promise.then(
        () => 'merged',
        (error: unknown) => `merge failed: ${(error as { sqlState?: string }).sqlState ?? error}`,
      );
      const repaired = await verify.promise.then(
        () => 'done',
        (error: unknown) => `verify failed: ${(error as { sqlState?: string }).sqlState ?? error}`,
      );
      if (outcome !== 'merged') return outcome;
      if (repaired !== 'done') return repaired;
      // Nothing resurrected, the target copied, the moved distinct id on the target.
      expect(await e.storedPersons('old', teamId, [source])).toEqual([]);
      expect(await e.storedPersons('new', teamId, [source])).toEqual([]);
      expect((await e.storedPersons('new', teamId, [target, blocker])).length).toBe(2);
      expect(await e.storedDistinctIds(teamId, [target])).toEqual([
        { distinct_id: 'm-11', person_id: target },
        { distinct_id: 'm-31', person_id: target },
      ]);
      expect(await runner.migration.verify({ settleMs: 0 })).toMatchObject({ clean: true });
      return outcome;
    } finally {
      await raw.end();
    }
  }

  it('a repair racing deletes of the same persons from two instances never resurrects a deleted person', {
    timeout: 60_000,
  }, async () => {
    env = await MigrationEnv.create('vrr');
    const e = env;
    const runner = await e.addInstance({ poolSize: 3 });
    const deleters = [await e.addInstance({ poolSize: 2 }), await e.addInstance({ poolSize: 2 })];
    const seed = testSeed();
    const random = seededRandom(seed);
    const rounds = 3;
    const perRound = 1_000;
    // Seeded before dual_read, so a copy of a deleted person would be classed resurrected.
    const teams = Array.from({ length: rounds }, (_, r) => 61 + r);
    const idsOf = new Map<number, string[]>();
    for (const teamId of teams) idsOf.set(teamId, await e.seed(teamId, perRound, `r${teamId}`));
    await e.control.startDualRead();
    await runner.migration.backfill();

    const context: string[] = [`seed ${seed}`];
    let racingDeletes = 0;
    for (const teamId of teams) {
      const ids = idsOf.get(teamId) as string[];
      // This round's team is missing in the new table again: the repair has 1,000 keys to copy.
      await sql`DELETE FROM ${sql.id(e.schema, 'posthog_person_new')} WHERE team_id = ${teamId}`.execute(
        e.admin.db,
      );
      const victims = shuffle([...ids], random).slice(0, perRound / 2);
      const deletedIds: string[] = [];
      const failures: string[] = [];
      // The deletes start when the scan is done: they race the re-checks and the repair.
      const scanned = new Gate();
      let repairing = false;
      const onChunk = ({ chunk, chunks }: { chunk: number; chunks: number }) => {
        if (chunk === chunks) {
          repairing = true;
          scanned.open();
        }
      };
      runner.migration.events.on('verify:chunk', onChunk);
      const loops = [0, 1, 2, 3].map(async (loop) => {
        const instance = deleters[loop % 2] as ServiceInstance;
        await scanned.promise;
        for (let i = loop; i < victims.length; i += 4) {
          const victim = victims[i] as string;
          try {
            if (await instance.repo.deletePerson(teamId, victim)) {
              deletedIds.push(victim);
              if (repairing) racingDeletes++;
            } else failures.push(`delete of ${victim} found nothing`);
          } catch (error) {
            failures.push(`delete of ${victim}: ${(error as Error).message.slice(0, 200)}`);
          }
        }
      });
      let result: Awaited<ReturnType<typeof runner.migration.verify>>;
      try {
        result = await runner.migration.verify({ settleMs: 0, repair: true });
      } finally {
        repairing = false;
        scanned.open();
        await Promise.all(loops);
        runner.migration.events.off('verify:chunk', onChunk);
      }
      context.push(`team ${teamId}: ${JSON.stringify(result.repair)}`);
      expect(failures, context.join('; ')).toEqual([]);
      expect(deletedIds.length).toBe(victims.length);

      // The deleted persons are nowhere: not in either table, not through any read path.
      expect(await e.storedPersons('old', teamId, deletedIds), context.join('; ')).toEqual([]);
      expect(await e.storedPersons('new', teamId, deletedIds), context.join('; ')).toEqual([]);
      expect(await e.storedDistinctIds(teamId, deletedIds)).toEqual([]);
      for (const { repo } of e.instances) {
        expect(
          await repo.fetchPersonsByPersonIds(deletedIds.map((personId) => ({ teamId, personId }))),
        ).toEqual([]);
        expect(await repo.countPersons(teamId)).toBe(perRound - deletedIds.length);
      }
      // Every survivor was copied, as it is in the old table.
      const survivors = ids.filter((id) => !deletedIds.includes(id));
      const [oldRows, newRows] = await Promise.all([
        e.storedPersons('old', teamId, survivors),
        e.storedPersons('new', teamId, survivors),
      ]);
      expect(newRows.length).toBe(survivors.length);
      expect(newRows).toEqual(oldRows);
      expect(result.repair?.copied ?? 0).toBeGreaterThanOrEqual(survivors.length);
      expect(result.repair?.updated).toBe(0);
      expect(await e.orphanDistinctIds(teamId)).toEqual([]);
    }
    // A verification after it all: nothing resurrected, missing or stale.
    const final = await runner.migration.verify({ settleMs: 0 });
    expect(final.keys, context.join('; ')).toEqual([]);
    expect(final.clean).toBe(true);
    // The deletes really ran while the repair ran (not all before, not all after).
    expect(racingDeletes, context.join('; ')).toBeGreaterThan(0);
    console.info(
      `repair race: ${racingDeletes} deletes during re-check/repair; ${context.join('; ')}`,
    );
  });
});

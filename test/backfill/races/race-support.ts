/**
 * What the race files under test/backfill/races/ share: the backfill racing live writes on a real
 * server (the race of design.md: "the backfill may have read an old row that a delete is
 * removing, and copy it into the new table after the delete ran"), one race per file.
 *
 * The protocol under test (RangeStore.batch and PersonWrites), in both lock modes, is stated
 * once in docs/correctness.md by rule:
 * - `copy-excludes-delete`: a copy and a delete of one old row never overlap (`lockMode: 'rows'`:
 *   the batch reads its old rows `FOR SHARE`; `lockMode: 'ranges'`, the default: range fences);
 * - `range-fence`: a 'ranges' batch holds its range row `FOR UPDATE` until it commits, a delete
 *   takes the row of the range still to copy its key `FOR KEY SHARE` first;
 * - `delete-fence`: planning and splits take the delete fence `SHARE`, every delete holds it
 *   `ROW EXCLUSIVE`;
 * - `copy-never-overwrites`: copies insert `ON CONFLICT DO NOTHING`, or without an arbiter when
 *   the batch's window held no copy (a racing write then fails the batch with 23505: retried);
 * - `checkpoint-with-batch`: a batch's copies and its range's checkpoint commit together.
 *
 * Each forced interleaving holds one side's locks until the other is seen waiting in
 * pg_stat_activity (statements recognised by their tags), never by sleeping.
 */
import { sql } from 'kysely';
import { afterEach, expect } from 'vitest';
import type { DatabaseHandle } from '../../../src/db/database-handle.js';
import { openDatabase } from '../../../src/db/open-database.js';
import {
  Gate,
  MigrationEnv,
  openAllGates,
  type ServiceInstance,
  track,
} from '../../support/concurrency.js';
import { realServerUrl } from '../../support/test-database.js';

/** The env of each test, created through it and closed after the test (see {@link raceEnvs}). */
export interface RaceEnvs {
  /** Creates the test's env (schemas named after `prefix`); closed after the test. */
  create(prefix: string): Promise<MigrationEnv>;
  /** Closes the test's env now (a test that runs its scenario more than once). */
  close(): Promise<void>;
  /**
   * A service instance's pool whose sessions commit without waiting for the WAL flush
   * (`synchronous_commit=off`): only durability across a server crash differs, not locking or
   * visibility, and the 400 batch commits of a run stop waiting for fsync. Closed after the test.
   */
  openFastHandle(maxConnections: number): Promise<DatabaseHandle>;
}

/**
 * Call in the suite's `describe`: after each test it opens every gate left shut, closes the
 * test's env and any fast pool.
 */
export function raceEnvs(): RaceEnvs {
  let env: MigrationEnv | undefined;
  const extraHandles: DatabaseHandle[] = [];

  afterEach(async () => {
    openAllGates();
    await env?.close();
    env = undefined;
    for (const handle of extraHandles.splice(0)) await handle.close();
  });

  return {
    async create(prefix) {
      env = await MigrationEnv.create(prefix);
      return env;
    },
    async close() {
      await env?.close();
      env = undefined;
    },
    async openFastHandle(maxConnections) {
      const url = new URL(realServerUrl() as string);
      url.searchParams.set('options', '-c synchronous_commit=off');
      const handle = await openDatabase(url.toString(), { maxConnections });
      extraHandles.push(handle);
      return handle;
    },
  };
}

/**
 * Seeds of the randomized runs: 1, 2 and 3, or `PG_DUAL_READ_SEEDS` as a list and/or ranges
 * (`PG_DUAL_READ_SEEDS=7,8,9`, `PG_DUAL_READ_SEEDS=1-20`). A failure names its seed.
 */
export function raceSeeds(): number[] {
  const fromEnv = process.env.PG_DUAL_READ_SEEDS?.trim();
  if (!fromEnv) return [1, 2, 3];
  const seeds = fromEnv.split(',').flatMap((part) => {
    const [from, to] = part.trim().split('-').map(Number);
    if (from === undefined || !Number.isInteger(from)) return [];
    const last = to !== undefined && Number.isInteger(to) ? to : from;
    return Array.from({ length: Math.max(0, last - from + 1) }, (_, i) => from + i);
  });
  if (seeds.length === 0)
    throw new Error(`PG_DUAL_READ_SEEDS=${fromEnv}: expected e.g. 7,8,9 or 1-20`);
  return seeds;
}

// The statements the races wait on, by their tags (see src/db/statement-tag.ts).

/** A batch's one statement, which reads the old rows and inserts their copies. */
export const batchStatement = (env: MigrationEnv) => env.statementLike('backfill-batch');
/** A delete's statement that removes the old row (in dual_read it takes its fences first). */
export const deleteOfOldRow = (env: MigrationEnv) => env.statementLike('delete-old-row');
/** A delete's request of its range row ('ranges' mode): the statement {@link deleteOfOldRow}. */
export const deleteTakingFence = deleteOfOldRow;
/** A batch's request of its range row, before its batch statement ('ranges' mode). */
export const batchTakingRange = (env: MigrationEnv) => env.statementLike('backfill-range-fence');
/** The planner's (or a split's) request of the delete fence. */
export const planTakingFence = (env: MigrationEnv) => env.statementLike('delete-fence-lock');

/** Cursors of the ranges being copied now. */
export async function runningCursors(env: MigrationEnv) {
  const { rows } = await sql<{ cursor_team: string | null; cursor_id: string | null }>`
    SELECT cursor_team::text, cursor_id::text FROM ${sql.id(env.controlSchema, 'backfill_range')}
    WHERE status = 'running'`.execute(env.admin.db);
  return rows;
}

/**
 * A one-worker backfill (one range unless told) of 50-key batches that waits for any lock instead of giving
 * way (`batchLockTimeoutMs: 0`), as a forced interleaving needs; the batches it committed.
 */
export function startWaitingBackfill(
  runner: ServiceInstance,
  lockMode: 'rows' | 'ranges',
  ranges = 1,
) {
  const batches: { scanned: number; copied: number }[] = [];
  runner.migration.events.on('backfill:batch', ({ scanned, copied }) =>
    batches.push({ scanned, copied }),
  );
  const backfill = track(
    runner.migration.backfill({
      workers: 1,
      ranges,
      batchSize: 50,
      targetBatchMs: 0,
      batchLockTimeoutMs: 0,
      lockMode,
    }),
  );
  return { batches, backfill };
}

/**
 * A copy-on-write update committed before the backfill starts: the first batch's window then
 * holds a copy, so its insert pre-checks the key index (`ON CONFLICT DO NOTHING`), the path the
 * 'backfill first' interleavings are about (an insert without it, into a window the new table
 * had no key of, meets a racing write with 23505 and is retried: see 'a batch without an
 * arbiter').
 */
export async function copiedBeforeTheBatch(
  writer: ServiceInstance,
  teamId: number,
  personId: string,
) {
  const row = await writer.repo.updatePerson(teamId, personId, { properties: { before: 'batch' } });
  expect(row?.version).toBe(1);
}

/**
 * Writes the plan (`ranges` of them) and copies nothing: a `backfill()` call aborted before its
 * first batch. A delete then finds its range (and planning does not wait for it).
 */
export async function planOnly(runner: ServiceInstance, ranges: number) {
  expect(await runner.migration.backfill({ ranges, signal: AbortSignal.abort() })).toMatchObject({
    planned: true,
    finished: false,
    rowsScanned: 0,
  });
}

/** A delete through `instance` whose transaction stays open until `release.open()`. */
export async function deleteHeldOpen(instance: ServiceInstance, teamId: number, personId: string) {
  const deleted = new Gate();
  const release = new Gate();
  const del = track(
    instance.repo.inTransaction(async (tx) => {
      const result = await tx.deletePerson(teamId, personId);
      deleted.open();
      await release.promise;
      return result;
    }),
  );
  await deleted.promise;
  return { del, release };
}

/** Starts a delete and checks it waits (in a statement like `waitsIn`) for backend `batchPid`. */
export async function deleteWaitingFor(
  e: MigrationEnv,
  writer: ServiceInstance,
  teamId: number,
  personId: string,
  waitsIn: string,
  batchPid: number,
) {
  const del = track(writer.repo.deletePerson(teamId, personId));
  expect(
    await e.waitForLockWaiters(waitsIn, { giveUp: () => del.settled }),
    `the delete waits in ${waitsIn}`,
  ).toBe(true);
  const [deleteWait] = await e.lockWaiters(waitsIn);
  expect(deleteWait?.blockers, 'the delete waits for the batch').toEqual([batchPid]);
  expect(del.settled).toBe(false);
  return del;
}

/** Every old row has a copy, no copy is older than its old row, untouched copies are identical. */
export async function expectNewTableCoversOld(env: MigrationEnv) {
  const old = sql.id(env.schema, 'posthog_person');
  const neu = sql.id(env.schema, 'posthog_person_new');
  const { rows } = await sql<{ missing: number; older: number; differ: number }>`
    SELECT
      (SELECT count(*)::int FROM ${old} o WHERE NOT EXISTS (
        SELECT 1 FROM ${neu} n WHERE n.team_id = o.team_id AND n.id = o.id)) AS missing,
      (SELECT count(*)::int FROM ${old} o JOIN ${neu} n ON n.team_id = o.team_id AND n.id = o.id
        WHERE COALESCE(n.version, 0) < COALESCE(o.version, 0)) AS older,
      (SELECT count(*)::int FROM ${old} o JOIN ${neu} n ON n.team_id = o.team_id AND n.id = o.id
        WHERE COALESCE(n.version, 0) = COALESCE(o.version, 0)
          AND (n.uuid, n.properties, n.created_at, n.is_identified)
            IS DISTINCT FROM (o.uuid, o.properties, o.created_at, o.is_identified)) AS differ`.execute(
    env.admin.db,
  );
  expect(rows[0], 'old rows without a copy / copies older than the old row / bad copies').toEqual({
    missing: 0,
    older: 0,
    differ: 0,
  });
}

/** The persons are in neither table, nor any read path of any instance, nor the distinct ids. */
export async function expectGone(
  env: MigrationEnv,
  teamId: number,
  persons: readonly { id: string; distinctIds: readonly string[] }[],
) {
  const ids = persons.map((p) => p.id);
  const distinctIds = persons.flatMap((p) => p.distinctIds);
  expect(await env.storedPersons('old', teamId, ids), 'old table').toEqual([]);
  expect(await env.storedPersons('new', teamId, ids), 'new table').toEqual([]);
  expect(await env.storedDistinctIds(teamId, ids), 'distinct ids').toEqual([]);
  for (const { repo } of env.instances) {
    expect(
      await repo.fetchPersonsByPersonIds(ids.map((personId) => ({ teamId, personId }))),
    ).toEqual([]);
    if (distinctIds.length > 0) {
      expect(
        await repo.fetchPersonsByDistinctIds(
          distinctIds.map((distinctId) => ({ teamId, distinctId })),
        ),
      ).toEqual([]);
    }
    const listed = await repo.listPersons(teamId, { limit: 10_000 });
    expect(listed.persons.filter((p) => ids.includes(p.id))).toEqual([]);
  }
}

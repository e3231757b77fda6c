import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { isSqlState } from '../db/query-failed.js';
import { tagged } from '../db/statement-tag.js';
import type { Key } from '../model/key.js';
import type { BatchLockMode } from '../options/backfill-options.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { keyAtOffset } from '../persons/key-range.js';
import type { PersonColumns } from '../persons/person-columns.js';
import { type MigrationTables, migrationTables } from '../persons/tables.js';
import { batchDataError } from './batch-data-error.js';
import {
  type BatchArbiter,
  type BatchOutcome,
  batchOutcome,
  batchStatement,
  type LeasedRange,
} from './batch-statement.js';
import { batchTransaction } from './batch-transaction.js';
import { takeDeleteFence } from './delete-fence.js';
import { planLockKey } from './plan-store.js';

interface RangeRow {
  range_id: number;
  start_team: string | null;
  start_id: string | null;
  cursor_team: string | null;
  cursor_id: string | null;
  end_team: string;
  end_id: string;
  rows_estimated: string;
  rows_scanned: string;
}

/**
 * What a worker asks of one batch besides its range: how many keys, how long it may wait for a
 * lock, how it keeps deletes away and whether it pre-checks for copies. @internal
 *
 * @example
 * ```ts
 * await store.batch(db, 'w1', range, { limit: 1_000, leaseMs: 30_000, lockTimeoutMs: 200, lockMode: 'ranges', arbiter: 'when-needed' });
 * ```
 */
export interface BatchSettings {
  readonly limit: number;
  readonly leaseMs: number;
  /** `lock_timeout` of the batch's transaction; 0 keeps the session's. */
  readonly lockTimeoutMs: number;
  readonly lockMode: BatchLockMode;
  readonly arbiter: BatchArbiter;
}

/**
 * The backfill's ranges and workers in the control schema: leases (claim, renew, release), a
 * batch and its checkpoint (rule `checkpoint-with-batch`, the statement in
 * `batch-statement.ts`), and splits. The database is passed per call.
 *
 * Deletes are kept out by rule `copy-excludes-delete` in the batch's `lockMode`: `'ranges'`
 * (the default) holds its range row `FOR UPDATE` for the whole transaction, taken before the
 * batch statement (rule `range-fence`); `'rows'` reads the old rows `FOR SHARE` as it copies
 * them. Everything else that locks a range row takes a mode `FOR KEY SHARE` does not conflict
 * with (`FOR NO KEY UPDATE`, plain updates), so deletes never wait for a claim, a lease
 * renewal or a `'rows'` batch, and those never wait for deletes.
 * @internal
 */
export class RangeStore {
  private readonly tables: MigrationTables;

  constructor(
    private readonly options: ResolvedMigrationOptions,
    private readonly columns: PersonColumns,
  ) {
    this.tables = migrationTables(options);
  }

  /**
   * Leases the free range with the most work left (longest first keeps the tail short):
   * pending, or whose lease expired (its worker died), other than `skipRangeIds` (ranges this
   * worker put off). `SKIP LOCKED`: workers never wait for each other here.
   */
  async claim(
    db: AnyDb,
    workerId: string,
    leaseMs: number,
    skipRangeIds: readonly number[] = [],
  ): Promise<LeasedRange | undefined> {
    const { rows } = await sql<RangeRow>`
      UPDATE ${this.tables.backfillRange} AS r
      SET lease_owner = ${workerId},
        lease_expires_at = clock_timestamp() + ${leaseMs} * interval '1 millisecond',
        status = 'running', started_at = COALESCE(r.started_at, clock_timestamp()),
        updated_at = clock_timestamp()
      FROM (
        SELECT range_id FROM ${this.tables.backfillRange}
        WHERE migration = ${this.tables.migration} AND status <> 'done'
          AND (lease_owner IS NULL OR lease_expires_at < clock_timestamp())
          AND NOT (range_id = ANY(${[...skipRangeIds]}::int[]))
        ORDER BY rows_estimated - rows_scanned DESC, range_id
        LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED
      ) AS free
      WHERE r.migration = ${this.tables.migration} AND r.range_id = free.range_id
      RETURNING ${claimedRangeColumns}`.execute(db);
    return rows[0] ? toLeased(rows[0]) : undefined;
  }

  /**
   * Copies the next keys of a leased range and checkpoints them, in one transaction. A failure
   * on the data is a {@link BackfillDataError} (not retried); any other failure is the driver's.
   */
  async batch(
    db: AnyDb,
    workerId: string,
    range: LeasedRange,
    settings: BatchSettings,
  ): Promise<BatchOutcome> {
    const { tables } = this;
    const statement = batchStatement({
      tables,
      columns: this.columns.copyable,
      workerId,
      range,
      limit: settings.limit,
      leaseMs: settings.leaseMs,
      lockMode: settings.lockMode,
      arbiter: settings.arbiter,
    });
    const rangeFence =
      settings.lockMode === 'ranges'
        ? tagged(
            'backfill-range-fence',
            sql`SELECT 1 FROM ${tables.backfillRange}
              WHERE migration = ${tables.migration} AND range_id = ${range.rangeId} FOR UPDATE`,
          )
        : undefined;
    try {
      const { rows } = await batchTransaction(db, statement, {
        lockTimeoutMs: settings.lockTimeoutMs,
        rangeFence,
      });
      return batchOutcome(rows[0]);
    } catch (error) {
      // A batch that failed on the data is not retried: it says which rows to fix.
      throw (await batchDataError(db, this.options, range, error).catch(() => undefined)) ?? error;
    }
  }

  /** Extends a lease this worker still holds (while paused, or during a long pacing wait). */
  async renew(db: AnyDb, workerId: string, rangeId: number, leaseMs: number): Promise<void> {
    await sql`UPDATE ${this.tables.backfillRange}
      SET lease_expires_at = clock_timestamp() + ${leaseMs} * interval '1 millisecond'
      WHERE migration = ${this.tables.migration} AND range_id = ${rangeId}
        AND lease_owner = ${workerId}`.execute(db);
  }

  /** Gives a range back (on abort or error) so another worker takes it at once. */
  async release(db: AnyDb, workerId: string, rangeId: number): Promise<void> {
    await sql`UPDATE ${this.tables.backfillRange}
      SET lease_owner = NULL, lease_expires_at = NULL,
        status = CASE WHEN status = 'running' THEN 'pending' ELSE status END
      WHERE migration = ${this.tables.migration} AND range_id = ${rangeId}
        AND lease_owner = ${workerId}`.execute(db);
  }

  /**
   * An idle worker takes the second half of the running range with the most work left: the
   * range's end moves to a key near the middle of what is left (found on the real keys), and
   * a new range from there to the old end is created, leased to `workerId`. The owner's next
   * batch sees its end moved and continues up to the new end. Returns the new range, or
   * undefined when nothing is worth splitting or the split would have to wait: it takes the
   * range row (waiting for that range's batch, up to 500 ms) and then the delete fence (up to
   * 100 ms), since keys move to a new range (rule `delete-fence`).
   */
  async split(
    db: AnyDb,
    workerId: string,
    leaseMs: number,
    minRowsToSplit: number,
  ): Promise<LeasedRange | undefined> {
    try {
      return await this.splitBusiest(db, workerId, leaseMs, minRowsToSplit);
    } catch (error) {
      // It waited too long for the range (a batch, a delete in a long transaction): no split
      // this time; deletes queued behind its lock request never wait long for it.
      if (isSqlState(error, '55P03') || isSqlState(error, '40P01')) return undefined;
      throw error;
    }
  }

  private async splitBusiest(
    db: AnyDb,
    workerId: string,
    leaseMs: number,
    minRowsToSplit: number,
  ): Promise<LeasedRange | undefined> {
    return db.transaction().execute(async (trx): Promise<LeasedRange | undefined> => {
      // Splits of one plan take turns (rule `plan-from-keys`): two idle workers splitting two
      // ranges at once would both pick max(range_id) + 1 for their new range.
      await sql`SELECT pg_advisory_xact_lock(${planLockKey(this.options)}),
        set_config('lock_timeout', '500ms', true)`.execute(trx);
      const range = await this.busiestRange(trx, minRowsToSplit);
      if (!range) return undefined;
      const half = Math.floor((range.rowsEstimated - range.rowsScanned) / 2);
      const middle = await keyAtOffset(
        trx,
        this.tables.old,
        { after: range.after, upTo: range.end },
        half,
      );
      // Fewer keys left than estimated (deletes): the middle may be the end itself.
      if (!middle || (middle.team === range.end.team && middle.id === range.end.id)) {
        return undefined;
      }
      // Keys change ranges here (rule `delete-fence`): deletes in flight must finish first, and
      // later ones must look up their range after this commits. It gives way at once to
      // deletes (one of them may be waiting for the range row this transaction holds); an idle
      // worker tries again a moment later.
      const fenced = await takeDeleteFence(trx, this.options.controlSchema, {
        waitMs: 100,
        attempts: 1,
        pauseMs: 0,
      });
      if (!fenced) return undefined;
      return this.cutAt(trx, range, middle, half, workerId, leaseMs);
    });
  }

  /** The running range with the most work left (at least `minRows`), locked `FOR UPDATE`. */
  private async busiestRange(trx: AnyDb, minRows: number): Promise<LeasedRange | undefined> {
    const { tables } = this;
    const { rows } = await sql<RangeRow>`
      SELECT ${rangeColumns} FROM ${tables.backfillRange}
      WHERE migration = ${tables.migration} AND status = 'running'
        AND NOT (SELECT paused FROM ${tables.backfill} WHERE migration = ${tables.migration})
        AND lease_expires_at > clock_timestamp()
        AND rows_estimated - rows_scanned >= ${minRows}
      ORDER BY rows_estimated - rows_scanned DESC, range_id
      LIMIT 1 FOR UPDATE`.execute(trx);
    return rows[0] ? toLeased(rows[0]) : undefined;
  }

  /**
   * Ends `range` at `middle` and creates the range after it, up to the old end, leased to
   * `workerId`; the owner's next batch sees its end moved (`moved`).
   */
  private async cutAt(
    trx: AnyDb,
    range: LeasedRange,
    middle: Key,
    half: number,
    workerId: string,
    leaseMs: number,
  ): Promise<LeasedRange | undefined> {
    const { tables } = this;
    const remaining = range.rowsEstimated - range.rowsScanned;
    await sql`UPDATE ${tables.backfillRange}
      SET end_team = ${middle.team}::int8, end_id = ${middle.id}::int8,
        rows_estimated = rows_scanned + ${half}
      WHERE migration = ${tables.migration} AND range_id = ${range.rangeId}`.execute(trx);
    const created = await sql<RangeRow>`
      INSERT INTO ${tables.backfillRange}
        (migration, range_id, start_team, start_id, end_team, end_id, rows_estimated,
         status, lease_owner, lease_expires_at, started_at, updated_at, split_from)
      SELECT ${tables.migration}, COALESCE(max(range_id), 0) + 1, ${middle.team}::int8,
        ${middle.id}::int8, ${range.end.team}::int8, ${range.end.id}::int8, ${remaining - half},
        'running', ${workerId}, clock_timestamp() + ${leaseMs} * interval '1 millisecond',
        clock_timestamp(), clock_timestamp(), ${range.rangeId}
      FROM ${tables.backfillRange} WHERE migration = ${tables.migration}
      RETURNING ${rangeColumns}`.execute(trx);
    await sql`UPDATE ${tables.backfill} SET range_count = range_count + 1
      WHERE migration = ${tables.migration}`.execute(trx);
    const leased = created.rows[0];
    return leased ? toLeased(leased) : undefined;
  }

  /** Removes a stopping worker from the rate (a killed one drops out after 10 s). */
  async retire(db: AnyDb, workerId: string): Promise<void> {
    await sql`DELETE FROM ${this.tables.backfillWorker}
      WHERE migration = ${this.tables.migration} AND worker_id = ${workerId}`.execute(db);
  }
}

/** A range row's columns as `toLeased` reads them (qualified: the claim joins two range sets). */
const rangeColumns = sql`range_id, start_team::text AS start_team, start_id::text AS start_id,
  cursor_team::text AS cursor_team, cursor_id::text AS cursor_id, end_team::text AS end_team,
  end_id::text AS end_id, rows_estimated::text AS rows_estimated,
  rows_scanned::text AS rows_scanned`;
const claimedRangeColumns = sql`r.range_id, r.start_team::text AS start_team,
  r.start_id::text AS start_id, r.cursor_team::text AS cursor_team, r.cursor_id::text AS cursor_id,
  r.end_team::text AS end_team, r.end_id::text AS end_id,
  r.rows_estimated::text AS rows_estimated, r.rows_scanned::text AS rows_scanned`;

function toLeased(row: RangeRow): LeasedRange {
  const after =
    row.cursor_team !== null && row.cursor_id !== null
      ? { team: row.cursor_team, id: row.cursor_id }
      : row.start_team !== null && row.start_id !== null
        ? { team: row.start_team, id: row.start_id }
        : undefined;
  return {
    rangeId: row.range_id,
    after,
    end: { team: row.end_team, id: row.end_id },
    rowsEstimated: Number(row.rows_estimated),
    rowsScanned: Number(row.rows_scanned),
  };
}

import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { isSqlState } from '../db/query-failed.js';
import type { Key } from '../model/key.js';
import type { BatchLockMode } from '../options/backfill-options.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import { planLockKey } from './backfill-plan.js';
import { takeDeleteFence } from './delete-fence.js';

/** A range as a worker holds it. @internal */
export interface LeasedRange {
  readonly rangeId: number;
  /** Copy keys greater than this (undefined: from the first key). */
  readonly after: Key | undefined;
  /** Copy keys up to and including this one. Shrinks when an idle worker splits the range. */
  readonly end: Key;
  readonly rowsEstimated: number;
  readonly rowsScanned: number;
}

/**
 * When a batch's insert pre-checks the key index for rows already copied: `'when-needed'`
 * only when the new table holds a key of the batch's window (else a plain insert, which a
 * write racing into the window makes fail with 23505, and the batch is retried); `'always'`
 * after such a failure, for the rest of the range. @internal
 */
export type BatchArbiter = 'when-needed' | 'always';

/** What one batch statement did, or why it did nothing. @internal */
export type BatchOutcome =
  | {
      readonly kind: 'copied';
      readonly scanned: number;
      readonly copied: number;
      readonly last: Key | undefined;
      readonly done: boolean;
      readonly maxRowsPerSecond: number | undefined;
      readonly activeRanges: number;
    }
  | { readonly kind: 'paused' }
  /** The range row's checkpoint or end is not what the worker holds: continue from these. */
  | { readonly kind: 'moved'; readonly after: Key | undefined; readonly end: Key }
  | { readonly kind: 'lease-lost' }
  | { readonly kind: 'not-dual-read'; readonly phase: string };

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
 * The backfill's SQL on the control schema and the two persons tables.
 *
 * **One batch is one statement, in one transaction of its own** (`batch`): it takes the phase
 * fence (`FOR KEY SHARE` on the control row, so the batch can only copy in `dual_read`, and a
 * phase change waits for it), checks the lease and the pause flag while locking the range row,
 * reads the next keys of the old table, inserts them with `ON CONFLICT (team_id, id) DO NOTHING`
 * (a row copied by copy-on-write, maybe already updated, is never overwritten) or, when the new
 * table holds no key of the batch's window, with a plain insert (no arbiter to pre-check: a
 * write racing into the window fails it with 23505, never overwritten either, and the batch is
 * retried), and moves the range's checkpoint to the last key it read. A worker killed at any
 * instant leaves either all of that or none of it. A batch only runs from the checkpoint the
 * range row holds (and up to its end): when the worker's copy differs (a split moved the end; a
 * batch committed but its reply was lost) it copies nothing and returns `moved`, and the worker
 * goes on from the row's values.
 *
 * Deletes are kept out by rule 1 of `PersonWrites`, in the batch's `lockMode`: `'ranges'` (the
 * default) holds its range row `FOR UPDATE` for the whole transaction, taken before the batch
 * statement (see `batchTransaction`), which deletes of keys still to copy in the range lock
 * `FOR KEY SHARE`; `'rows'` reads the old rows `FOR SHARE` as it copies them (a delete of one
 * waits for the copy to commit, then removes the new row in a later statement; a row being
 * deleted is waited for, then skipped). Either way a row deleted before the batch's snapshot
 * is not read. Everything else that locks a range row takes a mode that `FOR KEY SHARE` does
 * not conflict with (`FOR NO KEY UPDATE`, plain updates), so deletes never wait for a claim, a
 * lease renewal or a `'rows'` batch, and those never wait for deletes. The batch's keys are
 * every key its snapshot sees in the window (a row being deleted counts as covered), so a
 * short batch means the range is exhausted.
 *
 * Why no version-guarded update: in `dual_read` no write changes an old row (updates go to
 * the new table), so an old row can never be newer than its copy.
 * @internal
 */
export class RangeStore {
  constructor(
    private readonly options: ResolvedMigrationOptions,
    private readonly columns: PersonColumns,
  ) {}

  private control(name: string) {
    return sql.id(this.options.controlSchema, name);
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
      UPDATE ${this.control('backfill_range')} AS r
      SET lease_owner = ${workerId},
        lease_expires_at = clock_timestamp() + ${leaseMs} * interval '1 millisecond',
        status = 'running', started_at = COALESCE(r.started_at, clock_timestamp()),
        updated_at = clock_timestamp()
      FROM (
        SELECT range_id FROM ${this.control('backfill_range')}
        WHERE migration = ${this.options.name} AND status <> 'done'
          AND (lease_owner IS NULL OR lease_expires_at < clock_timestamp())
          AND NOT (range_id = ANY(${[...skipRangeIds]}::int[]))
        ORDER BY rows_estimated - rows_scanned DESC, range_id
        LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED
      ) AS free
      WHERE r.migration = ${this.options.name} AND r.range_id = free.range_id
      RETURNING ${claimedRangeColumns}`.execute(db);
    return rows[0] ? toLeased(rows[0]) : undefined;
  }

  /** Copies the next `limit` keys of a leased range and checkpoints them (see the class doc). */
  async batch(
    db: AnyDb,
    workerId: string,
    range: LeasedRange,
    limit: number,
    leaseMs: number,
    lockTimeoutMs: number,
    lockMode: BatchLockMode,
    arbiter: BatchArbiter = 'when-needed',
  ): Promise<BatchOutcome> {
    const old = sql.id(this.options.schema, this.options.oldTable);
    const target = sql.id(this.options.schema, this.options.newTable);
    const columns = this.columns.copyable;
    const afterIn = (alias: string) =>
      range.after
        ? sql`AND (${sql.ref(`${alias}.team_id`)}, ${sql.ref(`${alias}.id`)}) > (${range.after.team}::int8, ${range.after.id}::int8)`
        : sql``;
    const after = afterIn('o');
    // The window's old rows, in key order, gated by `when` (a one-time filter).
    const copySelect = (when: RawBuilder<unknown>) => sql`
        SELECT ${columnList(columns, 'o')} FROM ${old} AS o
        WHERE ${when} AND EXISTS (SELECT 1 FROM last) ${after}
          AND (o.team_id, o.id) <= ((SELECT team_id FROM last), (SELECT id FROM last))
        ORDER BY o.team_id, o.id
        LIMIT ${limit}
        ${lockMode === 'rows' ? sql`FOR SHARE OF o` : sql``}`;
    const query: RawBuilder<{
      phase: string | null;
      leased: boolean;
      owner_ok: boolean | null;
      paused: boolean | null;
      end_team: string | null;
      end_id: string | null;
      from_team: string | null;
      from_id: string | null;
      scanned: number;
      copied: number;
      last_team: string | null;
      last_id: string | null;
      status: string | null;
      max_rows_per_second: number | null;
      active_ranges: number;
    }> =
      // Not a prepared statement on purpose: Postgres estimates the (team_id, id) > (...) keyset
      // from team_id alone, and the generic plan of a prepared batch read a hot team through
      // the (team_id, uuid) index and sorted it (1.5 s instead of 60 ms per batch, measured by
      // bench/backfill.ts); a custom plan per batch (about 1 ms to plan) uses (team_id, id),
      // except for windows spanning several teams, see batchTransaction.
      sql`WITH phase_fence AS (
        SELECT phase FROM ${this.control('migration')}
        WHERE name = ${this.options.name} AND phase = 'dual_read' FOR KEY SHARE
      ), lease AS (
        SELECT r.range_id FROM ${this.control('backfill_range')} AS r
        JOIN ${this.control('backfill')} AS b ON b.migration = r.migration
        WHERE r.migration = ${this.options.name} AND r.range_id = ${range.rangeId}
          AND r.lease_owner = ${workerId} AND r.status = 'running' AND NOT b.paused
          AND r.end_team = ${range.end.team}::int8 AND r.end_id = ${range.end.id}::int8
          -- the batch starts at the committed checkpoint, never at the worker's memory of it
          -- (a batch that committed but whose COMMIT reply was lost would be counted twice)
          AND COALESCE(r.cursor_team, r.start_team) IS NOT DISTINCT FROM ${range.after?.team ?? null}::int8
          AND COALESCE(r.cursor_id, r.start_id) IS NOT DISTINCT FROM ${range.after?.id ?? null}::int8
          AND EXISTS (SELECT 1 FROM phase_fence)
        FOR NO KEY UPDATE OF r
      ), batch_keys AS (
        -- the batch's keys, read from the (team_id, id) index alone; the rows themselves go
        -- straight from the old table into the insert below (materializing whole rows in a
        -- CTE read twice spilled to temp files on large batches)
        SELECT o.team_id, o.id FROM ${old} AS o
        WHERE EXISTS (SELECT 1 FROM lease) ${after}
          AND (o.team_id, o.id) <= (${range.end.team}::int8, ${range.end.id}::int8)
        ORDER BY o.team_id, o.id
        LIMIT ${limit}
      ), last AS (
        SELECT team_id, id FROM batch_keys ORDER BY team_id DESC, id DESC LIMIT 1
      ), window_in_new AS (
        -- does the new table already hold a key of this window (a copy-on-write or a create)?
        -- One probe of its key index. When it does not, the batch inserts without an arbiter:
        -- a row only a write in flight adds makes that insert fail (23505), and the batch is
        -- retried, its next snapshot seeing the row (see \`BatchArbiter\`). A scalar subquery
        -- with ORDER BY ... LIMIT 1, not EXISTS (which drops both): Postgres costed EXISTS as a
        -- sequential scan stopping at the first match (the new table has no statistics yet),
        -- and read the whole table when nothing matched
        SELECT COALESCE((
          SELECT true FROM ${target} AS n
          WHERE EXISTS (SELECT 1 FROM last) ${afterIn('n')}
            AND (n.team_id, n.id) <= ((SELECT team_id FROM last), (SELECT id FROM last))
          ORDER BY n.team_id, n.id
          LIMIT 1
        ), false) AS found
      ), copied_arbitrated AS (
        -- the same snapshot reads the same rows (nothing inserts into the old table in
        -- dual_read); 'rows' mode skips a row being deleted, after waiting for its delete
        INSERT INTO ${target} (${columnList(columns)})
        ${copySelect(arbiter === 'always' ? sql`true` : sql`(SELECT found FROM window_in_new)`)}
        -- The key is the only arbiter: one index pre-checked per row instead of every unique
        -- index (a tenth of the batch's time, measured). A copy of the same person by a
        -- copy-on-write in flight at that very instant can still meet this insert on the
        -- (team_id, uuid) index first: a unique violation (23505), and the worker retries the
        -- batch, whose next snapshot sees that copy. Copy-on-write itself keeps every index
        -- as an arbiter: a live write must never fail for this.
        ON CONFLICT (team_id, id) DO NOTHING
        RETURNING 1
      ), copied_plain AS (
        -- no row of the window in the new table: no arbiter to pre-check (EXPLAIN in
        -- bench/backfill.ts: 25 against 30-32 ms per 5,000 rows, and a quarter fewer WAL records)
        INSERT INTO ${target} (${columnList(columns)})
        ${copySelect(arbiter === 'always' ? sql`false` : sql`NOT (SELECT found FROM window_in_new)`)}
        RETURNING 1
      ), copied AS (
        SELECT 1 FROM copied_arbitrated UNION ALL SELECT 1 FROM copied_plain
      ), counts AS (
        SELECT (SELECT count(*)::int FROM batch_keys) AS scanned,
          (SELECT count(*)::int FROM copied) AS copied
      ), finished AS (
        -- the range is exhausted when the batch came back short (the keys are every key the
        -- snapshot sees, so that is exact) or read the range's end key, which is a real key
        -- (if it was deleted, one more batch comes back empty)
        SELECT counts.scanned < ${limit} OR EXISTS (
          SELECT 1 FROM last
          WHERE last.team_id = ${range.end.team}::int8 AND last.id = ${range.end.id}::int8
        ) AS done
        FROM counts
      ), checkpoint AS (
        UPDATE ${this.control('backfill_range')} AS r
        SET cursor_team = COALESCE(last.team_id, r.cursor_team),
          cursor_id = COALESCE(last.id, r.cursor_id),
          rows_scanned = r.rows_scanned + counts.scanned,
          rows_copied = r.rows_copied + counts.copied,
          batches = r.batches + 1,
          updated_at = clock_timestamp(),
          lease_expires_at = clock_timestamp() + ${leaseMs} * interval '1 millisecond',
          status = CASE WHEN finished.done THEN 'done' ELSE r.status END,
          done_at = CASE WHEN finished.done THEN clock_timestamp() END,
          lease_owner = CASE WHEN finished.done THEN NULL ELSE r.lease_owner END
        FROM lease, finished, counts LEFT JOIN last ON true
        WHERE r.migration = ${this.options.name} AND r.range_id = lease.range_id
        RETURNING r.status
      ), worker AS (
        -- this worker's throughput between its own checkpoints (throttling pauses and range
        -- changes count): rows and seconds are smoothed separately, the rate is their ratio
        INSERT INTO ${this.control('backfill_worker')} AS w
          (migration, worker_id, rows_scanned, batches, updated_at)
        SELECT ${this.options.name}, ${workerId}, counts.scanned, 1, clock_timestamp()
        FROM counts, lease
        ON CONFLICT (migration, worker_id) DO UPDATE SET
          rows_scanned = w.rows_scanned + EXCLUDED.rows_scanned,
          batches = w.batches + 1,
          smoothed_rows = 0.8 * w.smoothed_rows + EXCLUDED.rows_scanned,
          smoothed_seconds = 0.8 * w.smoothed_seconds
            + EXTRACT(EPOCH FROM clock_timestamp() - w.updated_at),
          updated_at = clock_timestamp()
        RETURNING 1
      ), range_now AS (
        -- the range row as this statement sees it: why nothing was copied, when nothing was
        SELECT lease_owner = ${workerId} AS owner_ok, end_team::text AS end_team,
          end_id::text AS end_id, COALESCE(cursor_team, start_team)::text AS from_team,
          COALESCE(cursor_id, start_id)::text AS from_id
        FROM ${this.control('backfill_range')}
        WHERE migration = ${this.options.name} AND range_id = ${range.rangeId}
      )
      SELECT
        (SELECT phase FROM ${this.control('migration')} WHERE name = ${this.options.name}) AS phase,
        EXISTS (SELECT 1 FROM lease) AS leased,
        range_now.owner_ok,
        (SELECT paused FROM ${this.control('backfill')} WHERE migration = ${this.options.name}) AS paused,
        range_now.end_team, range_now.end_id, range_now.from_team, range_now.from_id,
        counts.scanned, counts.copied,
        (SELECT team_id::text FROM last) AS last_team, (SELECT id::text FROM last) AS last_id,
        (SELECT status FROM checkpoint) AS status,
        (SELECT count(*) FROM worker) AS worker_rows,
        (SELECT max_rows_per_second FROM ${this.control('backfill')}
          WHERE migration = ${this.options.name}) AS max_rows_per_second,
        (SELECT count(*)::int FROM ${this.control('backfill_range')}
          WHERE migration = ${this.options.name} AND status = 'running'
            AND lease_expires_at > clock_timestamp()) AS active_ranges
      FROM counts LEFT JOIN range_now ON true`;
    const { rows } = await batchTransaction(db, query, {
      lockTimeoutMs,
      rangeFence:
        lockMode === 'ranges'
          ? sql`SELECT 1 FROM ${this.control('backfill_range')}
              WHERE migration = ${this.options.name} AND range_id = ${range.rangeId} FOR UPDATE`
          : undefined,
    });
    const row = rows[0];
    if (!row) throw new Error('backfill batch returned no row');
    if (row.leased) {
      return {
        kind: 'copied',
        scanned: row.scanned,
        copied: row.copied,
        last: row.last_team && row.last_id ? { team: row.last_team, id: row.last_id } : undefined,
        done: row.status === 'done',
        maxRowsPerSecond: row.max_rows_per_second ?? undefined,
        activeRanges: Math.max(1, row.active_ranges),
      };
    }
    // Nothing was copied: say why, most fundamental reason first.
    if (row.phase !== 'dual_read') return { kind: 'not-dual-read', phase: row.phase ?? 'unknown' };
    if (!row.owner_ok) return { kind: 'lease-lost' };
    if (row.paused) return { kind: 'paused' };
    if (row.end_team !== null && row.end_id !== null) {
      // An idle worker moved the end (a split), or a batch committed without this worker
      // hearing of it; or a splitter held the row between our look and our lock: go on from
      // what the range row says.
      const after =
        row.from_team !== null && row.from_id !== null
          ? { team: row.from_team, id: row.from_id }
          : undefined;
      return { kind: 'moved', after, end: { team: row.end_team, id: row.end_id } };
    }
    return { kind: 'lease-lost' };
  }

  /** Extends a lease this worker still holds (while paused, or during a long pacing wait). */
  async renew(db: AnyDb, workerId: string, rangeId: number, leaseMs: number): Promise<void> {
    await sql`UPDATE ${this.control('backfill_range')}
      SET lease_expires_at = clock_timestamp() + ${leaseMs} * interval '1 millisecond'
      WHERE migration = ${this.options.name} AND range_id = ${rangeId}
        AND lease_owner = ${workerId}`.execute(db);
  }

  /** Gives a range back (on abort or error) so another worker takes it at once. */
  async release(db: AnyDb, workerId: string, rangeId: number): Promise<void> {
    await sql`UPDATE ${this.control('backfill_range')}
      SET lease_owner = NULL, lease_expires_at = NULL,
        status = CASE WHEN status = 'running' THEN 'pending' ELSE status END
      WHERE migration = ${this.options.name} AND range_id = ${rangeId}
        AND lease_owner = ${workerId}`.execute(db);
  }

  /**
   * An idle worker takes the second half of the running range with the most work left: the
   * range's end moves to a key near the middle of what is left (found on the real keys), and
   * a new range from there to the old end is created, leased to `workerId`. The owner's next
   * batch sees its end moved and continues up to the new end. Returns the new range, or
   * undefined when nothing is worth splitting or the split would have to wait: it takes the
   * range row (waiting for that range's batch, up to 500 ms) and then the delete fence (up to
   * 100 ms), since keys move to a new range (rule 1 of `PersonWrites`).
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
      // Splits of one plan take turns (the planner's lock): two idle workers splitting two
      // ranges at once would both pick max(range_id) + 1 for their new range.
      await sql`SELECT pg_advisory_xact_lock(${planLockKey(this.options)}),
        set_config('lock_timeout', '500ms', true)`.execute(trx);
      const { rows } = await sql<RangeRow & { lease_owner: string | null }>`
        SELECT ${rangeColumns}, lease_owner FROM ${this.control('backfill_range')}
        WHERE migration = ${this.options.name} AND status = 'running'
          AND NOT (SELECT paused FROM ${this.control('backfill')} WHERE migration = ${this.options.name})
          AND lease_expires_at > clock_timestamp()
          AND rows_estimated - rows_scanned >= ${minRowsToSplit}
        ORDER BY rows_estimated - rows_scanned DESC, range_id
        LIMIT 1 FOR UPDATE`.execute(trx);
      const row = rows[0];
      if (!row) return undefined;
      const range = toLeased(row);
      const half = Math.floor((range.rowsEstimated - range.rowsScanned) / 2);
      const old = sql.id(this.options.schema, this.options.oldTable);
      const after = range.after
        ? sql`AND (o.team_id, o.id) > (${range.after.team}::int8, ${range.after.id}::int8)`
        : sql``;
      // Cast after the LIMIT, not for every skipped key.
      const middle = await sql<{ team: string; id: string }>`
        SELECT k.team_id::text AS team, k.id::text AS id FROM (
          SELECT o.team_id, o.id FROM ${old} AS o
          WHERE (o.team_id, o.id) <= (${range.end.team}::int8, ${range.end.id}::int8) ${after}
          ORDER BY o.team_id, o.id OFFSET ${half} LIMIT 1
        ) AS k`.execute(trx);
      const mid = middle.rows[0];
      // Fewer keys left than estimated (deletes): the middle may be the end itself.
      if (!mid || (mid.team === range.end.team && mid.id === range.end.id)) return undefined;
      const next = await sql<{ range_id: number }>`
        SELECT COALESCE(max(range_id), 0) + 1 AS range_id FROM ${this.control('backfill_range')}
        WHERE migration = ${this.options.name}`.execute(trx);
      const newId = next.rows[0]?.range_id ?? 0;
      const remaining = range.rowsEstimated - range.rowsScanned;
      // Keys change ranges here: deletes in flight must finish first, and later ones must look
      // up their range after this commits (rule 1 of PersonWrites). It gives way at once to
      // deletes (one of them may be waiting for the range row this transaction holds); an idle
      // worker tries again a moment later.
      const fenced = await takeDeleteFence(trx, this.options.controlSchema, {
        waitMs: 100,
        attempts: 1,
        pauseMs: 0,
      });
      if (!fenced) return undefined;
      await sql`UPDATE ${this.control('backfill_range')}
        SET end_team = ${mid.team}::int8, end_id = ${mid.id}::int8,
          rows_estimated = rows_scanned + ${half}
        WHERE migration = ${this.options.name} AND range_id = ${range.rangeId}`.execute(trx);
      const created = await sql<RangeRow>`
        INSERT INTO ${this.control('backfill_range')}
          (migration, range_id, start_team, start_id, end_team, end_id, rows_estimated,
           status, lease_owner, lease_expires_at, started_at, updated_at, split_from)
        VALUES (${this.options.name}, ${newId}, ${mid.team}::int8, ${mid.id}::int8,
          ${range.end.team}::int8, ${range.end.id}::int8, ${remaining - half}, 'running',
          ${workerId}, clock_timestamp() + ${leaseMs} * interval '1 millisecond',
          clock_timestamp(), clock_timestamp(), ${range.rangeId})
        RETURNING ${rangeColumns}`.execute(trx);
      await sql`UPDATE ${this.control('backfill')} SET range_count = range_count + 1
        WHERE migration = ${this.options.name}`.execute(trx);
      const leased = created.rows[0];
      return leased ? toLeased(leased) : undefined;
    });
  }

  /** Removes a stopping worker from the rate (a killed one drops out after 10 s). */
  async retire(db: AnyDb, workerId: string): Promise<void> {
    await sql`DELETE FROM ${this.control('backfill_worker')}
      WHERE migration = ${this.options.name} AND worker_id = ${workerId}`.execute(db);
  }

  /** Ranges not done yet, and whether the plan still exists (resetBackfill() removes it). */
  async remaining(db: AnyDb): Promise<{ notDone: number; planExists: boolean }> {
    const { rows } = await sql<{ not_done: number; plan_exists: boolean }>`
      SELECT (SELECT count(*)::int FROM ${this.control('backfill_range')}
          WHERE migration = ${this.options.name} AND status <> 'done') AS not_done,
        EXISTS (SELECT 1 FROM ${this.control('backfill')}
          WHERE migration = ${this.options.name}) AS plan_exists`.execute(db);
    return { notDone: rows[0]?.not_done ?? 0, planExists: rows[0]?.plan_exists ?? false };
  }

  /** Marks the backfill done once every range is; true when this call did it. */
  async finish(db: AnyDb): Promise<boolean> {
    const result = await sql`UPDATE ${this.control('backfill')}
      SET status = 'done', finished_at = clock_timestamp()
      WHERE migration = ${this.options.name} AND status <> 'done'
        AND NOT EXISTS (SELECT 1 FROM ${this.control('backfill_range')}
          WHERE migration = ${this.options.name} AND status <> 'done')`.execute(db);
    return (result.numAffectedRows ?? 0n) > 0n;
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

/**
 * The batch's transaction: BEGIN; its settings (for this transaction only); in `'ranges'`
 * mode the range fence; the one batch statement; COMMIT, on one connection.
 *
 * - `enable_incremental_sort` off: a custom plan of a window spanning several teams often read
 *   the first team through the `(team_id, uuid)` index and sorted it incrementally (722 of
 *   1,050 EXPLAINs of such windows, measured by bench/backfill.ts); without incremental sort
 *   the `(team_id, id)` index, which yields the keyset order as is, is the cheapest plan. A
 *   planner setting must be in place before the statement is planned, so it cannot ride
 *   inside the statement.
 * - `synchronous_commit` off: the COMMIT does not wait for its WAL to reach the disk. Nothing
 *   is lost that matters: the rows and their checkpoint are one transaction, so a server crash
 *   can only drop the last batches whole (the backfill copies them again); any later commit
 *   that depends on a batch (a delete that waited for its range, the next batch, the backfill's
 *   final `done`) is written after it in the WAL, so flushing that one flushes the batch too.
 * - `lock_timeout`: the backfill gives way. A batch that waits longer than this for a lock (its
 *   range row while a delete is in flight, a live write holding a row, an insert in flight) fails
 *   with 55P03 and is retried, so the application's transaction is never the one Postgres picks
 *   as a deadlock victim, and deletes queued behind a waiting batch wait at most this long for
 *   it. 0 keeps the session's setting.
 * - In `'ranges'` mode, the range row `FOR UPDATE` (rule 1 of `PersonWrites`) in a statement
 *   of its own **before** the batch statement: the batch statement's snapshot is taken after
 *   the row is held, so it sees every delete that held the row before it; a delete that comes
 *   later waits for this transaction to end. (Inside the batch statement the lock would come
 *   after the snapshot: too late.)
 *
 * A failed ROLLBACK (the connection is gone) never hides the batch's own error, which the
 * worker's retry decision depends on.
 */
async function batchTransaction<R>(
  db: AnyDb,
  query: RawBuilder<R>,
  options: { lockTimeoutMs: number; rangeFence: RawBuilder<unknown> | undefined },
): Promise<{ rows: R[] }> {
  return db.connection().execute(async (connection) => {
    await sql`BEGIN`.execute(connection);
    try {
      await sql`SELECT set_config('enable_incremental_sort', 'off', true),
        set_config('synchronous_commit', 'off', true),
        CASE WHEN ${options.lockTimeoutMs}::int > 0
          THEN set_config('lock_timeout', ${options.lockTimeoutMs}::int || 'ms', true) END`.execute(
        connection,
      );
      if (options.rangeFence) await options.rangeFence.execute(connection);
      const result = await query.execute(connection);
      await sql`COMMIT`.execute(connection);
      return result;
    } catch (error) {
      await sql`ROLLBACK`.execute(connection).catch(() => undefined);
      throw error;
    }
  });
}

import { type RawBuilder, sql } from 'kysely';
import { tagged } from '../db/statement-tag.js';
import { UnexpectedResultError } from '../errors.js';
import type { Key } from '../model/key.js';
import type { BatchLockMode } from '../options/backfill-options.js';
import { keyAfter, keyAtMost, keyColumns } from '../persons/key-range.js';
import { columnList } from '../persons/person-columns.js';
import type { MigrationTables } from '../persons/tables.js';

/**
 * A range as a worker holds it. @internal
 *
 * @example
 * ```ts
 * const range: LeasedRange = { rangeId: 1, after: undefined, end: { team: '9', id: '900' }, rowsEstimated: 900, rowsScanned: 0 };
 * ```
 */
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
 * after such a failure, for the rest of the range (rule `copy-never-overwrites`). @internal
 *
 * @example
 * ```ts
 * let arbiter: BatchArbiter = 'when-needed'; // 'always' once a batch of the range met a 23505
 * ```
 */
export type BatchArbiter = 'when-needed' | 'always';

/**
 * Everything one batch statement is built from. @internal
 *
 * @example
 * ```ts
 * const request: BatchRequest = { tables, columns: columns.copyable, workerId: 'w1', range, limit: 1_000, leaseMs: 30_000, lockMode: 'ranges', arbiter: 'when-needed' };
 * ```
 */
export interface BatchRequest {
  readonly tables: MigrationTables;
  /** The columns a copy inserts (`PersonColumns.copyable`). */
  readonly columns: readonly string[];
  readonly workerId: string;
  readonly range: LeasedRange;
  /** Keys to read at most. */
  readonly limit: number;
  readonly leaseMs: number;
  readonly lockMode: BatchLockMode;
  readonly arbiter: BatchArbiter;
}

/** The one row a batch statement returns. @internal */
export interface BatchRow {
  readonly phase: string | null;
  readonly leased: boolean;
  readonly owner_ok: boolean | null;
  readonly paused: boolean | null;
  readonly end_team: string | null;
  readonly end_id: string | null;
  readonly from_team: string | null;
  readonly from_id: string | null;
  readonly scanned: number;
  readonly copied: number;
  readonly last_team: string | null;
  readonly last_id: string | null;
  readonly status: string | null;
  readonly max_rows_per_second: number | null;
  readonly active_ranges: number;
}

/**
 * What one batch statement did, or why it did nothing. @internal
 *
 * @example
 * ```ts
 * if (outcome.kind === 'moved') range = { ...range, after: outcome.after, end: outcome.end };
 * ```
 */
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

/**
 * The one statement of a backfill batch (rules `checkpoint-with-batch`, `phase-fence`,
 * `copy-never-overwrites` and, in `lockMode: 'rows'`, `copy-excludes-delete`): it takes the
 * phase fence, checks the lease and the pause flag while locking the range row, reads the next
 * `limit` keys of the range from the old table's key index, inserts their rows into the new
 * table, and moves the range's checkpoint, the worker's rate and the range's status, all in one
 * snapshot. Pure: it only builds the SQL, so a test can compile and inspect it.
 *
 * Not a prepared statement on purpose: Postgres estimates the `(team_id, id) > (...)` keyset
 * from `team_id` alone, and the generic plan of a prepared batch read a hot team through the
 * `(team_id, uuid)` index and sorted it (1.5 s instead of 60 ms per batch, measured by
 * bench/backfill.ts); a custom plan per batch (about 1 ms to plan) uses `(team_id, id)`,
 * except for windows spanning several teams, see `batchTransaction`.
 * @internal
 *
 * @example
 * ```ts
 * const { sql: text, parameters } = batchStatement(request).compile(db);
 * ```
 */
export function batchStatement(request: BatchRequest): RawBuilder<BatchRow> {
  const { tables, range, limit } = request;
  return tagged(
    'backfill-batch',
    sql<BatchRow>`WITH phase_fence AS (
        -- FOR KEY SHARE on the control row, under the batch's own lock_timeout (NULL)
        SELECT phase FROM ${tables.phaseFence}(${tables.migration}, NULL)
        WHERE phase = 'dual_read'
      ), lease AS (${leaseOfRange(request)}
      ), batch_keys AS (
        -- the batch's keys, read from the (team_id, id) index alone; the rows themselves go
        -- straight from the old table into the insert below (materializing whole rows in a
        -- CTE read twice spilled to temp files on large batches)
        SELECT o.team_id, o.id FROM ${tables.old} AS o
        WHERE EXISTS (SELECT 1 FROM lease) AND ${keyAfter('o', range.after)}
          AND ${keyAtMost('o', range.end)}
        ORDER BY o.team_id, o.id
        LIMIT ${limit}
      ), last AS (
        SELECT team_id, id FROM batch_keys ORDER BY team_id DESC, id DESC LIMIT 1
      ), window_in_new AS (${windowProbe(request)}
      ), ${copies(request)}, counts AS (
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
      ), checkpoint AS (${checkpoint(request)}
      ), worker AS (${workerRate(request)}
      ), range_now AS (
        -- the range row as this statement sees it: why nothing was copied, when nothing was
        SELECT lease_owner = ${request.workerId} AS owner_ok, end_team::text AS end_team,
          end_id::text AS end_id, COALESCE(cursor_team, start_team)::text AS from_team,
          COALESCE(cursor_id, start_id)::text AS from_id
        FROM ${tables.backfillRange}
        WHERE migration = ${tables.migration} AND range_id = ${range.rangeId}
      )
      SELECT ${resultColumns(tables)}
      FROM counts LEFT JOIN range_now ON true`,
  );
}

/** The range row, locked, when this worker holds it at the checkpoint it remembers. */
function leaseOfRange({ tables, workerId, range }: BatchRequest): RawBuilder<unknown> {
  return sql`
        SELECT r.range_id FROM ${tables.backfillRange} AS r
        JOIN ${tables.backfill} AS b ON b.migration = r.migration
        WHERE r.migration = ${tables.migration} AND r.range_id = ${range.rangeId}
          AND r.lease_owner = ${workerId} AND r.status = 'running' AND NOT b.paused
          AND r.end_team = ${range.end.team}::int8 AND r.end_id = ${range.end.id}::int8
          -- the batch starts at the committed checkpoint, never at the worker's memory of it
          -- (a batch that committed but whose COMMIT reply was lost would be counted twice)
          AND COALESCE(r.cursor_team, r.start_team) IS NOT DISTINCT FROM ${range.after?.team ?? null}::int8
          AND COALESCE(r.cursor_id, r.start_id) IS NOT DISTINCT FROM ${range.after?.id ?? null}::int8
          AND EXISTS (SELECT 1 FROM phase_fence)
        FOR NO KEY UPDATE OF r`;
}

/**
 * Does the new table already hold a key of this window (a copy-on-write or a create)? One probe
 * of its key index. A scalar subquery with ORDER BY ... LIMIT 1, not EXISTS (which drops both):
 * Postgres costed EXISTS as a sequential scan stopping at the first match (the new table has no
 * statistics yet), and read the whole table when nothing matched.
 */
function windowProbe({ tables, range }: BatchRequest): RawBuilder<unknown> {
  return sql`
        SELECT COALESCE((
          SELECT true FROM ${tables.new} AS n
          WHERE EXISTS (SELECT 1 FROM last) AND ${keyAfter('n', range.after)}
            AND ${keyColumns('n')} <= ((SELECT team_id FROM last), (SELECT id FROM last))
          ORDER BY n.team_id, n.id
          LIMIT 1
        ), false) AS found`;
}

/**
 * The two inserts, of which one copies (gated by the probe, or by `arbiter: 'always'`), and
 * `copied`, their rows: with the key as the only arbiter when the window holds a copy; plain
 * when it holds none (no arbiter to pre-check: 25 against 30-32 ms per 5,000 rows in
 * bench/backfill.ts's EXPLAIN, and a quarter fewer WAL records). The same snapshot reads the
 * same rows (nothing inserts into the old table in `dual_read`); `'rows'` mode reads them
 * `FOR SHARE`, skipping a row being deleted after waiting for its delete.
 */
function copies(request: BatchRequest): RawBuilder<unknown> {
  const { tables, columns, arbiter } = request;
  const always = arbiter === 'always';
  return sql`copied_arbitrated AS (
        INSERT INTO ${tables.new} (${columnList(columns)})
        ${windowRows(request, always ? sql`true` : sql`(SELECT found FROM window_in_new)`)}
        -- One index pre-checked per row instead of every unique index (a tenth of the batch's
        -- time, measured). A copy-on-write of the same person in flight at that very instant
        -- can still meet this insert on the (team_id, uuid) index first: 23505, and the worker
        -- retries the batch, whose next snapshot sees that copy.
        ON CONFLICT (team_id, id) DO NOTHING
        RETURNING 1
      ), copied_plain AS (
        INSERT INTO ${tables.new} (${columnList(columns)})
        ${windowRows(request, always ? sql`false` : sql`NOT (SELECT found FROM window_in_new)`)}
        RETURNING 1
      ), copied AS (
        SELECT 1 FROM copied_arbitrated UNION ALL SELECT 1 FROM copied_plain
      )`;
}

/** The window's old rows, in key order, gated by `when` (a one-time filter). */
function windowRows(
  { tables, columns, range, limit, lockMode }: BatchRequest,
  when: RawBuilder<unknown>,
): RawBuilder<unknown> {
  return sql`
        SELECT ${columnList(columns, 'o')} FROM ${tables.old} AS o
        WHERE ${when} AND EXISTS (SELECT 1 FROM last) AND ${keyAfter('o', range.after)}
          AND ${keyColumns('o')} <= ((SELECT team_id FROM last), (SELECT id FROM last))
        ORDER BY o.team_id, o.id
        LIMIT ${limit}
        ${lockMode === 'rows' ? sql`FOR SHARE OF o` : sql``}`;
}

/** Moves the range's checkpoint and counters, renews the lease, marks the range done. */
function checkpoint({ tables, leaseMs }: BatchRequest): RawBuilder<unknown> {
  return sql`
        UPDATE ${tables.backfillRange} AS r
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
        WHERE r.migration = ${tables.migration} AND r.range_id = lease.range_id
        RETURNING r.status`;
}

/**
 * This worker's throughput between its own checkpoints (throttling pauses and range changes
 * count): rows and seconds are smoothed separately, the rate is their ratio.
 */
function workerRate({ tables, workerId }: BatchRequest): RawBuilder<unknown> {
  return sql`
        INSERT INTO ${tables.backfillWorker} AS w
          (migration, worker_id, rows_scanned, batches, smoothed_rows, smoothed_seconds,
           updated_at)
        -- The first batch's rate: its rows over its own time (now() is the batch's BEGIN).
        SELECT ${tables.migration}, ${workerId}, counts.scanned, 1, counts.scanned,
          EXTRACT(EPOCH FROM clock_timestamp() - now()), clock_timestamp()
        FROM counts, lease
        ON CONFLICT (migration, worker_id) DO UPDATE SET
          rows_scanned = w.rows_scanned + EXCLUDED.rows_scanned,
          batches = w.batches + 1,
          smoothed_rows = 0.8 * w.smoothed_rows + EXCLUDED.rows_scanned,
          smoothed_seconds = 0.8 * w.smoothed_seconds
            + EXTRACT(EPOCH FROM clock_timestamp() - w.updated_at),
          updated_at = clock_timestamp()
        RETURNING 1`;
}

/** The columns of {@link BatchRow}. */
function resultColumns(tables: MigrationTables): RawBuilder<unknown> {
  return sql`
        (SELECT phase FROM ${tables.control} WHERE name = ${tables.migration}) AS phase,
        EXISTS (SELECT 1 FROM lease) AS leased,
        range_now.owner_ok,
        (SELECT paused FROM ${tables.backfill} WHERE migration = ${tables.migration}) AS paused,
        range_now.end_team, range_now.end_id, range_now.from_team, range_now.from_id,
        counts.scanned, counts.copied,
        (SELECT team_id::text FROM last) AS last_team, (SELECT id::text FROM last) AS last_id,
        (SELECT status FROM checkpoint) AS status,
        (SELECT count(*) FROM worker) AS worker_rows,
        (SELECT max_rows_per_second FROM ${tables.backfill}
          WHERE migration = ${tables.migration}) AS max_rows_per_second,
        (SELECT count(*)::int FROM ${tables.backfillRange}
          WHERE migration = ${tables.migration} AND status = 'running'
            AND lease_expires_at > clock_timestamp()) AS active_ranges`;
}

/**
 * What a batch statement's row means: the rows it copied and its new checkpoint, or, when it
 * copied nothing, why (the most fundamental reason first). @internal
 *
 * @example
 * ```ts
 * const outcome = batchOutcome(rows[0]);
 * ```
 */
export function batchOutcome(row: BatchRow | undefined): BatchOutcome {
  if (!row) throw new UnexpectedResultError('A backfill batch statement returned no row.');
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
  if (row.phase !== 'dual_read') return { kind: 'not-dual-read', phase: row.phase ?? 'unknown' };
  if (!row.owner_ok) return { kind: 'lease-lost' };
  if (row.paused) return { kind: 'paused' };
  if (row.end_team !== null && row.end_id !== null) {
    // An idle worker moved the end (a split), or a batch committed without this worker hearing
    // of it; or a splitter held the row between our look and our lock: go on from the row.
    const after =
      row.from_team !== null && row.from_id !== null
        ? { team: row.from_team, id: row.from_id }
        : undefined;
    return { kind: 'moved', after, end: { team: row.end_team, id: row.end_id } };
  }
  return { kind: 'lease-lost' };
}

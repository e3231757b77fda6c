import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';

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
 * - In `'ranges'` mode, the range fence (rule `range-fence`): the range row `FOR UPDATE` in a
 *   statement of its own **before** the batch statement, so the batch statement's snapshot is
 *   taken after the row is held and sees every delete that held the row before it; a delete
 *   that comes later waits for this transaction to end. (Inside the batch statement the lock
 *   would come after the snapshot: too late.)
 *
 * A failed ROLLBACK (the connection is gone) never hides the batch's own error, which the
 * worker's retry decision depends on. @internal
 *
 * @example
 * ```ts
 * const { rows } = await batchTransaction(db, batchStatement(request), { lockTimeoutMs: 200, rangeFence });
 * ```
 */
export async function batchTransaction<R>(
  db: AnyDb,
  statement: RawBuilder<R>,
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
      const result = await statement.execute(connection);
      await sql`COMMIT`.execute(connection);
      return result;
    } catch (error) {
      await sql`ROLLBACK`.execute(connection).catch(() => undefined);
      throw error;
    }
  });
}

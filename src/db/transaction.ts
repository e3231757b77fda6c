import { sql } from 'kysely';
import { OutcomeUnknownError } from '../errors.js';
import type { AnyDb } from './any-db.js';
import { holdingSession } from './pglite-dialect.js';
import { sqlStateOf, toQueryFailedError } from './query-failed.js';

/**
 * Runs `fn` in a transaction on one connection (BEGIN, `fn`, COMMIT) and says truthfully what
 * happened when it fails:
 *
 * - an error before COMMIT was sent (BEGIN, a statement, `fn` itself) is thrown as it is (a
 *   driver error sanitised by the caller): the transaction was rolled back, nothing was
 *   written. A failed ROLLBACK (the connection is gone, so the server rolls back anyway) never
 *   replaces that error;
 * - COMMIT answered with an error (a deferred constraint, a serialization failure): a
 *   `QueryFailedError` with its SQLSTATE, nothing was written;
 * - COMMIT sent and no answer (the connection was lost: an error without SQLSTATE): an
 *   {@link OutcomeUnknownError}, the transaction may or may not have committed.
 *
 * On PGlite, `fn` holds the one session: a query on the same database from inside `fn` that does
 * not go through the transaction throws instead of waiting forever. @internal
 *
 * @example
 * ```ts
 * const person = await runTransaction(handle.db, async (trx) => {
 *   await fence(trx);
 *   return (await update.execute(trx)).rows[0];
 * });
 * ```
 */
export async function runTransaction<T>(db: AnyDb, fn: (trx: AnyDb) => Promise<T>): Promise<T> {
  return db.connection().execute(async (connection) => {
    await sql`BEGIN`.execute(connection);
    let result: T;
    try {
      result = await holdingSession(db, () => fn(connection));
    } catch (error) {
      await sql`ROLLBACK`.execute(connection).catch(() => undefined);
      throw error;
    }
    await commit(connection);
    return result;
  });
}

/**
 * Sends COMMIT on `connection` and classifies a failure as {@link runTransaction} does: an
 * answer with a SQLSTATE (nothing committed) is a `QueryFailedError`, no answer (the
 * connection was lost) an {@link OutcomeUnknownError}. For transactions run by hand on one
 * connection. @internal
 *
 * @example
 * ```ts
 * await sql`BEGIN`.execute(connection);
 * await work(connection);
 * await commit(connection);
 * ```
 */
export async function commit(connection: AnyDb): Promise<void> {
  try {
    await sql`COMMIT`.execute(connection);
  } catch (error) {
    if (sqlStateOf(error) !== undefined) throw toQueryFailedError(error, 'COMMIT', 0);
    throw new OutcomeUnknownError(
      'The connection was lost after COMMIT was sent: the transaction may or may not have ' +
        'been committed. Read the rows it wrote before acting again (a retried write may ' +
        'apply twice or conflict with itself).',
      { cause: toQueryFailedError(error, 'COMMIT', 0) },
    );
  }
}

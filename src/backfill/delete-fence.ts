import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { isSqlState } from '../db/query-failed.js';
import { tagged } from '../db/statement-tag.js';

/**
 * Takes the control schema's delete fence `SHARE` in the transaction `trx`, for a change of
 * which range covers which key (a new plan, a split): every delete in `dual_read` holds the
 * fence `ROW EXCLUSIVE` from the start of the statement that looks up its range, so once this
 * returns true, every delete that could have looked at the ranges before the change has
 * committed, and every later one waits for this transaction and then sees the new ranges
 * (rule `delete-fence` in docs/correctness.md).
 *
 * Each attempt waits at most `waitMs` (a waiting `SHARE` request holds up every new delete
 * behind it, so it never waits long), inside a savepoint so a timed out attempt leaves the
 * transaction usable; `attempts` tries, `pauseMs` apart. Returns false when every attempt
 * timed out: a transaction that deleted a person stayed open all that time.
 * @internal
 */
export async function takeDeleteFence(
  trx: AnyDb,
  controlSchema: string,
  { waitMs, attempts, pauseMs }: { waitMs: number; attempts: number; pauseMs: number },
): Promise<boolean> {
  const fence = sql.id(controlSchema, 'delete_fence');
  const { rows } = await sql<{ previous: string }>`
    SELECT current_setting('lock_timeout') AS previous,
      set_config('lock_timeout', ${waitMs}::int || 'ms', true)`.execute(trx);
  try {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      await sql`SAVEPOINT pg_dual_read_delete_fence`.execute(trx);
      try {
        await tagged('delete-fence-lock', sql`LOCK TABLE ${fence} IN SHARE MODE`).execute(trx);
        await sql`RELEASE SAVEPOINT pg_dual_read_delete_fence`.execute(trx);
        return true;
      } catch (error) {
        if (!isSqlState(error, '55P03') && !isSqlState(error, '40P01')) throw error;
        await sql`ROLLBACK TO SAVEPOINT pg_dual_read_delete_fence`.execute(trx);
        if (attempt < attempts) await sleep(pauseMs);
      }
    }
    return false;
  } finally {
    await sql`SELECT set_config('lock_timeout', ${rows[0]?.previous ?? '0'}, true)`
      .execute(trx)
      .catch(() => undefined);
  }
}

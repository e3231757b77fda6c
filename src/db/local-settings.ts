import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';
import { type StatementTag, tagged } from './statement-tag.js';

/**
 * Sets server settings for the rest of the transaction `trx` only (`set_config(..., true)`),
 * in one statement: a lock or statement timeout, planner settings. Names and values are
 * parameters; `tag` names the statement for `pg_stat_activity` (and tests). @internal
 *
 * @example
 * ```ts
 * await setLocal(trx, { lock_timeout: '200ms' });
 * await setLocal(trx, { enable_hashjoin: 'off', enable_sort: 'off', jit: 'off' });
 * ```
 */
export async function setLocal(
  trx: AnyDb,
  settings: Readonly<Record<string, string>>,
  tag?: StatementTag,
): Promise<void> {
  const calls = Object.entries(settings).map(
    ([name, value]) => sql`set_config(${name}, ${value}, true)`,
  );
  const statement = sql`SELECT ${sql.join(calls)}`;
  await (tag ? tagged(tag, statement) : statement).execute(trx);
}

import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';

/**
 * The largest lag of any streaming standby of this server, in milliseconds (the worst of write,
 * flush and replay lag in `pg_stat_replication`), 0 when none lags or none is connected.
 * @internal
 *
 * @example
 * ```ts
 * if ((await replicationLagMs(db)) > 5_000) await sleep(1_000);
 * ```
 */
export async function replicationLagMs(db: AnyDb): Promise<number> {
  const { rows } = await sql<{ lag_ms: number | null }>`
    SELECT (max(EXTRACT(EPOCH FROM GREATEST(write_lag, flush_lag, replay_lag))) * 1000)::float8 AS lag_ms
    FROM pg_stat_replication`.execute(db);
  return rows[0]?.lag_ms ?? 0;
}

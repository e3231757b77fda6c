import { sql } from 'kysely';
import type { AnyDb } from './any-db.js';

/**
 * What this role sees of the standbys in `pg_stat_replication`: the largest lag in milliseconds
 * (the worst of write, flush and replay lag; 0 when none lags, none is connected, or a caught-up
 * standby reports no lag), and how many standbys are connected but hidden from it. A role
 * without `pg_read_all_stats` (or superuser) sees a row per standby with every column but the
 * pid NULL: a lag it cannot see is not "no lag". @internal
 *
 * @example
 * ```ts
 * const { lagMs, hiddenStandbys } = await replicationLag(db);
 * if (hiddenStandbys > 0) throw new Error('grant pg_read_all_stats');
 * ```
 */
export async function replicationLag(
  db: AnyDb,
): Promise<{ readonly lagMs: number; readonly hiddenStandbys: number }> {
  const { rows } = await sql<{ lag_ms: number | null; hidden: number }>`
    SELECT (max(EXTRACT(EPOCH FROM GREATEST(write_lag, flush_lag, replay_lag))) * 1000)::float8 AS lag_ms,
      (count(*) FILTER (WHERE state IS NULL))::int AS hidden
    FROM pg_stat_replication`.execute(db);
  return { lagMs: rows[0]?.lag_ms ?? 0, hiddenStandbys: Number(rows[0]?.hidden ?? 0) };
}

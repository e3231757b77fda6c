import { type RawBuilder, sql } from 'kysely';
import { quoteIdent } from '../../db/identifiers.js';
import { ConfigurationError } from '../../errors.js';

const bodyQuote = '$pg_dual_read_fence$';

/**
 * Control migration 6: the phase fence as a function, `phase_fence(name, lock_timeout_ms)`.
 *
 * It reads the control row `FOR KEY SHARE` (rule `phase-fence`) with `lock_timeout` set for
 * that one statement (NULL: the transaction's own, as backfill batches use it), then restores
 * the caller's `lock_timeout`: a write waits a bounded time
 * for a phase change (or a session that holds the control row and hangs), and its own row locks
 * on persons keep the session's setting. One round trip, as the plain `SELECT ... FOR KEY
 * SHARE` it replaces. PL/pgSQL, not SQL: a SQL function's statements are all parsed (and their
 * tables locked) before the first runs, before the timeout is set.
 *
 * `SECURITY DEFINER` (owned by the role that ran `install()`): a runtime role given `EXECUTE`
 * takes the fence without the `UPDATE` privilege on the control table that `FOR KEY SHARE`
 * needs, so it cannot change the phase by hand. `EXECUTE` is revoked from `PUBLIC`.
 */
export function migration000006(controlSchema: string): RawBuilder<unknown>[] {
  const fn = sql.id(controlSchema, 'phase_fence');
  // Also the fence of backfill batches (inside their statement): no UPDATE privilege needed.
  const body = `
DECLARE
  previous text := current_setting('lock_timeout');
BEGIN
  -- Marks the transaction as the library's: the stray-write trigger (migration 7) skips it.
  PERFORM set_config('pg_dual_read.writer', migration_name, true);
  IF lock_timeout_ms IS NOT NULL THEN
    PERFORM set_config('lock_timeout', lock_timeout_ms::text || 'ms', true);
  END IF;
  RETURN QUERY
    SELECT m.phase, m.epoch::text, m.phase_changed_at
    FROM ${quoteIdent(controlSchema)}.migration m
    WHERE m.name = migration_name
    FOR KEY SHARE;
  PERFORM set_config('lock_timeout', previous, true);
END`;
  if (body.includes(bodyQuote)) {
    throw new ConfigurationError(`controlSchema must not contain ${bodyQuote}.`);
  }
  return [
    sql`CREATE FUNCTION ${fn}(migration_name text, lock_timeout_ms integer)
      RETURNS TABLE (phase text, epoch text, phase_changed_at timestamptz)
      LANGUAGE plpgsql VOLATILE SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp
      AS ${sql.raw(`${bodyQuote}${body}${bodyQuote}`)}`,
    sql`REVOKE ALL ON FUNCTION ${fn}(text, integer) FROM PUBLIC`,
    sql`COMMENT ON FUNCTION ${fn}(text, integer) IS
      'pg-dual-read: the phase fence of repository writes (FOR KEY SHARE on the control row, bounded by lock_timeout_ms).'`,
  ];
}

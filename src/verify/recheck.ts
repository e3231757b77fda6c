import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { personClasses } from '../model/mismatch-class.js';
import { classArray, classOf, type VerifyContext } from './verify-context.js';

/**
 * Re-classifies every stored person-level mismatch of the run from both tables as they are
 * now (one statement): keys that agree now are dropped, keys whose class changed are stored
 * under their new class. Returns how many keys changed. Repaired keys are left to
 * {@link confirmRepairs}. @internal
 */
export async function recheckOnce(context: VerifyContext): Promise<number> {
  const mm = context.mismatchTable;
  const { rows } = await sql<{ changed: string }>`
    WITH now AS (${classesNow(context, false)}), dropped AS (
      DELETE FROM ${mm} AS m USING now
      WHERE m.verification_id = ${context.verificationId}::bigint
        AND m.team_id = now.team_id AND m.person_id = now.person_id AND m.class = now.was
        AND now.class <> now.was
      RETURNING now.team_id, now.person_id, now.class
    ), moved AS (
      INSERT INTO ${mm} (verification_id, team_id, person_id, class)
      SELECT ${context.verificationId}::bigint, d.team_id, d.person_id, d.class FROM dropped AS d
      WHERE d.class = ANY(${classArray(personClasses)})
      ON CONFLICT DO NOTHING
    )
    SELECT count(*)::text AS changed FROM dropped`.execute(context.db);
  return Number(rows[0]?.changed ?? 0);
}

/**
 * Re-checks the run's mismatches once they settle: waits `settleMs`, re-classifies, and goes
 * on while keys keep changing, at most `attempts` times. A key a writer was changing during
 * the check ends under the class it has once the writes stop; a key that really differs stays.
 * @internal
 */
export async function recheckUntilSettled(
  context: VerifyContext,
  settleMs: number,
  attempts: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  let rechecks = 0;
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (!(await hasOpenPersonMismatches(context))) break;
    if (settleMs > 0) await sleep(settleMs, undefined, signal ? { signal } : undefined);
    rechecks++;
    if ((await recheckOnce(context)) === 0) break;
  }
  return rechecks;
}

async function hasOpenPersonMismatches(context: VerifyContext): Promise<boolean> {
  const { rows } = await sql<{ found: boolean }>`
    SELECT EXISTS (SELECT 1 FROM ${context.mismatchTable}
      WHERE verification_id = ${context.verificationId}::bigint AND repaired_at IS NULL
        AND class = ANY(${classArray(personClasses)})) AS found`.execute(context.db);
  return rows[0]?.found === true;
}

/**
 * After a repair: a repaired key that still mismatches (a writer raced the repair) is stored
 * again as an open mismatch under its current class. Returns how many. @internal
 */
export async function confirmRepairs(context: VerifyContext): Promise<number> {
  const mm = context.mismatchTable;
  const { rows } = await sql<{ reopened: string }>`
    WITH now AS (${classesNow(context, true)}), reopened AS (
      INSERT INTO ${mm} (verification_id, team_id, person_id, class)
      SELECT ${context.verificationId}::bigint, now.team_id, now.person_id, now.class FROM now
      WHERE now.class = ANY(${classArray(personClasses)})
      ON CONFLICT (verification_id, team_id, person_id, class) DO UPDATE SET repaired_at = NULL
      RETURNING 1
    )
    SELECT count(*)::text AS reopened FROM reopened`.execute(context.db);
  return Number(rows[0]?.reopened ?? 0);
}

/**
 * The run's stored person-level keys (open ones, or the repaired ones) with the class each has
 * in both tables now (`was`: the stored class).
 */
function classesNow(context: VerifyContext, repaired: boolean) {
  const { tables, mismatchTable: mm } = context;
  return sql`SELECT m.team_id, m.person_id, m.class AS was, ${classOf(context)} AS class
    FROM ${mm} AS m
    LEFT JOIN ${tables.old} AS o ON o.team_id = m.team_id AND o.id = m.person_id
    LEFT JOIN ${tables.new} AS n ON n.team_id = m.team_id AND n.id = m.person_id
    WHERE m.verification_id = ${context.verificationId}::bigint
      AND m.class = ANY(${classArray(personClasses)})
      AND ${repaired ? sql`m.repaired_at IS NOT NULL` : sql`m.repaired_at IS NULL`}`;
}

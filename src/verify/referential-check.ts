import { sql } from 'kysely';
import type { KeyRange } from '../model/key.js';
import { inRange } from '../persons/key-range.js';
import type { VerifyContext } from './verify-context.js';

/**
 * The distinct-ids checks of one key range, in one statement (one snapshot): distinct ids
 * whose person exists in neither table (`orphan_distinct_id`, keyed by the person they point
 * at) and persons of the merged view (new row, else old row) without any distinct id
 * (`person_without_distinct_id`). Returns the number of keys per class. @internal
 */
export async function checkDistinctIds(
  context: VerifyContext,
  range: KeyRange,
): Promise<Record<string, number>> {
  const { tables } = context;
  const { rows } = await sql<{ class: string; keys: string }>`
    WITH found AS (
      SELECT DISTINCT d.team_id, d.person_id, 'orphan_distinct_id' AS class
      FROM ${tables.distinctIds} AS d
      WHERE ${inRange(range, 'd', 'person_id')}
        AND NOT EXISTS (SELECT 1 FROM ${tables.new} AS n
          WHERE n.team_id = d.team_id AND n.id = d.person_id)
        AND NOT EXISTS (SELECT 1 FROM ${tables.old} AS o
          WHERE o.team_id = d.team_id AND o.id = d.person_id)
      UNION ALL
      SELECT p.team_id, p.id, 'person_without_distinct_id'
      FROM (
        SELECT n.team_id, n.id FROM ${tables.new} AS n WHERE ${inRange(range, 'n')}
        UNION ALL
        SELECT o.team_id, o.id FROM ${tables.old} AS o
        WHERE ${inRange(range, 'o')}
          AND NOT EXISTS (SELECT 1 FROM ${tables.new} AS n
            WHERE n.team_id = o.team_id AND n.id = o.id)
      ) AS p
      WHERE NOT EXISTS (SELECT 1 FROM ${tables.distinctIds} AS d
        WHERE d.team_id = p.team_id AND d.person_id = p.id)
    ), stored AS (
      INSERT INTO ${context.mismatchTable} (verification_id, team_id, person_id, class)
      SELECT ${context.verificationId}::bigint, f.team_id, f.person_id, f.class FROM found AS f
      ON CONFLICT DO NOTHING
    )
    SELECT f.class, count(*)::text AS keys FROM found AS f GROUP BY f.class`.execute(context.db);
  return Object.fromEntries(rows.map((r) => [r.class, Number(r.keys)]));
}

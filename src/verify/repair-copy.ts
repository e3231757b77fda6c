import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { tagged } from '../db/statement-tag.js';
import type { Key } from '../model/key.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import type { VerifyContext } from './verify-context.js';

/**
 * Copies the old rows of `keys` the new table lacks and overwrites the new rows still older
 * than their old row, reading the old rows `FOR SHARE` (rules `copy-never-overwrites` and
 * `copy-excludes-delete`). Call it in a transaction that holds the phase fence. @internal
 *
 * @example
 * ```ts
 * const { copied, updated } = await repairPage(trx, context, columns, keys);
 * ```
 */
export async function repairPage(
  trx: AnyDb,
  { tables }: VerifyContext,
  columns: PersonColumns,
  keys: readonly Key[],
): Promise<{ copied: number; updated: number }> {
  const copyable = columns.copyable;
  const settable = copyable.filter((c) => c !== 'team_id' && c !== 'id');
  const keySet = sql`SELECT k.team_id, k.person_id
    FROM unnest(${keys.map((k) => k.team)}::bigint[], ${keys.map((k) => k.id)}::bigint[])
      AS k(team_id, person_id)`;
  const inserted = await tagged(
    'repair-copy',
    sql`INSERT INTO ${tables.new} (${columnList(copyable)})
      SELECT ${columnList(copyable, 'o')} FROM ${tables.old} AS o
      WHERE (o.team_id, o.id) IN (${keySet})
        AND NOT EXISTS (SELECT 1 FROM ${tables.new} AS n WHERE n.team_id = o.team_id AND n.id = o.id)
      FOR SHARE OF o
      ON CONFLICT DO NOTHING`,
  ).execute(trx);
  const assignments = sql.join(settable.map((c) => sql`${sql.id(c)} = o.${sql.id(c)}`));
  const overwritten = await sql`UPDATE ${tables.new} AS n SET ${assignments}
    FROM (SELECT ${columnList(copyable, 'o0')} FROM ${tables.old} AS o0
          WHERE (o0.team_id, o0.id) IN (${keySet}) FOR SHARE OF o0) AS o
    WHERE n.team_id = o.team_id AND n.id = o.id
      AND coalesce(n.version, 0) < coalesce(o.version, 0)`.execute(trx);
  return {
    copied: Number(inserted.numAffectedRows ?? 0n),
    updated: Number(overwritten.numAffectedRows ?? 0n),
  };
}

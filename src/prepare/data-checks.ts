import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { quoteIdent } from '../db/identifiers.js';
import type { TableIndex } from '../db/table-indexes.js';
import type { ColumnShape, TableShape } from '../db/table-shape.js';
import type { PreflightProblem } from '../errors.js';
import type { FindingNames } from './dependent-findings.js';

/**
 * Checks the old table's data against the keys the new table will enforce, before it exists:
 * the primary key `(team_id, id)` (no NULL, no duplicate) and the unique `(team_id, uuid)`.
 * A key the old table already enforces (a unique index on some of its columns, not partial,
 * not on expressions) is not scanned; any other is counted with one `GROUP BY` over the old
 * table. Counts only, never values; the fix is the statement that lists them. @internal
 *
 * @example
 * ```ts
 * const problems = await dataProblems(trx, tables.old, oldShape, await readIndexes(trx, oldShape.oid), names);
 * ```
 */
export async function dataProblems(
  db: AnyDb,
  old: RawBuilder<unknown>,
  oldShape: TableShape,
  oldIndexes: readonly TableIndex[],
  names: FindingNames,
): Promise<PreflightProblem[]> {
  const problems: PreflightProblem[] = [];
  const column = (name: string) => oldShape.columns.find((c) => c.name === name);
  const keyColumns = ['team_id', 'id'].map(column);
  if (keyColumns.some((c) => c === undefined)) return problems;
  const nullable = (keyColumns as ColumnShape[]).filter((c) => !c.notNull);
  if (nullable.length > 0) {
    const problem = await nullKeys(
      db,
      old,
      names,
      nullable.map((c) => c.name),
    );
    if (problem) problems.push(problem);
  }
  const keys = column('uuid')
    ? [
        ['team_id', 'id'],
        ['team_id', 'uuid'],
      ]
    : [['team_id', 'id']];
  for (const key of keys) {
    if (enforced(oldIndexes, key)) continue;
    const problem = await duplicateKeys(db, old, names, key);
    if (problem) problems.push(problem);
  }
  return problems;
}

/** True when a unique index of the old table (plain columns, no predicate) covers `key`. */
function enforced(indexes: readonly TableIndex[], key: readonly string[]): boolean {
  return indexes.some(
    (i) =>
      i.unique &&
      !i.partial &&
      !i.expression &&
      i.columns.length > 0 &&
      i.columns.every((c) => key.includes(c)),
  );
}

async function nullKeys(
  db: AnyDb,
  old: RawBuilder<unknown>,
  names: FindingNames,
  columns: readonly string[],
): Promise<PreflightProblem | undefined> {
  const anyNull = sql.join(
    columns.map((c) => sql`${sql.id('o', c)} IS NULL`),
    sql` OR `,
  );
  const { rows } = await sql<{ n: string }>`
    SELECT count(*)::text AS n FROM ${old} AS o WHERE ${anyNull}`.execute(db);
  const count = Number(rows[0]?.n ?? 0);
  if (count === 0) return undefined;
  const where = columns.map((c) => `${quoteIdent(c)} IS NULL`).join(' OR ');
  return {
    check: 'null_keys_in_old',
    message:
      `${count} row(s) of ${names.old} have no ${columns.join(' or ')}, which the new table's ` +
      'primary key (team_id, id) requires: they could never be copied.',
    fix: `List them: SELECT ctid, team_id, id FROM ${names.quotedOld} WHERE ${where}; then give them a team and an id, or delete them, and run prepare() again.`,
  };
}

async function duplicateKeys(
  db: AnyDb,
  old: RawBuilder<unknown>,
  names: FindingNames,
  key: readonly string[],
): Promise<PreflightProblem | undefined> {
  const columns = sql.join(key.map((c) => sql.id('o', c)));
  const notNull = sql.join(
    key.map((c) => sql`${sql.id('o', c)} IS NOT NULL`),
    sql` AND `,
  );
  const { rows } = await sql<{ groups: string; rows: string }>`
    SELECT count(*)::text AS groups, coalesce(sum(d.n), 0)::text AS rows FROM (
      SELECT count(*) AS n FROM ${old} AS o WHERE ${notNull}
      GROUP BY ${columns} HAVING count(*) > 1
    ) AS d`.execute(db);
  const groups = Number(rows[0]?.groups ?? 0);
  if (groups === 0) return undefined;
  const list = key.join(', ');
  const quotedList = key.map(quoteIdent).join(', ');
  const uuidKey = key.includes('uuid');
  return {
    check: 'duplicate_keys_in_old',
    message:
      `${groups} group(s) of rows of ${names.old} (${rows[0]?.rows} rows) share a (${list}), ` +
      `which the new table keeps unique: the backfill would stop at the first of them.`,
    fix:
      `List them: SELECT ${quotedList}, array_agg(id ORDER BY id) AS ids FROM ${names.quotedOld} ` +
      `GROUP BY ${quotedList} HAVING count(*) > 1; then ` +
      (uuidKey
        ? 'merge each group into one person (moveDistinctIds() to the one kept, then deletePerson() of the others), or give the others new uuids (UPDATE ... SET uuid = gen_random_uuid() WHERE id = ...), '
        : 'merge or delete the duplicates, ') +
      'and run prepare() again.',
  };
}

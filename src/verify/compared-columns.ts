import { type RawBuilder, sql } from 'kysely';
import type { TableShape } from '../db/table-shape.js';
import { InvalidOptionsError } from '../errors.js';

/** A column a verification compares, with its type in the old table. @internal */
export interface ComparedColumn {
  readonly name: string;
  readonly type: string;
}

/** The key and the version are compared on their own, never as content. */
const notContent = new Set(['team_id', 'id', 'version']);

/**
 * The columns whose content a verification compares: the ones asked for, or every column the
 * two tables share except the key and `version`. Throws naming an unknown column.
 * @internal
 */
export function comparedColumns(
  oldShape: TableShape,
  newShape: TableShape,
  requested: readonly string[] | undefined,
): ComparedColumn[] {
  const inNew = new Set(newShape.columns.map((c) => c.name));
  if (requested === undefined) {
    return oldShape.columns
      .filter((c) => !notContent.has(c.name) && inNew.has(c.name))
      .map((c) => ({ name: c.name, type: c.type }));
  }
  const problems = requested.flatMap((name) => {
    const column = oldShape.columns.find((c) => c.name === name);
    if (!column || !inNew.has(name)) {
      return [`columns: "${name}" is not a column of both persons tables`];
    }
    if (notContent.has(name)) {
      return [`columns: "${name}" is compared anyway (key and version); leave it out`];
    }
    return [];
  });
  if (problems.length > 0) {
    const known = oldShape.columns.map((c) => c.name).filter((c) => !notContent.has(c));
    throw new InvalidOptionsError(
      `Invalid options for verify(): ${problems.join('; ')}. Columns that can be compared: ${known.join(', ')}.`,
      problems.map((message) => ({ path: 'columns', message })),
    );
  }
  return [...new Set(requested)].map((name) => {
    const column = oldShape.columns.find((c) => c.name === name);
    return { name, type: column?.type ?? 'text' };
  });
}

const isJson = (type: string) => type === 'json' || type === 'jsonb';
const isTimestampTz = (type: string) => type === 'timestamp with time zone';

/**
 * A column's value as compared for equality: JSON as `jsonb` (key order and whitespace do not
 * count), everything else as stored (timestamptz compares as an instant). @internal
 */
export function comparable(alias: string, column: ComparedColumn): RawBuilder<unknown> {
  const ref = sql.id(alias, column.name);
  return column.type === 'json' ? sql`${ref}::jsonb` : ref;
}

/**
 * A column's value in a form whose text is the same in any session, for hashing: JSON as
 * `jsonb_hash_extended` (equal exactly when the jsonb values are equal: key order, spacing and
 * number scale such as 1.5 / 1.50 do not count; SQL NULL stays NULL, unlike JSON `null`; the
 * same on servers of one major version), timestamptz as epoch seconds (independent of the
 * session's TimeZone). Other values go through `to_jsonb`, whose text does not depend on
 * DateStyle. @internal
 */
export function canonical(alias: string, column: ComparedColumn): RawBuilder<unknown> {
  const ref = sql.id(alias, column.name);
  if (isJson(column.type)) return sql`jsonb_hash_extended(${ref}::jsonb, 0)`;
  if (isTimestampTz(column.type)) return sql`extract(epoch FROM ${ref})`;
  return ref;
}

/** `ROW(a.c1, ...) IS DISTINCT FROM ROW(b.c1, ...)` over the compared columns. @internal */
export function contentDiffers(
  columns: readonly ComparedColumn[],
  left: string,
  right: string,
): RawBuilder<unknown> {
  if (columns.length === 0) return sql`false`;
  const side = (alias: string) => sql.join(columns.map((c) => comparable(alias, c)));
  return sql`ROW(${side(left)}) IS DISTINCT FROM ROW(${side(right)})`;
}

/** md5 of the canonical content (without key and version), as hex text. @internal */
export function contentHash(
  columns: readonly ComparedColumn[],
  alias: string,
): RawBuilder<unknown> {
  if (columns.length === 0) return sql`md5('')`;
  return sql`md5(jsonb_build_array(${sql.join(columns.map((c) => canonical(alias, c)))})::text)`;
}

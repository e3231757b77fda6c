import { createHash } from 'node:crypto';
import type { AnyDb } from '../db/any-db.js';
import { displayName, regclassText } from '../db/identifiers.js';
import { takenNames } from '../db/table-shape.js';
import type { PreflightProblem } from '../errors.js';

/**
 * Names of what `prepare()` creates beside the new table (its primary key, its `(team_id,
 * uuid)` index, its partitions, mirrored indexes). Postgres cuts every name at 63 bytes
 * (NAMEDATALEN - 1) without an error, so `<table>_p1` and `<table>_p10` of a long table name
 * would become the same name, and a 63-byte table's `<table>_pkey` the table's own name: the
 * names are cut here instead, with a hash that keeps them apart (the way Postgres's own
 * `ChooseRelationName` adds a number).
 */

/**
 * A relation `prepare()` would create, for the check that its name is free. @internal
 *
 * @example
 * ```ts
 * const created: CreatedRelation = { name: 'persons_new_p0', what: 'partition 0 of the new table', table: true };
 * ```
 */
export interface CreatedRelation {
  readonly name: string;
  /** What it is, for the message: `the new table`, `partition 3 of the new table`... */
  readonly what: string;
  /** A table also takes the name of a type (its row type). */
  readonly table: boolean;
}

/**
 * Postgres keeps at most 63 bytes of a name. @internal
 *
 * @example
 * ```ts
 * Buffer.byteLength(name, 'utf8') <= maxNameBytes;
 * ```
 */
export const maxNameBytes = 63;

// A suffix this short stays readable at the end of a cut name (`..._1a2b3c4d_p10`).
const keptSuffixBytes = 24;

const byteLength = (text: string) => Buffer.byteLength(text, 'utf8');

/**
 * `text` cut to at most `bytes` bytes of UTF-8, never inside a character (as Postgres cuts
 * names). @internal
 *
 * @example
 * ```ts
 * truncateToBytes('añb', 2); // 'a' (ñ takes two bytes)
 * ```
 */
export function truncateToBytes(text: string, bytes: number): string {
  let kept = '';
  let used = 0;
  for (const char of text) {
    used += byteLength(char);
    if (used > bytes) break;
    kept += char;
  }
  return kept;
}

/**
 * `<base>_<suffix>` when it fits in 63 bytes and is not in `taken`; else the base cut short,
 * a hash of the full name and the suffix (`<base cut>_<hash>_<suffix>`; a long suffix is cut
 * with the base). Deterministic: the same inputs give the same name. @internal
 *
 * @example
 * ```ts
 * relationName('posthog_person_new', 'pkey', new Set()); // 'posthog_person_new_pkey'
 * relationName('x'.repeat(63), 'p1', new Set()); // 'xxx...x_5d41402a_p1' (63 bytes)
 * ```
 */
export function relationName(base: string, suffix: string, taken: ReadonlySet<string>): string {
  const full = `${base}_${suffix}`;
  if (byteLength(full) <= maxNameBytes && !taken.has(full)) return full;
  const keepSuffix = byteLength(suffix) <= keptSuffixBytes;
  for (let attempt = 0; ; attempt++) {
    const hash = createHash('sha1').update(`${full}\u0000${attempt}`).digest('hex').slice(0, 8);
    const tail = keepSuffix ? `_${hash}_${suffix}` : `_${hash}`;
    const name = truncateToBytes(keepSuffix ? base : full, maxNameBytes - byteLength(tail)) + tail;
    if (!taken.has(name)) return name;
  }
}

/**
 * The names `prepare()` gives the new table's primary key, its `(team_id, uuid)` index and its
 * partitions: each at most 63 bytes, none equal to another or to the table's. @internal
 *
 * @example
 * ```ts
 * const names = newTableNames('posthog_person_new', 2);
 * // { table: 'posthog_person_new', primaryKey: 'posthog_person_new_pkey',
 * //   uuidIndex: 'posthog_person_new_team_id_uuid_key',
 * //   partitions: ['posthog_person_new_p0', 'posthog_person_new_p1'] }
 * ```
 */
export interface NewTableNames {
  readonly table: string;
  readonly primaryKey: string;
  readonly uuidIndex: string;
  readonly partitions: readonly string[];
}

/**
 * The {@link NewTableNames} of a new table `table` with `partitions` partitions (0: not
 * partitioned). @internal
 *
 * @example
 * ```ts
 * const { primaryKey, partitions } = newTableNames(options.newTable, 8);
 * ```
 */
export function newTableNames(table: string, partitions: number): NewTableNames {
  const taken = new Set([table]);
  const pick = (suffix: string) => {
    const name = relationName(table, suffix, taken);
    taken.add(name);
    return name;
  };
  const primaryKey = pick('pkey');
  const uuidIndex = pick('team_id_uuid_key');
  const partitionNames = Array.from({ length: partitions }, (_, remainder) =>
    pick(`p${remainder}`),
  );
  return { table, primaryKey, uuidIndex, partitions: partitionNames };
}

/**
 * Every name in `names`, for the check that none is taken in the schema. @internal
 *
 * @example
 * ```ts
 * const taken = await takenRelationNames(db, schema, allNewTableNames(names));
 * ```
 */
export function allNewTableNames(names: NewTableNames): string[] {
  return [names.table, names.primaryKey, names.uuidIndex, ...names.partitions];
}

/**
 * A problem for each name `prepare()` would create that a relation (or a type, for a table)
 * of the schema already has: `CREATE` would fail, or worse, a name Postgres cut would land on
 * another object. @internal
 *
 * @example
 * ```ts
 * report.problems.push(...(await takenNameProblems(trx, options.schema, plan.created)));
 * ```
 */
export async function takenNameProblems(
  db: AnyDb,
  schema: string,
  created: readonly CreatedRelation[],
): Promise<PreflightProblem[]> {
  if (created.length === 0) return [];
  const taken = await takenNames(
    db,
    schema,
    created.map((c) => c.name),
    created.filter((c) => c.table).map((c) => c.name),
  );
  return taken.flatMap(({ name, kind }) => {
    const relation = created.find((c) => c.name === name);
    if (!relation) return [];
    return [
      {
        check: 'name_taken_in_schema',
        message:
          `prepare() would create ${relation.what} as ${displayName(schema, name)}, but a ${kind} ` +
          'of that name exists there.',
        fix: `Rename or drop the ${kind} ${regclassText(schema, name)}, or set the newTable option to another name.`,
      },
    ];
  });
}

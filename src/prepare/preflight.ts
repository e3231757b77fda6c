import type { AnyDb } from '../db/any-db.js';
import { displayName, quoteIdent, regclassText } from '../db/identifiers.js';
import {
  columnNamed,
  foreignKeysBetween,
  hasUniqueKey,
  readTableShape,
  sequenceOf,
  type TableShape,
} from '../db/table-shape.js';
import type { PreflightProblem } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/** Columns the repository reads and writes; every other column is carried along. @internal */
export const requiredPersonColumns = ['id', 'team_id', 'uuid', 'properties', 'version'] as const;
/** @internal */
export const requiredDistinctIdColumns = ['team_id', 'distinct_id', 'person_id'] as const;

/** What preflight learnt, for prepare() to act on. @internal */
export interface PreflightReport {
  readonly problems: PreflightProblem[];
  readonly oldShape: TableShape | undefined;
  readonly newShape: TableShape | undefined;
  readonly distinctIdsShape: TableShape | undefined;
  /** Quoted regclass text of the sequence behind the old table's `id`. */
  readonly idSequence: string | undefined;
}

/**
 * Checks that the migration can run, without changing anything: both tables exist, the new
 * table has every column of the old one with the same type and a unique `(team_id, id)` key,
 * the old `id` has a sequence, and no foreign key ties the distinct-ids table to the old
 * table only (persons created in the new table would violate it). @internal
 *
 * @example
 * ```ts
 * const { problems } = await runPreflight(trx, options);
 * ```
 */
export async function runPreflight(
  db: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<PreflightReport> {
  const { schema, oldTable, newTable, distinctIdsTable } = options;
  const [oldShape, newShape, distinctIdsShape] = await Promise.all([
    readTableShape(db, schema, oldTable),
    readTableShape(db, schema, newTable),
    readTableShape(db, schema, distinctIdsTable),
  ]);
  const names = preflightNames(options);
  const problems = [
    ...oldTableProblems(oldShape, names),
    ...distinctIdsTableProblems(distinctIdsShape, names),
    ...(oldShape && newShape ? newTableProblems(oldShape, newShape, names) : []),
  ];
  let idSequence: string | undefined;
  if (oldShape && columnNamed(oldShape, 'id')) {
    idSequence = await sequenceOf(db, schema, oldTable, 'id');
    if (!idSequence) {
      problems.push({
        check: 'old_id_sequence_missing',
        message: `${names.old}.id is not fed by a sequence, so new persons could not share the id space.`,
        fix: `Create a sequence owned by ${names.old}.id (a serial or identity column).`,
      });
    }
  }
  if (oldShape && distinctIdsShape) {
    for (const fk of await foreignKeysBetween(db, distinctIdsShape.oid, oldShape.oid)) {
      problems.push({
        check: 'foreign_key_to_old_table',
        message: `Foreign key "${fk.name}" ties ${names.distinctIds} to ${names.old} only: distinct ids of persons created in ${names.new} would violate it. The repository keeps the same guarantee with row locks.`,
        fix: `ALTER TABLE ${names.quotedDistinctIds} DROP CONSTRAINT ${quoteIdent(fk.name)};`,
      });
    }
  }
  return { problems, oldShape, newShape, distinctIdsShape, idSequence };
}

/** How the tables are named in messages, and quoted in fixes (SQL to copy and run). */
interface PreflightNames {
  readonly old: string;
  readonly new: string;
  readonly distinctIds: string;
  readonly quotedNew: string;
  readonly quotedDistinctIds: string;
}

function preflightNames(options: ResolvedMigrationOptions): PreflightNames {
  const { schema, oldTable, newTable, distinctIdsTable } = options;
  return {
    old: displayName(schema, oldTable),
    new: displayName(schema, newTable),
    distinctIds: displayName(schema, distinctIdsTable),
    quotedNew: regclassText(schema, newTable),
    quotedDistinctIds: regclassText(schema, distinctIdsTable),
  };
}

function oldTableProblems(
  shape: TableShape | undefined,
  names: PreflightNames,
): PreflightProblem[] {
  if (!shape) {
    return [
      {
        check: 'old_table_missing',
        message: `The old persons table ${names.old} does not exist.`,
        fix: 'Set the oldTable and schema options to the table that holds persons today.',
      },
    ];
  }
  return requiredPersonColumns
    .filter((column) => !columnNamed(shape, column))
    .map((column) => ({
      check: 'old_column_missing',
      message: `The old persons table ${names.old} has no column "${column}".`,
      fix: `pg-dual-read needs the columns ${requiredPersonColumns.join(', ')}.`,
    }));
}

function distinctIdsTableProblems(
  shape: TableShape | undefined,
  names: PreflightNames,
): PreflightProblem[] {
  if (!shape) {
    return [
      {
        check: 'distinct_ids_table_missing',
        message: `The distinct-ids table ${names.distinctIds} does not exist.`,
        fix: 'Set the distinctIdsTable option to the table mapping distinct ids to persons.',
      },
    ];
  }
  return requiredDistinctIdColumns
    .filter((column) => !columnNamed(shape, column))
    .map((column) => ({
      check: 'distinct_ids_column_missing',
      message: `The distinct-ids table ${names.distinctIds} has no column "${column}".`,
      fix: `pg-dual-read needs the columns ${requiredDistinctIdColumns.join(', ')}.`,
    }));
}

/** A new table that exists already must take every copy: same columns and types, the key. */
function newTableProblems(
  oldShape: TableShape,
  newShape: TableShape,
  names: PreflightNames,
): PreflightProblem[] {
  const problems: PreflightProblem[] = [];
  for (const oldColumn of oldShape.columns) {
    const newColumn = columnNamed(newShape, oldColumn.name);
    if (!newColumn) {
      problems.push({
        check: 'column_missing_in_new',
        message: `Column "${oldColumn.name}" of ${names.old} is missing from ${names.new}.`,
        fix: `ALTER TABLE ${names.quotedNew} ADD COLUMN ${quoteIdent(oldColumn.name)} ${oldColumn.type};`,
      });
    } else if (newColumn.type !== oldColumn.type) {
      problems.push({
        check: 'column_type_mismatch',
        message: `Column "${oldColumn.name}" is ${oldColumn.type} in ${names.old} but ${newColumn.type} in ${names.new}.`,
        fix: `Give "${oldColumn.name}" the type ${oldColumn.type} in ${names.new}.`,
      });
    }
  }
  for (const newColumn of newShape.columns) {
    if (
      !columnNamed(oldShape, newColumn.name) &&
      newColumn.notNull &&
      !newColumn.defaultExpression
    ) {
      problems.push({
        check: 'new_column_without_default',
        message: `Column "${newColumn.name}" exists only in ${names.new} and is NOT NULL without a default, so copied rows cannot be inserted.`,
        fix: `Give "${newColumn.name}" a default or allow NULL.`,
      });
    }
  }
  if (!hasUniqueKey(newShape, ['team_id', 'id'])) {
    problems.push({
      check: 'new_key_missing',
      message: `${names.new} has no unique key on (team_id, id), which copies use to never duplicate a person.`,
      fix: `ALTER TABLE ${names.quotedNew} ADD UNIQUE (team_id, id);`,
    });
  }
  return problems;
}

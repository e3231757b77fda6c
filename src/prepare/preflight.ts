import type { AnyDb } from '../db/any-db.js';
import { idSequenceOf } from '../db/id-sequence.js';
import { displayName, quoteIdent, regclassText } from '../db/identifiers.js';
import { readDependents, type TableDependents } from '../db/table-dependents.js';
import { readIndexes } from '../db/table-indexes.js';
import { columnNamed, hasUniqueKey, readTableShape, type TableShape } from '../db/table-shape.js';
import type { PreflightProblem } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { reservedColumnNames } from '../persons/person-columns.js';
import { migrationTables } from '../persons/tables.js';
import { dataProblems } from './data-checks.js';
import { dependentFindings, type FindingNames } from './dependent-findings.js';
import type { MirroredTable } from './mirror.js';

/** Columns the repository reads and writes; every other column is carried along. @internal */
export const requiredPersonColumns = ['id', 'team_id', 'uuid', 'properties', 'version'] as const;
/** @internal */
export const requiredDistinctIdColumns = ['team_id', 'distinct_id', 'person_id'] as const;

/** What preflight learnt, for prepare() to act on. @internal */
export interface PreflightReport {
  /** What would break the migration: prepare() refuses, changing nothing. */
  readonly problems: PreflightProblem[];
  /** What needs attention but does not block (shown by prepare(), status() and the CLI). */
  readonly warnings: PreflightProblem[];
  readonly oldShape: TableShape | undefined;
  readonly newShape: TableShape | undefined;
  readonly distinctIdsShape: TableShape | undefined;
  /** Quoted regclass text of the sequence behind the old table's `id`. */
  readonly idSequence: string | undefined;
  /** The old table's indexes and dependents (empty when it does not exist). */
  readonly old: MirroredTable & { readonly dependents: TableDependents };
  /** The new table's, when it exists. */
  readonly fresh: MirroredTable | undefined;
  readonly names: FindingNames;
}

/**
 * Checks that the migration can run, without changing anything: the tables and their columns,
 * the new table's key, the sequence behind the old `id` (however the table got it), what
 * references or hangs off the old table (foreign keys from any table, views, triggers, rules,
 * publications, inheritance), and (`data`: always, only while the new table does not exist, or
 * never) the old table's rows against the keys the new table will enforce. @internal
 *
 * @example
 * ```ts
 * const { problems, warnings } = await runPreflight(trx, options, { data: 'always' });
 * ```
 */
export async function runPreflight(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  checks: { readonly data: 'always' | 'before-new-table' | 'never' },
): Promise<PreflightReport> {
  const { schema, oldTable, newTable, distinctIdsTable } = options;
  const [oldShape, newShape, distinctIdsShape] = await Promise.all([
    readTableShape(db, schema, oldTable),
    readTableShape(db, schema, newTable),
    readTableShape(db, schema, distinctIdsTable),
  ]);
  const names = findingNames(options);
  const problems = [
    ...oldTableProblems(oldShape, names),
    ...distinctIdsTableProblems(distinctIdsShape, names),
    ...(oldShape && newShape ? newTableProblems(oldShape, newShape, names) : []),
  ];
  const warnings: PreflightProblem[] = [];
  const old = oldShape
    ? await tableSide(db, oldShape.oid)
    : { indexes: [], dependents: noDependents };
  const fresh = newShape ? await tableSide(db, newShape.oid) : undefined;
  let idSequence: string | undefined;
  if (oldShape && columnNamed(oldShape, 'id')) {
    idSequence = await idSequenceOf(db, schema, oldTable, 'id');
    if (!idSequence) problems.push(noSequence(names));
  }
  if (oldShape) {
    const found = dependentFindings(old.dependents, names, {
      oldPartitioned: oldShape.partitioned,
      distinctIdsOid: distinctIdsShape?.oid,
    });
    problems.push(...found.problems);
    warnings.push(...found.warnings);
    // A dry run reports everything; a real run does not scan the data when it refuses anyway.
    const data =
      checks.data === 'always' ||
      (checks.data === 'before-new-table' && !newShape && problems.length === 0);
    if (data) {
      problems.push(
        ...(await dataProblems(db, migrationTables(options).old, oldShape, old.indexes, names)),
      );
    }
  }
  return {
    problems,
    warnings,
    oldShape,
    newShape,
    distinctIdsShape,
    idSequence,
    old,
    fresh,
    names,
  };
}

async function tableSide(db: AnyDb, oid: number) {
  const [indexes, dependents] = await Promise.all([readIndexes(db, oid), readDependents(db, oid)]);
  return { indexes, dependents };
}

const noDependents: TableDependents = {
  referencingForeignKeys: [],
  foreignKeys: [],
  views: [],
  triggers: [],
  rules: [],
  rowSecurity: false,
  policies: [],
  publications: [],
  parents: [],
  children: [],
  grants: [],
};

function noSequence(names: FindingNames): PreflightProblem {
  return {
    check: 'old_id_sequence_missing',
    message:
      `${names.old}.id has no sequence behind it (no serial or identity column, and no default ` +
      'calling nextval()), so new persons could not share the id space.',
    fix: `Give ${names.old}.id a default from a sequence above its largest id: CREATE SEQUENCE ...; ALTER TABLE ${names.quotedOld} ALTER COLUMN id SET DEFAULT nextval('...');`,
  };
}

/** How the tables are named in messages, and quoted in fixes (SQL to copy and run). @internal */
export function findingNames(options: ResolvedMigrationOptions): FindingNames {
  const { schema, oldTable, newTable, distinctIdsTable } = options;
  return {
    old: displayName(schema, oldTable),
    new: displayName(schema, newTable),
    distinctIds: displayName(schema, distinctIdsTable),
    quotedOld: regclassText(schema, oldTable),
    quotedNew: regclassText(schema, newTable),
    quotedDistinctIds: regclassText(schema, distinctIdsTable),
  };
}

function oldTableProblems(shape: TableShape | undefined, names: FindingNames): PreflightProblem[] {
  if (!shape) {
    return [
      {
        check: 'old_table_missing',
        message: `The old persons table ${names.old} does not exist.`,
        fix: 'Set the oldTable and schema options to the table that holds persons today.',
      },
    ];
  }
  const missing = requiredPersonColumns
    .filter((column) => !columnNamed(shape, column))
    .map((column) => ({
      check: 'old_column_missing',
      message: `The old persons table ${names.old} has no column "${column}".`,
      fix: `pg-dual-read needs the columns ${requiredPersonColumns.join(', ')}.`,
    }));
  const reserved = shape.columns
    .filter((column) => reservedColumnNames.includes(column.name))
    .map((column) => ({
      check: 'reserved_column_name',
      message:
        `Column "${column.name}" of ${names.old} has a name the repository's statements give a ` +
        `column of their own (${reservedColumnNames.join(', ')}): reads and writes would confuse them.`,
      fix: `ALTER TABLE ${names.quotedOld} RENAME COLUMN ${quoteIdent(column.name)} TO ...; then run prepare() again.`,
    }));
  return [...missing, ...reserved];
}

function distinctIdsTableProblems(
  shape: TableShape | undefined,
  names: FindingNames,
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
  names: FindingNames,
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

import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { PreflightProblem } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { mirrorPlan, missingInNew } from './mirror.js';
import {
  allNewTableNames,
  type CreatedRelation,
  type NewTableNames,
  newTableNames,
} from './new-table-names.js';
import type { PreflightReport } from './preflight.js';

/**
 * Takes the lock under which `prepare()` looks for the new table and creates it, until the
 * transaction ends: two `prepare()` calls at once would both find it missing. @internal
 *
 * @example
 * ```ts
 * await lockNewTableCreation(trx, options);
 * ```
 */
export async function lockNewTableCreation(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<void> {
  const key = `pg-dual-read:prepare:${options.schema}.${options.newTable}`;
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(trx);
}

/** The DDL `prepare()` runs on the new table, and what it could not mirror. @internal */
export interface NewTablePlan {
  readonly statements: readonly RawBuilder<unknown>[];
  readonly warnings: readonly PreflightProblem[];
  /** The relations the statements create (none when the new table exists). */
  readonly created: readonly CreatedRelation[];
}

/** Index bodies the new table gets from its own definition. */
const ownIndexBodies = ['USING btree (team_id, id)', 'USING btree (team_id, uuid)'];

/**
 * The statements that make the new table, when it is missing: created from the old one (same
 * columns, defaults, `NOT NULL` and `CHECK` constraints, generated columns, storage and
 * comments), primary key `(team_id, id)` (it includes `team_id` so the table can be
 * hash-partitioned by team), a unique `(team_id, uuid)` index, **every other index of the old
 * table** (expression and partial indexes included), its partitions (after the indexes: the
 * names Postgres picks for the partitions' indexes then avoid the mirrored ones), the old
 * table's grants, row-level security and policies, and an `id` default drawing from the old
 * table's sequence (rule `shared-sequence`; not `INCLUDING IDENTITY`: an identity column would
 * get a sequence of its own, and ids of the two tables could collide). Every name it gives fits
 * in 63 bytes and differs from the others ({@link newTableNames}).
 *
 * When the new table exists, only its `id` default is fixed if it draws from another sequence
 * (`newIdSequence`); the indexes, grants and policies it lacks are warnings, whose fixes create
 * them concurrently: building an index on a table in use is the operator's call. @internal
 *
 * @example
 * ```ts
 * for (const statement of newTablePlan(options, report, 8, undefined).statements) await statement.execute(trx);
 * ```
 */
export function newTablePlan(
  options: ResolvedMigrationOptions,
  report: PreflightReport,
  partitions: number | undefined,
  newIdSequence: string | undefined,
): NewTablePlan {
  const newRef = sql.id(options.schema, options.newTable);
  const sequence = report.idSequence ?? '';
  const target = {
    partitioned: report.newShape ? report.newShape.partitioned : (partitions ?? 0) > 0,
    oldTable: options.oldTable,
    newTable: options.newTable,
  };
  if (report.newShape && report.fresh) {
    const plan = mirrorPlan(report.names, report.old, report.fresh, { ...target, planned: [] });
    const idColumn = report.newShape.columns.find((c) => c.name === 'id');
    const statements: RawBuilder<unknown>[] = [];
    if (idColumn?.identity)
      statements.push(sql`ALTER TABLE ${newRef} ALTER COLUMN id DROP IDENTITY`);
    if (idColumn?.identity || newIdSequence !== sequence)
      statements.push(idDefault(newRef, sequence));
    return { statements, warnings: missingInNew(plan, report.names), created: [] };
  }
  const hasUuid = report.oldShape?.columns.some((c) => c.name === 'uuid') ?? false;
  const names = newTableNames(options.newTable, partitions ?? 0);
  const plan = mirrorPlan(
    report.names,
    report.old,
    { indexes: [], dependents: { grants: [], policies: [], rowSecurity: false } },
    {
      ...target,
      planned: hasUuid ? ownIndexBodies : ownIndexBodies.slice(0, 1),
      reserved: allNewTableNames(names),
    },
  );
  const raw = (statements: readonly string[]) => statements.map((s) => sql.raw(s));
  return {
    statements: [
      ...createStatements(options, newRef, names, hasUuid),
      ...raw(plan.indexes.map((i) => i.statement)),
      ...partitionStatements(options, newRef, names),
      ...raw([...plan.grants, ...plan.rowSecurity]),
      idDefault(newRef, sequence),
    ],
    warnings: plan.warnings,
    created: [
      ...createdRelations(names, hasUuid),
      ...plan.indexes.map(({ index, name }) => ({
        name,
        what: `the new table's copy of index "${index.name}"`,
        table: false,
      })),
    ],
  };
}

function createStatements(
  options: ResolvedMigrationOptions,
  newRef: RawBuilder<unknown>,
  names: NewTableNames,
  hasUuid: boolean,
): RawBuilder<unknown>[] {
  const oldRef = sql.id(options.schema, options.oldTable);
  const partitionClause = names.partitions.length > 0 ? sql` PARTITION BY HASH (team_id)` : sql``;
  const statements = [
    sql`CREATE TABLE ${newRef} (LIKE ${oldRef}
      INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE
      INCLUDING COMMENTS)${partitionClause}`,
    sql`ALTER TABLE ${newRef} ADD CONSTRAINT ${sql.id(names.primaryKey)} PRIMARY KEY (team_id, id)`,
  ];
  if (hasUuid) {
    statements.push(
      sql`CREATE UNIQUE INDEX ${sql.id(names.uuidIndex)} ON ${newRef} (team_id, uuid)`,
    );
  }
  return statements;
}

function partitionStatements(
  options: ResolvedMigrationOptions,
  newRef: RawBuilder<unknown>,
  names: NewTableNames,
): RawBuilder<unknown>[] {
  const modulus = names.partitions.length;
  return names.partitions.map(
    (partition, remainder) => sql`CREATE TABLE ${sql.id(options.schema, partition)}
      PARTITION OF ${newRef}
      FOR VALUES WITH (MODULUS ${sql.lit(modulus)}, REMAINDER ${sql.lit(remainder)})`,
  );
}

function createdRelations(names: NewTableNames, hasUuid: boolean): CreatedRelation[] {
  return [
    { name: names.table, what: 'the new table', table: true },
    { name: names.primaryKey, what: "the new table's primary key", table: false },
    ...(hasUuid
      ? [{ name: names.uuidIndex, what: "the new table's (team_id, uuid) index", table: false }]
      : []),
    ...names.partitions.map((name, remainder) => ({
      name,
      what: `partition ${remainder} of the new table`,
      table: true,
    })),
  ];
}

function idDefault(newRef: RawBuilder<unknown>, sequence: string): RawBuilder<unknown> {
  return sql`ALTER TABLE ${newRef} ALTER COLUMN id SET DEFAULT nextval(${sql.lit(sequence)}::regclass)`;
}

import createDebug from 'debug';
import { sql } from 'kysely';
import { requireCurrentControlSchema } from '../control/install.js';
import type { AnyDb } from '../db/any-db.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { readTableShape, type TableShape } from '../db/table-shape.js';
import { PreflightError } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import type { ResolvedPrepareOptions } from '../options/prepare-options.js';
import { runPreflight } from './preflight.js';

const debug = createDebug('pg-dual-read:prepare');

/**
 * What `prepare()` did.
 *
 * @example
 * ```ts
 * const result = await migration.prepare({ partitions: 8 });
 * console.log(result.createdNewTable ? 'created' : 'reused', result.idSequence);
 * ```
 */
export interface PrepareResult {
  /** True when this call created the new table. */
  readonly createdNewTable: boolean;
  /** Hash partitions of the new table by `team_id` (0 when not partitioned). */
  readonly partitions: number;
  /** The sequence that now feeds `id` in both tables. */
  readonly idSequence: string;
  /** True when this call registered the migration in the control schema. */
  readonly registered: boolean;
}

/**
 * Preflight, then create the new table if missing, point its `id` default at the old id
 * sequence and register the migration, all in one transaction: when a check fails, nothing
 * changed. @internal (use `migration.prepare()`)
 */
export async function prepareMigration(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  prepareOptions: ResolvedPrepareOptions,
): Promise<PrepareResult> {
  return sanitizeErrors(`prepare() of migration "${options.name}"`, () =>
    prepareInTransaction(handle, options, prepareOptions),
  );
}

async function prepareInTransaction(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  prepareOptions: ResolvedPrepareOptions,
): Promise<PrepareResult> {
  await requireCurrentControlSchema(handle, options.controlSchema, 'prepare()');
  return handle.db.transaction().execute(async (trx) => {
    // Two prepare() calls at once would both find the new table missing.
    await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`pg-dual-read:prepare:${options.schema}.${options.newTable}`}, 0))`.execute(
      trx,
    );
    const report = await runPreflight(trx, options);
    const registration = await registrationProblem(trx, options);
    if (registration) report.problems.push(registration);
    if (report.problems.length > 0 || !report.oldShape || !report.idSequence) {
      throw new PreflightError(report.problems);
    }
    let createdNewTable = false;
    let newShape = report.newShape;
    if (!newShape) {
      await createNewTable(trx, options, prepareOptions.partitions);
      createdNewTable = true;
      newShape = await readTableShape(trx, options.schema, options.newTable);
    }
    await shareIdSequence(trx, options, report.idSequence, newShape);
    const inserted = await sql`
      INSERT INTO ${sql.id(options.controlSchema, 'migration')}
        (name, schema_name, old_table, new_table, distinct_ids_table)
      VALUES (${options.name}, ${options.schema}, ${options.oldTable}, ${options.newTable},
        ${options.distinctIdsTable})
      ON CONFLICT (name) DO NOTHING`.execute(trx);
    const partitions = await partitionCount(trx, newShape);
    debug('prepared %s (created=%s, partitions=%d)', options.name, createdNewTable, partitions);
    return {
      createdNewTable,
      partitions,
      idSequence: report.idSequence,
      registered: (inserted.numAffectedRows ?? 0n) > 0n,
    };
  });
}

async function registrationProblem(trx: AnyDb, options: ResolvedMigrationOptions) {
  const { rows } = await sql<{
    schema_name: string;
    old_table: string;
    new_table: string;
    distinct_ids_table: string;
  }>`SELECT schema_name, old_table, new_table, distinct_ids_table
     FROM ${sql.id(options.controlSchema, 'migration')} WHERE name = ${options.name}`.execute(trx);
  const row = rows[0];
  if (!row) return undefined;
  const same =
    row.schema_name === options.schema &&
    row.old_table === options.oldTable &&
    row.new_table === options.newTable &&
    row.distinct_ids_table === options.distinctIdsTable;
  if (same) return undefined;
  return {
    check: 'migration_registered_with_other_tables',
    message: `Migration "${options.name}" is already registered for ${row.schema_name}.${row.old_table} -> ${row.schema_name}.${row.new_table}.`,
    fix: 'Use the same table options as when it was prepared, or another migration name.',
  };
}

async function createNewTable(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  partitions: number | undefined,
): Promise<void> {
  const oldRef = sql.id(options.schema, options.oldTable);
  const newRef = sql.id(options.schema, options.newTable);
  // Not INCLUDING IDENTITY: an identity column would get a sequence of its own, and ids of
  // the two tables could collide. The id default is pointed at the old sequence below.
  const partitionClause = partitions ? sql`PARTITION BY HASH (team_id)` : sql``;
  await sql`CREATE TABLE ${newRef} (LIKE ${oldRef}
    INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE
    INCLUDING COMMENTS) ${partitionClause}`.execute(trx);
  // The key includes team_id so the table can be hash-partitioned by team.
  await sql`ALTER TABLE ${newRef} ADD PRIMARY KEY (team_id, id)`.execute(trx);
  const oldShape = await readTableShape(trx, options.schema, options.oldTable);
  if (oldShape?.columns.some((c) => c.name === 'uuid')) {
    await sql`CREATE UNIQUE INDEX ${sql.id(`${options.newTable}_team_id_uuid_key`.slice(0, 63))}
      ON ${newRef} (team_id, uuid)`.execute(trx);
  }
  for (let remainder = 0; remainder < (partitions ?? 0); remainder++) {
    const name = `${options.newTable}_p${remainder}`;
    await sql`CREATE TABLE ${sql.id(options.schema, name)} PARTITION OF ${newRef}
      FOR VALUES WITH (MODULUS ${sql.lit(partitions ?? 0)}, REMAINDER ${sql.lit(remainder)})`.execute(
      trx,
    );
  }
}

async function shareIdSequence(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  sequence: string,
  newShape: TableShape | undefined,
): Promise<void> {
  const newRef = sql.id(options.schema, options.newTable);
  const idColumn = newShape?.columns.find((c) => c.name === 'id');
  if (idColumn?.identity)
    await sql`ALTER TABLE ${newRef} ALTER COLUMN id DROP IDENTITY`.execute(trx);
  await sql`ALTER TABLE ${newRef} ALTER COLUMN id SET DEFAULT nextval(${sql.lit(sequence)}::regclass)`.execute(
    trx,
  );
}

async function partitionCount(trx: AnyDb, shape: TableShape | undefined): Promise<number> {
  if (!shape?.partitioned) return 0;
  const { rows } = await sql<{ count: number }>`
    SELECT count(*)::int AS count FROM pg_inherits WHERE inhparent = ${shape.oid}`.execute(trx);
  return rows[0]?.count ?? 0;
}

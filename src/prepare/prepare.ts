import createDebug from 'debug';
import { requireCurrentControlSchema } from '../control/install.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { partitionCount, readTableShape } from '../db/table-shape.js';
import { PreflightError, type PreflightProblem } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import type { ResolvedPrepareOptions } from '../options/prepare-options.js';
import { type MigrationRegistration, PhaseStore } from '../phases/phase-store.js';
import { createNewTable, lockNewTableCreation, shareIdSequence } from './new-table.js';
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
  const phases = new PhaseStore(options);
  return handle.db.transaction().execute(async (trx) => {
    await lockNewTableCreation(trx, options);
    const report = await runPreflight(trx, options);
    const registration = registrationProblem(options, await phases.registration(trx));
    if (registration) report.problems.push(registration);
    if (report.problems.length > 0 || !report.oldShape || !report.idSequence) {
      throw new PreflightError(report.problems);
    }
    let newShape = report.newShape;
    if (!newShape) {
      await createNewTable(trx, options, prepareOptions.partitions);
      newShape = await readTableShape(trx, options.schema, options.newTable);
    }
    await shareIdSequence(trx, options, report.idSequence, newShape);
    const registered = await phases.register(trx);
    const partitions = newShape?.partitioned ? await partitionCount(trx, newShape.oid) : 0;
    const createdNewTable = report.newShape === undefined;
    debug('prepared %s (created=%s, partitions=%d)', options.name, createdNewTable, partitions);
    return { createdNewTable, partitions, idSequence: report.idSequence, registered };
  });
}

/** A migration of this name registered for other tables is a preflight problem. */
function registrationProblem(
  options: ResolvedMigrationOptions,
  registered: MigrationRegistration | undefined,
): PreflightProblem | undefined {
  if (!registered) return undefined;
  const same =
    registered.schema === options.schema &&
    registered.oldTable === options.oldTable &&
    registered.newTable === options.newTable &&
    registered.distinctIdsTable === options.distinctIdsTable;
  if (same) return undefined;
  return {
    check: 'migration_registered_with_other_tables',
    message: `Migration "${options.name}" is already registered for ${registered.schema}.${registered.oldTable} -> ${registered.schema}.${registered.newTable}.`,
    fix: 'Use the same table options as when it was prepared, or another migration name.',
  };
}

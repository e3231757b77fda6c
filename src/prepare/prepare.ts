import createDebug from 'debug';
import { type RawBuilder, sql } from 'kysely';
import { requireCurrentControlSchema } from '../control/install.js';
import type { AnyDb } from '../db/any-db.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { idSequenceOf } from '../db/id-sequence.js';
import { setLocal } from '../db/local-settings.js';
import { isSqlState, sanitizeErrors, toQueryFailedError } from '../db/query-failed.js';
import { partitionCount, readTableShape } from '../db/table-shape.js';
import { commit } from '../db/transaction.js';
import { PreflightError, type PreflightProblem } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import type { ResolvedPrepareOptions } from '../options/prepare-options.js';
import { type MigrationRegistration, PhaseStore } from '../phases/phase-store.js';
import { lockNewTableCreation, newTablePlan } from './new-table.js';
import { takenNameProblems } from './new-table-names.js';
import { runPreflight } from './preflight.js';

const debug = createDebug('pg-dual-read:prepare');

/**
 * What `prepare()` did (or, with `dryRun`, would do).
 *
 * @example
 * ```ts
 * const result = await migration.prepare({ partitions: 8 });
 * console.log(result.createdNewTable ? 'created' : 'reused', result.idSequence);
 * for (const w of result.warnings) console.warn(w.check, w.message, w.fix ?? '');
 * ```
 */
export interface PrepareResult {
  /** True when this call created the new table (with `dryRun`: would create it). */
  readonly createdNewTable: boolean;
  /** Hash partitions of the new table by `team_id` (0 when not partitioned). */
  readonly partitions: number;
  /** The sequence that feeds `id` in both tables (empty when none was found: see problems). */
  readonly idSequence: string;
  /** True when this call registered the migration in the control schema. */
  readonly registered: boolean;
  /** True for `prepare({ dryRun: true })`: nothing was changed. */
  readonly dryRun: boolean;
  /** The schema changes run (or, with `dryRun`, that would run), in order. */
  readonly ddl: readonly string[];
  /**
   * What would make `prepare()` refuse: always empty after a real run (it throws
   * {@link PreflightError} instead); with `dryRun`, every problem found.
   */
  readonly problems: readonly PreflightProblem[];
  /** What needs attention but does not block: views, triggers, publications, indexes the new table lacks... */
  readonly warnings: readonly PreflightProblem[];
}

/**
 * Preflight, then create the new table if missing (or fix the `id` default of an existing
 * one) and register the migration, all in one transaction: when a check fails, nothing
 * changed. With `dryRun`, the same transaction is rolled back and the result says what would
 * have been done. @internal (use `migration.prepare()`)
 */
export async function prepareMigration(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  prepareOptions: ResolvedPrepareOptions,
): Promise<PrepareResult> {
  return sanitizeErrors(`prepare() of migration "${options.name}"`, async () => {
    await requireCurrentControlSchema(handle, options.controlSchema, 'prepare()');
    return handle.db.connection().execute(async (connection) => {
      await sql`BEGIN`.execute(connection);
      let result: PrepareResult;
      try {
        // Bounded waits: a lock held by someone else's DDL on the old table, or this
        // transaction's own client hanging while it holds the new table's locks.
        await setLocal(connection, {
          lock_timeout: `${options.phaseChangeLockTimeoutMs}ms`,
          idle_in_transaction_session_timeout: '5000ms',
        });
        result = await prepareInTransaction(connection, options, prepareOptions).catch(
          (error: unknown) => {
            throw isSqlState(error, '55P03') ? lockTimeoutRefusal(options) : error;
          },
        );
      } catch (error) {
        await sql`ROLLBACK`.execute(connection).catch(() => undefined);
        throw error;
      }
      if (result.dryRun) await sql`ROLLBACK`.execute(connection);
      else await commit(connection);
      return result;
    });
  });
}

async function prepareInTransaction(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  prepareOptions: ResolvedPrepareOptions,
): Promise<PrepareResult> {
  const dryRun = prepareOptions.dryRun;
  const phases = new PhaseStore(options);
  await lockNewTableCreation(trx, options);
  // The scan of the old rows: when the new table (and its keys) does not exist yet, or asked.
  const report = await runPreflight(trx, options, { data: dryRun ? 'always' : 'before-new-table' });
  const registration = registrationProblem(options, await phases.registration(trx));
  if (registration) report.problems.push(registration);
  const createdNewTable = report.newShape === undefined;
  if (!dryRun && report.problems.length > 0) {
    throw new PreflightError(report.problems, report.warnings);
  }
  let ddl: string[] = [];
  let warnings = report.warnings;
  if (report.oldShape && report.idSequence) {
    const newIdSequence = report.newShape
      ? await idSequenceOf(trx, options.schema, options.newTable, 'id')
      : undefined;
    const plan = newTablePlan(options, report, prepareOptions.partitions, newIdSequence);
    ddl = plan.statements.map((statement) => statement.compile(trx).sql);
    warnings = [...warnings, ...plan.warnings];
    report.problems.push(...(await takenNameProblems(trx, options.schema, plan.created)));
    if (!dryRun && report.problems.length > 0) throw new PreflightError(report.problems, warnings);
    const failed = await runDdl(trx, plan.statements, dryRun);
    if (failed) report.problems.push(failed);
  }
  const newShape = await readTableShape(trx, options.schema, options.newTable);
  const registered = dryRun
    ? (await phases.registration(trx)) === undefined
    : await phases.register(trx);
  const partitions = newShape?.partitioned ? await partitionCount(trx, newShape.oid) : 0;
  debug(
    'prepared %s (created=%s, partitions=%d, dry run=%s)',
    options.name,
    createdNewTable,
    partitions,
    dryRun,
  );
  return {
    createdNewTable,
    partitions,
    idSequence: report.idSequence ?? '',
    registered,
    dryRun,
    ddl,
    problems: report.problems,
    warnings,
  };
}

/**
 * Runs the new table's DDL. A dry run runs it inside a savepoint and reports a statement that
 * fails as a problem (the caller rolls everything back anyway); a real run lets it fail.
 */
async function runDdl(
  trx: AnyDb,
  statements: readonly RawBuilder<unknown>[],
  dryRun: boolean,
): Promise<PreflightProblem | undefined> {
  if (dryRun) await sql`SAVEPOINT pg_dual_read_prepare`.execute(trx);
  for (const statement of statements) {
    try {
      await statement.execute(trx);
    } catch (error) {
      if (!dryRun) throw error;
      await sql`ROLLBACK TO SAVEPOINT pg_dual_read_prepare`.execute(trx);
      const failed = toQueryFailedError(error, statement.compile(trx).sql, 0);
      return {
        check: 'ddl_would_fail',
        message: `prepare() would fail at: ${failed.message}`,
      };
    }
  }
  return undefined;
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

function lockTimeoutRefusal(options: ResolvedMigrationOptions): PreflightError {
  return new PreflightError([
    {
      check: 'lock_timeout',
      message:
        `prepare() waited phaseChangeLockTimeoutMs (${options.phaseChangeLockTimeoutMs} ms) for ` +
        'a lock on the persons tables or the control schema (another session holds one: DDL, ' +
        'a long transaction) and changed nothing.',
      fix:
        'Find the holder (SELECT pid, query FROM pg_stat_activity WHERE cardinality(' +
        'pg_blocking_pids(pid)) > 0), let it finish, and run prepare() again (or raise ' +
        'phaseChangeLockTimeoutMs).',
    },
  ]);
}

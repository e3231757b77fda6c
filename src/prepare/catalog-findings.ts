import type { AnyDb } from '../db/any-db.js';
import type { PreflightProblem } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { mirrorPlan, missingInNew } from './mirror.js';
import { runPreflight } from './preflight.js';

/**
 * What `status()` shows of the tables' neighbourhood at any time: every finding of preflight
 * that the catalog alone reveals (no scan of the data), problems and warnings alike (a foreign
 * key added after `prepare()` is a problem now), and the old table's indexes that the new
 * table still lacks. @internal
 *
 * @example
 * ```ts
 * const { warnings, missingIndexes } = await catalogFindings(db, options);
 * ```
 */
export async function catalogFindings(
  db: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<{ warnings: PreflightProblem[]; missingIndexes: string[] }> {
  const report = await runPreflight(db, options, { data: 'never' });
  if (!report.newShape || !report.fresh) {
    return { warnings: [...report.problems, ...report.warnings], missingIndexes: [] };
  }
  const plan = mirrorPlan(report.names, report.old, report.fresh, {
    partitioned: report.newShape.partitioned,
    oldTable: options.oldTable,
    newTable: options.newTable,
    planned: [],
  });
  return {
    warnings: [...report.problems, ...report.warnings, ...missingInNew(plan, report.names)],
    missingIndexes: plan.indexes.map((i) => i.index.name),
  };
}

import { quoteIdent } from '../db/identifiers.js';
import type { TableDependents } from '../db/table-dependents.js';
import type { PreflightProblem } from '../errors.js';
import { strayTriggerPrefix } from '../phases/stray-writes.js';

/** How the tables are named in findings: for messages, and quoted for fixes (SQL to run). */
export interface FindingNames {
  readonly old: string;
  readonly new: string;
  readonly distinctIds: string;
  readonly quotedOld: string;
  readonly quotedNew: string;
  readonly quotedDistinctIds: string;
}

/**
 * What references or hangs off the old table, as preflight findings: `problems` would break
 * the migration (refused, with a fix), `warnings` only need attention (shown by `prepare()`,
 * `status()` and the CLI). Row-level security policies and grants are not here: the new table
 * gets them (see `new-table.ts`). @internal
 *
 * @example
 * ```ts
 * const { problems, warnings } = dependentFindings(dependents, names, { oldPartitioned: false, distinctIdsOid });
 * ```
 */
export function dependentFindings(
  dependents: TableDependents,
  names: FindingNames,
  tables: { readonly oldPartitioned: boolean; readonly distinctIdsOid: number | undefined },
): { problems: PreflightProblem[]; warnings: PreflightProblem[] } {
  const problems: PreflightProblem[] = [];
  const warnings: PreflightProblem[] = [];
  for (const fk of dependents.referencingForeignKeys) {
    const fromDistinctIds = fk.tableOid === tables.distinctIdsOid;
    problems.push({
      check: 'foreign_key_to_old_table',
      message:
        `Foreign key "${fk.name}" ties ${fromDistinctIds ? names.distinctIds : fk.table} to ` +
        `${names.old} only: rows pointing at persons created in ${names.new} would violate it.` +
        (fromDistinctIds
          ? ' The repository keeps the same guarantee with row locks.'
          : ' Drop it for the migration and add it again on the new table after finalize().'),
      fix: `ALTER TABLE ${fromDistinctIds ? names.quotedDistinctIds : fk.table} DROP CONSTRAINT ${quoteIdent(fk.name)};`,
    });
  }
  if (dependents.children.length > 0 && !tables.oldPartitioned) {
    problems.push({
      check: 'old_table_has_children',
      message:
        `Tables inherit from ${names.old} (${dependents.children.join(', ')}): their rows are ` +
        'read as persons of the old table by every merged read, the backfill and verification.',
      fix: `Detach them (ALTER TABLE child NO INHERIT ${names.quotedOld}) or migrate each table on its own.`,
    });
  }
  for (const fk of dependents.foreignKeys) {
    warnings.push({
      check: 'foreign_key_not_copied',
      message: `Foreign key "${fk.name}" of ${names.old} (${fk.definition}) is not created on ${names.new}.`,
      fix: `After the backfill: ALTER TABLE ${names.quotedNew} ADD CONSTRAINT ${quoteIdent(fk.name)} ${fk.definition} NOT VALID; then VALIDATE CONSTRAINT.`,
    });
  }
  for (const view of dependents.views) {
    const kind = view.materialized ? 'Materialized view' : 'View';
    warnings.push({
      check: 'view_reads_old_table',
      message:
        `${kind} ${view.name} reads ${names.old}: during dual_read it misses persons created ` +
        `or updated in ${names.new}, and after finalize() it still reads the retired table.`,
      fix: `Recreate it on ${names.new} (or on the merged read) before cutover.`,
    });
  }
  // The library's own stray-write trigger (from dual_read on) is not the user's concern.
  for (const trigger of dependents.triggers.filter((t) => !t.name.startsWith(strayTriggerPrefix))) {
    warnings.push({
      check: 'trigger_on_old_table',
      message:
        `Trigger "${trigger.name}" fires on writes to ${names.old} only; from dual_read on, ` +
        `writes go to ${names.new} and it no longer fires for them (${trigger.definition}).`,
      fix: `Recreate it on ${names.new} if it must keep firing; drop it if it copied rows between the tables.`,
    });
  }
  for (const rule of dependents.rules) {
    warnings.push({
      check: 'rule_on_old_table',
      message: `Rule "${rule.name}" rewrites statements on ${names.old} only (${rule.definition}).`,
      fix: `Recreate it on ${names.new} if it must apply there.`,
    });
  }
  for (const publication of dependents.publications) {
    warnings.push({
      check: 'publication_of_old_table',
      message:
        `Publication "${publication}" publishes ${names.old}: logical replication or change ` +
        `data capture sees no write made in ${names.new} unless it publishes that table too.`,
      fix: `ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${names.quotedNew};`,
    });
  }
  if (dependents.parents.length > 0) {
    warnings.push({
      check: 'old_table_inherits',
      message: `${names.old} inherits from ${dependents.parents.join(', ')}: queries on those tables see its rows, never those of ${names.new}.`,
    });
  }
  return { problems, warnings };
}

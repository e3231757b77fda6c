import { quoteIdent } from '../db/identifiers.js';
import type { TableDependents } from '../db/table-dependents.js';
import type { TableIndex } from '../db/table-indexes.js';
import type { PreflightProblem } from '../errors.js';
import type { FindingNames } from './dependent-findings.js';
import { relationName } from './new-table-names.js';

/**
 * What the new table lacks of the old one's indexes, grants and row-level security, as the
 * statements that give it them (identifiers quoted; index bodies and policy expressions as the
 * catalog prints them), and the warnings for what cannot be mirrored as is. @internal
 *
 * @example
 * ```ts
 * const plan = mirrorPlan(names, old, fresh, { partitioned: true, oldTable, newTable, planned: [] });
 * for (const statement of plan.statements) await sql.raw(statement).execute(trx);
 * ```
 */
export interface MirrorPlan {
  /** Old indexes the new table has no equivalent of (same body), with the statement for each. */
  readonly indexes: readonly {
    readonly index: TableIndex;
    /** The name the new table's copy gets (at most 63 bytes, not taken). */
    readonly name: string;
    readonly statement: string;
  }[];
  /** `GRANT` statements for privileges on the old table the new one lacks. */
  readonly grants: readonly string[];
  /** `ALTER TABLE ... ENABLE ROW LEVEL SECURITY` and `CREATE POLICY` statements. */
  readonly rowSecurity: readonly string[];
  readonly warnings: readonly PreflightProblem[];
}

/** A table as the mirror compares it. @internal */
export interface MirroredTable {
  readonly indexes: readonly TableIndex[];
  readonly dependents: Pick<TableDependents, 'grants' | 'policies' | 'rowSecurity'>;
}

/**
 * The statements that give the new table what it lacks of the old one. `planned` lists index
 * bodies the new table gets anyway (its primary key, the `(team_id, uuid)` index), `reserved`
 * the names its own key, index and partitions take (no mirrored index gets one). An old
 * unique index without `team_id` cannot be unique on a table hash-partitioned by `team_id`:
 * it is mirrored as a plain index, with a warning. @internal
 *
 * @example
 * ```ts
 * const plan = mirrorPlan(names, old, fresh, { partitioned: false, oldTable, newTable, planned });
 * ```
 */
export function mirrorPlan(
  names: FindingNames,
  old: MirroredTable,
  fresh: MirroredTable,
  target: {
    readonly partitioned: boolean;
    readonly oldTable: string;
    readonly newTable: string;
    readonly planned: readonly string[];
    readonly reserved?: readonly string[];
  },
): MirrorPlan {
  const warnings: PreflightProblem[] = [];
  const have = new Set([...fresh.indexes.map((i) => i.body), ...target.planned]);
  const taken = new Set([
    target.newTable,
    ...fresh.indexes.map((i) => i.name),
    ...(target.reserved ?? []),
  ]);
  const indexes: { index: TableIndex; name: string; statement: string }[] = [];
  for (const index of old.indexes) {
    if (have.has(index.body)) continue;
    have.add(index.body);
    const unique = index.unique && !(target.partitioned && !index.columns.includes('team_id'));
    if (index.unique && !unique) {
      warnings.push({
        check: 'unique_index_not_unique_in_new',
        message:
          `Index "${index.name}" of ${names.old} is unique without team_id; ${names.new} is ` +
          'hash-partitioned by team_id, where a unique index must include it: it is created ' +
          'as a plain index, and the uniqueness is not enforced across partitions.',
      });
    }
    // The old primary key becomes a unique index (the new key is (team_id, id)), named so.
    const oldName = index.primary
      ? `${target.oldTable}_${index.columns.join('_')}_key`
      : index.name;
    const name = mirroredIndexName(oldName, target.oldTable, target.newTable, taken);
    taken.add(name);
    indexes.push({
      index,
      name,
      statement: `CREATE ${unique ? 'UNIQUE ' : ''}INDEX ${quoteIdent(name)} ON ${names.quotedNew} ${index.body}`,
    });
  }
  const granted = new Set(fresh.dependents.grants.map((g) => `${g.grantee} ${g.privilege}`));
  const grants = old.dependents.grants
    .filter((g) => !granted.has(`${g.grantee} ${g.privilege}`))
    .map(
      (g) =>
        `GRANT ${g.privilege} ON ${names.quotedNew} TO ${g.grantee}${g.grantable ? ' WITH GRANT OPTION' : ''}`,
    );
  const rowSecurity: string[] = [];
  if (old.dependents.rowSecurity && !fresh.dependents.rowSecurity) {
    rowSecurity.push(`ALTER TABLE ${names.quotedNew} ENABLE ROW LEVEL SECURITY`);
  }
  const policies = new Set(fresh.dependents.policies.map((p) => p.name));
  for (const policy of old.dependents.policies) {
    if (policies.has(policy.name)) continue;
    rowSecurity.push(
      `CREATE POLICY ${quoteIdent(policy.name)} ON ${names.quotedNew} AS ${policy.permissive ? 'PERMISSIVE' : 'RESTRICTIVE'} ` +
        `FOR ${policy.command} TO ${policy.roles.join(', ')}` +
        (policy.using === null ? '' : ` USING (${policy.using})`) +
        (policy.withCheck === null ? '' : ` WITH CHECK (${policy.withCheck})`),
    );
  }
  return { indexes, grants, rowSecurity, warnings };
}

/**
 * Warnings for an existing new table that lacks indexes, grants or row security of the old
 * one: `status()` shows them, and cutover refuses while an index is missing. @internal
 *
 * @example
 * ```ts
 * const warnings = missingInNew(plan, names);
 * ```
 */
export function missingInNew(plan: MirrorPlan, names: FindingNames): PreflightProblem[] {
  const warnings: PreflightProblem[] = plan.indexes.map(({ index, statement }) => ({
    check: 'index_missing_in_new',
    message:
      `${names.new} has no index like "${index.name}" of ${names.old} (${index.body}): reads ` +
      'that use it will scan the new table once they move there.',
    fix: `${statement.replace(/^CREATE (UNIQUE )?INDEX /, 'CREATE $1INDEX CONCURRENTLY ')};`,
  }));
  if (plan.grants.length > 0) {
    warnings.push({
      check: 'grant_missing_in_new',
      message: `${names.new} lacks privileges that roles have on ${names.old}: services using those roles would be refused once they write or read it.`,
      fix: plan.grants.map((g) => `${g};`).join(' '),
    });
  }
  if (plan.rowSecurity.length > 0) {
    warnings.push({
      check: 'row_security_missing_in_new',
      message: `${names.old} has row-level security (or policies) that ${names.new} lacks: roles it restricts would see or change every row of the new table.`,
      fix: plan.rowSecurity.map((s) => `${s};`).join(' '),
    });
  }
  return [...plan.warnings, ...warnings];
}

/**
 * The name of a mirrored index: the old index's name with the old table's name replaced by the
 * new one's (or prefixed by it), within 63 bytes (a hash of the full name when cut), not taken.
 */
function mirroredIndexName(
  oldName: string,
  oldTable: string,
  newTable: string,
  taken: ReadonlySet<string>,
): string {
  const suffix = oldName.startsWith(`${oldTable}_`) ? oldName.slice(oldTable.length + 1) : oldName;
  return relationName(newTable, suffix, taken);
}

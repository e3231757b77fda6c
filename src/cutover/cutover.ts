import type { DatabaseHandle } from '../db/database-handle.js';
import { TransitionRefusedError } from '../errors.js';
import type { PhaseState } from '../model/phase.js';
import type {
  ResolvedCutoverOptions,
  ResolvedRollbackOptions,
} from '../options/cutover-options.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { PhaseStore } from '../phases/phase-store.js';
import { indexGuard, unmetCutoverGuards } from './cutover-guards.js';

/**
 * `dual_read -> new`: reads and writes use the new table only. The guards are checked inside
 * the phase change's transaction, once every write of `dual_read` has finished (rule
 * `phase-fence`): unmet ones refuse with {@link TransitionRefusedError} listing all of them,
 * unless every one is overridable and `force` is set; the waived ones go into the phase
 * history with the actor. @internal (use `migration.cutover()`)
 *
 * @example
 * ```ts
 * await runCutover(handle, options, { force: false, waiveIndexes: [], actor: 'ops' });
 * ```
 */
export async function runCutover(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  cutover: ResolvedCutoverOptions,
): Promise<PhaseState> {
  const indexes = await indexGuard(handle.db, options, cutover.waiveIndexes);
  return new PhaseStore(options).transition(handle.db, 'cutover', {
    ...(cutover.actor === undefined ? {} : { actor: cutover.actor }),
    during: async (trx) => {
      const unmet = [...(await unmetCutoverGuards(trx, options)), ...indexes];
      if (unmet.length === 0) return { forced: [] };
      if (!cutover.force || unmet.some((guard) => !guard.overridable)) {
        throw new TransitionRefusedError('cutover', unmet);
      }
      return { forced: unmet.map((guard) => guard.guard) };
    },
  });
}

/**
 * `new -> dual_read`, without losing a write: every write made in `new` went to the new
 * table, which the merged read prefers, and every delete in `new` also removed the old row
 * (rule `rollback-keeps-deletes`), so nothing deleted comes back. @internal (use
 * `migration.rollback()`)
 *
 * @example
 * ```ts
 * await runRollback(handle, options, { actor: 'ops' });
 * ```
 */
export function runRollback(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  rollback: ResolvedRollbackOptions,
): Promise<PhaseState> {
  return new PhaseStore(options).transition(handle.db, 'rollback', {
    ...(rollback.actor === undefined ? {} : { actor: rollback.actor }),
  });
}

import { sql } from 'kysely';
import type { DatabaseHandle } from '../db/database-handle.js';
import { PhaseTransitionError, TransitionRefusedError } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { PhaseStore } from '../phases/phase-store.js';

/**
 * Drops the old table under its retired name, once the migration is `finalized` and `confirm`
 * is that name (an operator types it: a drop is the one step nothing undoes). The sequence the
 * consolidated table uses belongs to it since `finalize()`, so it stays. Refuses, changing
 * nothing, in any other phase or with any other name. @internal (use
 * `migration.dropRetiredTable()`)
 *
 * @example
 * ```ts
 * await dropRetiredTable(handle, options, 'posthog_person_retired');
 * ```
 */
export async function dropRetiredTable(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  confirm: string,
): Promise<{ dropped: string }> {
  const store = new PhaseStore(options);
  const { state, retiredTable } = await store.readRetired(handle.db);
  if (state.phase !== 'finalized' || !retiredTable) {
    throw new PhaseTransitionError(
      `dropRetiredTable() drops the old table after finalize(), but migration "${options.name}" ` +
        `is in phase ${state.phase}: nothing was dropped.`,
      state.phase,
      'finalized',
    );
  }
  if (confirm !== retiredTable) {
    throw new TransitionRefusedError('dropRetiredTable', [
      {
        guard: 'confirm_mismatch',
        message: `confirm names another table than the retired one (${options.schema}.${retiredTable}).`,
        fix: `pass { confirm: '${retiredTable}' } after checking nothing reads it any more.`,
        overridable: false,
      },
    ]);
  }
  await sql`DROP TABLE IF EXISTS ${sql.id(options.schema, retiredTable)}`.execute(handle.db);
  return { dropped: `${options.schema}.${retiredTable}` };
}

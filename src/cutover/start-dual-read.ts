import type { DatabaseHandle } from '../db/database-handle.js';
import type { PhaseState } from '../model/phase.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { PhaseStore } from '../phases/phase-store.js';
import { StrayWrites } from '../phases/stray-writes.js';
import { whileBusy } from './while-busy.js';

/** How long the phase change waits for the old table when it puts the stray-write trigger on it. */
const triggerLockTimeoutMs = 200;

/**
 * `old -> dual_read`, with the stray-write trigger put on the old table inside the phase change
 * (rule `stray-writes`). The trigger's lock waits at most 200 ms per attempt, since the
 * library's writes queue behind the phase change meanwhile; a busy old table (a write outside
 * the library, a VACUUM) makes the attempt roll back, and attempts go on with backoff for up to
 * `phaseChangeLockTimeoutMs`. @internal (use `migration.startDualRead()`)
 *
 * @example
 * ```ts
 * const state = await runStartDualRead(handle, options);
 * ```
 */
export async function runStartDualRead(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
): Promise<PhaseState> {
  const store = new PhaseStore(options);
  const strayWrites = new StrayWrites(options);
  const backoff = {
    timeoutMs: options.phaseChangeLockTimeoutMs,
    firstBackoffMs: 25,
    maxBackoffMs: 1_000,
  };
  return whileBusy('old_table_busy', backoff, () =>
    store.transition(handle.db, 'startDualRead', {
      // From here on, a write to the old table that is not the library's is a stray write.
      during: async (trx) => {
        await strayWrites.installTrigger(trx, triggerLockTimeoutMs);
        await strayWrites.clear(trx);
        return undefined;
      },
    }),
  );
}

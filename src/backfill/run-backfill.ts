import createDebug from 'debug';
import { requireCurrentControlSchema } from '../control/install.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import type { DualReadEmitter } from '../events.js';
import type { ResolvedBackfillOptions } from '../options/backfill-options.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { loadPersonColumns } from '../persons/person-columns.js';
import { planBackfill } from './backfill-plan.js';
import { BackfillWorker, planGone, type WorkerTotals } from './backfill-worker.js';
import { PlanStore } from './plan-store.js';
import { RangeStore } from './range-store.js';

const debug = createDebug('pg-dual-read:backfill');

/**
 * What one `backfill()` call did in this process.
 *
 * @example
 * ```ts
 * const result = await migration.backfill({ workers: 4 });
 * console.log(result.finished ? 'all ranges done' : 'stopped early', result.rowsCopied);
 * ```
 */
export interface BackfillResult {
  /** True when every range of the plan is done (by this process or others). */
  readonly finished: boolean;
  /** True when the signal stopped this call; the state is resumable. */
  readonly aborted: boolean;
  /** True when this call wrote the plan. */
  readonly planned: boolean;
  /** Old rows this call's workers read. */
  readonly rowsScanned: number;
  /** Rows this call's workers inserted into the new table. */
  readonly rowsCopied: number;
  /** Batches this call's workers committed. */
  readonly batches: number;
  /** Ranges this call's workers brought to their end. */
  readonly rangesDone: number;
  /** How long the call took, in milliseconds. */
  readonly ms: number;
}

/**
 * Plans the backfill if needed, then runs `workers` workers until every range is done or
 * the signal aborts. The first worker error stops the others after their current batch and
 * is rethrown; the committed checkpoints stay, so the next call resumes. @internal
 */
export async function runBackfill(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  backfill: ResolvedBackfillOptions,
  events: DualReadEmitter,
): Promise<BackfillResult> {
  const started = performance.now();
  // The batch's SQL needs every control migration of this version (the delete fence: 4).
  await requireCurrentControlSchema(handle, options.controlSchema, 'backfill()');
  const plan = await planBackfill(handle.db, options, backfill.ranges, backfill.maxRowsPerSecond);
  const columns = await loadPersonColumns(handle.db, options);
  const store = new RangeStore(options, columns);
  const plans = new PlanStore(options);
  const totals = await runWorkers(
    backfill,
    (workerOptions, workerId) =>
      new BackfillWorker(handle.db, store, plans, workerOptions, workerId, events),
  );
  const aborted = backfill.signal?.aborted ?? false;
  const { notDone, planExists } = await plans.remaining(handle.db);
  if (!planExists) throw planGone();
  const finished = notDone === 0;
  const ms = performance.now() - started;
  const finishedNow = await plans.finish(handle.db);
  if (finished && (finishedNow || (plan.created && plan.rangeCount === 0))) {
    events.emit('backfill:done', { rowsCopied: totals.rowsCopied, ms });
  }
  debug(
    'backfill call ended: finished=%s aborted=%s rows=%d',
    finished,
    aborted,
    totals.rowsCopied,
  );
  return { finished, aborted, planned: plan.created, ...totals, ms };
}

/**
 * Runs `backfill.workers` workers until each returns. The caller's signal, or the first
 * failing worker, stops every worker after its batch; that first error is rethrown.
 */
async function runWorkers(
  backfill: ResolvedBackfillOptions,
  createWorker: (options: ResolvedBackfillOptions, workerId: string) => BackfillWorker,
): Promise<WorkerTotals> {
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  backfill.signal?.addEventListener('abort', onAbort, { once: true });
  if (backfill.signal?.aborted) stop.abort();
  const workerOptions = { ...backfill, signal: stop.signal };
  const workers = Array.from({ length: backfill.workers }, (_, index) =>
    createWorker(workerOptions, `${backfill.workerId}#${index + 1}`),
  );
  let failure: unknown;
  try {
    await Promise.all(
      workers.map((worker) =>
        worker.run().catch((error: unknown) => {
          failure ??= error;
          stop.abort();
        }),
      ),
    );
  } finally {
    backfill.signal?.removeEventListener('abort', onAbort);
  }
  if (failure !== undefined) throw failure;
  return workers.reduce(
    (sum, w) => ({
      rowsScanned: sum.rowsScanned + w.totals.rowsScanned,
      rowsCopied: sum.rowsCopied + w.totals.rowsCopied,
      batches: sum.batches + w.totals.batches,
      rangesDone: sum.rangesDone + w.totals.rangesDone,
    }),
    { rowsScanned: 0, rowsCopied: 0, batches: 0, rangesDone: 0 },
  );
}

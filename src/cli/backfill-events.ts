/**
 * The JSON events of `backfill --json`: `progress` every 2 s, `paused`, `stopping` and a final
 * `done`, one per line (see {@link ndjsonLine}). Counts only, never a row value.
 * @internal
 */
import type { BackfillStatus } from '../backfill/backfill-status.js';
import type { BackfillResult } from '../backfill/run-backfill.js';
import { statusJson } from './backfill-format.js';
import type { BackfillView } from './backfill-watch.js';
import { etaJson } from './eta-format.js';
import { ndjsonLine } from './ndjson.js';
import type { StopSignal } from './stop-signal.js';

/**
 * The `progress` event: the plan's figures (every process's workers), this run's, the phase
 * and the fleet's fallback rate (`null` until first read, every 5 s).
 *
 * @example
 * ```ts
 * print(backfillProgressEvent(view, 'persons'));
 * // {"type":"progress","command":"backfill","migration":"persons","state":"running","percent":42.3,...}
 * ```
 * @internal
 */
export function backfillProgressEvent(view: BackfillView, migrationName: string): string {
  const s = view.status;
  return ndjsonLine('progress', {
    command: 'backfill',
    migration: migrationName,
    at: new Date(),
    ...(s === undefined ? { state: view.readFailed ? 'unknown' : 'planning' } : planFields(s)),
    retries: view.run.retries,
    deferredRanges: view.run.deferredRanges,
    run: {
      rowsScanned: view.run.rowsScanned,
      rowsCopied: view.run.rowsCopied,
      batches: view.run.batches,
      rangesDone: view.run.rangesDone,
      ms: Math.round(view.run.elapsedMs),
    },
    phase: view.fleet?.phase,
    epoch: view.fleet?.epoch,
    fleetFallbackRate: view.fleet?.fallbackRate,
    liveClients: view.fleet?.liveClients,
  });
}

function planFields(s: BackfillStatus) {
  const by = (status: 'pending' | 'running' | 'done') =>
    s.ranges.filter((r) => r.status === status).length;
  return {
    state: s.state,
    percent: Math.round(s.percent * 10) / 10,
    rowsEstimated: s.rowsEstimated,
    rowsScanned: s.rowsScanned,
    rowsCopied: s.rowsCopied,
    rowsToGo: s.rowsToGo,
    ratePerSecond: Math.round(s.ratePerSecond),
    maxRowsPerSecond: s.maxRowsPerSecond,
    eta: etaJson(s),
    activeWorkers: s.activeWorkers,
    ranges: {
      total: s.ranges.length,
      done: by('done'),
      running: by('running'),
      pending: by('pending'),
    },
  };
}

/**
 * The last event of `backfill --json`: how it ended (`finished`, `stopped` by a signal, or
 * `unfinished`: this process ended while other processes' ranges remain), the exit status,
 * this run's figures and the plan's (the `backfill` field of `status --json`).
 *
 * @example
 * ```ts
 * print(backfillDoneEvent(result, plan, undefined, 0));
 * // {"type":"done","command":"backfill","outcome":"finished","signal":null,"exitCode":0,...}
 * ```
 * @internal
 */
export function backfillDoneEvent(
  result: BackfillResult,
  plan: BackfillStatus | undefined,
  stoppedBy: StopSignal | undefined,
  exitCode: number,
): string {
  let outcome = 'unfinished';
  if (result.finished) outcome = 'finished';
  else if (stoppedBy !== undefined) outcome = 'stopped';
  return ndjsonLine('done', {
    command: 'backfill',
    outcome,
    signal: stoppedBy,
    exitCode,
    run: {
      rowsScanned: result.rowsScanned,
      rowsCopied: result.rowsCopied,
      batches: result.batches,
      rangesDone: result.rangesDone,
      planned: result.planned,
      ms: Math.round(result.ms),
    },
    backfill: statusJson(plan),
  });
}

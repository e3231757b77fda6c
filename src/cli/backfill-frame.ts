/**
 * The live display of `backfill` on a terminal: a progress bar with rows, percent, rate, ETA,
 * workers, ranges, retries, the phase and the fleet's fallback rate. A pure function of a
 * {@link BackfillView}; counts and names only, never a row value.
 * @internal
 */
import type { BackfillStatus } from '../backfill/backfill-status.js';
import { count, plural } from './backfill-format.js';
import type { BackfillRunView, BackfillView, FleetView } from './backfill-watch.js';
import { shortDuration } from './duration-format.js';
import { etaText } from './eta-format.js';
import { progressBar } from './progress-bar.js';

/** Characters of the bar. @internal */
export const barWidth = 30;

/**
 * The lines of the live display of `backfill`.
 *
 * @example
 * ```ts
 * display.draw(backfillFrame(view, 'persons'));
 * // backfill of migration "persons" (Ctrl-C stops it after the current batch; resumable)
 * // ████████████░░░░░░░░░░░░░░░░░░  42.3%  12,345 of ~29,145 rows, 16,800 to go
 * // 5,120 rows/s   ETA 2m10s (1m58s-2m25s), ends 14:32:05
 * // workers 4 active   ranges 8 done, 4 running, 2 deferred, 2 pending   retries 3
 * // phase dual_read (epoch 2)   fleet fallback 1.2% of 10,234 rows (3 live clients)
 * // this run: 12,000 rows copied in 31 batches, 1m02s
 * ```
 * @internal
 */
export function backfillFrame(view: BackfillView, migrationName: string): string[] {
  const s = view.status;
  const lines = [
    `backfill of migration "${migrationName}" (Ctrl-C stops it after the current batch; resumable)`,
  ];
  if (s === undefined) {
    lines.push(
      `${progressBar(0, barWidth)}  ${view.readFailed ? 'progress unavailable (reading the plan failed)' : 'planning...'}`,
    );
  } else {
    lines.push(...planLines(s, view.run));
  }
  lines.push(fleetLine(view.fleet));
  const { run } = view;
  lines.push(
    `this run: ${count(run.rowsCopied)} rows copied in ${plural(run.batches, 'batch', 'batches')}, ` +
      `${shortDuration(Math.floor(run.elapsedMs / 1_000))}`,
  );
  return lines;
}

/**
 * The plan's lines of the live display: the bar, the rate and ETA, workers and ranges. `run`
 * (this process's own backfill) adds the ranges it deferred and its retries; `status --watch`
 * shows what the database knows only.
 *
 * @example
 * ```ts
 * planLines(status, undefined);
 * // ['████████████░░░░░░░░░░░░░░░░░░  42.3%  12,345 of ~29,145 rows, 16,800 to go', ...]
 * ```
 * @internal
 */
export function planLines(
  s: BackfillStatus,
  run: Pick<BackfillRunView, 'deferredRanges' | 'retries'> | undefined,
): string[] {
  return [barLine(s), rateLine(s), workerLine(s, run)];
}

function barLine(s: BackfillStatus): string {
  const percent = `${s.percent.toFixed(1)}%`.padStart(6);
  return (
    `${progressBar(s.percent / 100, barWidth)} ${percent}  ${count(s.rowsScanned)} of ` +
    `~${count(s.rowsScanned + s.rowsToGo)} rows, ${count(s.rowsToGo)} to go`
  );
}

function rateLine(s: BackfillStatus): string {
  if (s.state === 'done') return 'done';
  if (s.state === 'paused') return 'PAUSED: backfill-resume continues it';
  const ceiling = s.maxRowsPerSecond === undefined ? '' : ` (ceiling ${count(s.maxRowsPerSecond)})`;
  const finishAt = s.eta?.settling === false ? s.eta.finishAt : undefined;
  const ends = finishAt ? `, ends ${finishAt.toTimeString().slice(0, 8)}` : '';
  return `${count(s.ratePerSecond)} rows/s${ceiling}   ${etaText(s, 'short')}${ends}`;
}

function workerLine(
  s: BackfillStatus,
  run: Pick<BackfillRunView, 'deferredRanges' | 'retries'> | undefined,
): string {
  const by = (status: 'pending' | 'running' | 'done') =>
    s.ranges.filter((r) => r.status === status).length;
  const head =
    `workers ${count(s.activeWorkers)} active   ranges ${count(by('done'))} done, ` +
    `${count(by('running'))} running, `;
  if (run === undefined) return `${head}${count(by('pending'))} pending`;
  // A deferred range is pending in the plan until the worker tries it again.
  const deferred = Math.min(run.deferredRanges, by('pending'));
  return (
    `${head}${count(deferred)} deferred, ${count(by('pending') - deferred)} pending   ` +
    `retries ${count(run.retries)}`
  );
}

/**
 * `phase dual_read (epoch 2)   fleet fallback 1.2% of 10,234 rows (3 live clients)`.
 * @internal
 */
export function fleetLine(fleet: FleetView | undefined): string {
  if (fleet === undefined) return 'phase ...   fleet fallback ...';
  const fallback =
    fleet.liveClients === 0
      ? 'no live client'
      : `fleet fallback ${(fleet.fallbackRate * 100).toFixed(1)}% of ${count(fleet.rows)} rows ` +
        `(${plural(fleet.liveClients, 'live client')})`;
  return `phase ${fleet.phase} (epoch ${fleet.epoch})   ${fallback}`;
}

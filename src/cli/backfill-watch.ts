/**
 * What `backfill` watches while it runs: the plan's progress (every process's workers) read
 * from `backfillStatus()` at an interval, the migration's phase and the fleet's fallback rate
 * from `status()` every few seconds, and this process's own batches, retries and deferred
 * ranges from the migration's events. Each read becomes a {@link BackfillView} for the output
 * (a live display, plain lines or JSON events).
 * @internal
 */
import type { BackfillStatus } from '../backfill/backfill-status.js';
import type { DualReadEvents } from '../events.js';
import type { MigrationStatus, PersonsMigration } from '../migration/persons-migration.js';

/**
 * The phase and the fleet's read counters, from `status()` (read every few seconds only: it
 * also reads the catalog).
 * @internal
 */
export interface FleetView {
  readonly phase: MigrationStatus['phase'];
  readonly epoch: string;
  /** Rows answered from the old table / rows returned, over the live service instances. */
  readonly fallbackRate: number;
  readonly rows: number;
  readonly liveClients: number;
}

/** This process's own run, from the migration's events. @internal */
export interface BackfillRunView {
  readonly rowsScanned: number;
  readonly rowsCopied: number;
  readonly batches: number;
  readonly rangesDone: number;
  /** `backfill:retry` events: a batch, claim, split or renewal retried. */
  readonly retries: number;
  /** Ranges given back after lock timeouts (`backfill:range-deferred`) and not retried yet. */
  readonly deferredRanges: number;
  readonly elapsedMs: number;
}

/**
 * One reading of the backfill, for the output.
 *
 * @example
 * ```ts
 * const watch = watchBackfill(migration, { onView: (view) => draw(view), onPaused }, timing);
 * ```
 * @internal
 */
export interface BackfillView {
  /** The plan's progress; undefined before the plan exists or when the read failed. */
  readonly status: BackfillStatus | undefined;
  /** True when this reading of `backfillStatus()` failed (the previous figures are gone). */
  readonly readFailed: boolean;
  readonly fleet: FleetView | undefined;
  readonly run: BackfillRunView;
}

/** How often the watch reads. @internal */
export interface BackfillWatchTiming {
  /** Reads of `backfillStatus()`. */
  readonly intervalMs: number;
  /** Reads of `status()` for the phase and the fleet; undefined: never. */
  readonly fleetIntervalMs: number | undefined;
}

/** What the watch calls. @internal */
export interface BackfillWatchOutput {
  /** After each read but the final one (`stop()` returns that one). */
  readonly onView: (view: BackfillView) => void;
  /** The first worker of this process that notices a pause (once per pause). */
  readonly onPaused: () => void;
}

/**
 * A running watch: `view()` is the latest reading; `stop()` reads once more, ends the watch
 * and resolves to that final reading.
 * @internal
 */
export interface BackfillWatch {
  readonly view: () => BackfillView;
  readonly stop: () => Promise<BackfillView>;
}

/**
 * Starts watching the backfill of `migration`: reads every `intervalMs` (a read still running
 * skips a beat) and calls `onView`. `stop()` waits for a read in flight, unsubscribes from
 * the events and resolves to a final reading (`onView` is not called with it).
 *
 * @example
 * ```ts
 * const watch = watchBackfill(migration, output, { intervalMs: 2_000, fleetIntervalMs: undefined });
 * await migration.backfill();
 * const last = await watch.stop();
 * ```
 * @internal
 */
export function watchBackfill(
  migration: PersonsMigration,
  output: BackfillWatchOutput,
  timing: BackfillWatchTiming,
): BackfillWatch {
  const tally = tallyRun(migration, output.onPaused);
  let latest: BackfillView = {
    status: undefined,
    readFailed: false,
    fleet: undefined,
    run: tally.run(),
  };
  let fleetReadAt = Number.NEGATIVE_INFINITY;
  let reading: Promise<void> | undefined;
  const read = async () => {
    const status = await migration.backfillStatus().then(
      (s) => ({ s, failed: false }),
      () => ({ s: undefined, failed: true }),
    );
    let fleet = latest.fleet;
    const due = timing.fleetIntervalMs !== undefined;
    if (due && performance.now() - fleetReadAt >= (timing.fleetIntervalMs ?? 0)) {
      fleetReadAt = performance.now();
      fleet = await migration.status().then(fleetOf, () => fleet);
    }
    if (status.s?.state !== 'paused') tally.pauseEnded();
    latest = { status: status.s, readFailed: status.failed, fleet, run: tally.run() };
  };
  const tick = () => {
    if (reading !== undefined) return; // the previous read is still running: skip a beat
    reading = read()
      .then(() => output.onView(latest))
      .finally(() => {
        reading = undefined;
      });
  };
  const timer = setInterval(tick, timing.intervalMs);
  timer.unref();
  return {
    view: () => latest,
    async stop() {
      clearInterval(timer);
      await reading;
      await read();
      tally.unsubscribe();
      return latest;
    },
  };
}

/**
 * The phase and the fleet's counters of a `status()`.
 *
 * @example
 * ```ts
 * const fleet = fleetOf(await migration.status()); // { phase: 'dual_read', fallbackRate: 0.02, ... }
 * ```
 * @internal
 */
export function fleetOf(s: MigrationStatus): FleetView {
  return {
    phase: s.phase,
    epoch: s.epoch,
    fallbackRate: s.clients.fleet.fallbackRate,
    rows: s.clients.fleet.rows,
    liveClients: s.clients.live.length,
  };
}

/** Counts this process's batches, retries and deferred ranges; notes each pause once. */
function tallyRun(migration: PersonsMigration, onPaused: () => void) {
  const started = performance.now();
  const counts = { rowsScanned: 0, rowsCopied: 0, batches: 0, rangesDone: 0, retries: 0 };
  // rangeId -> when the worker tries it again (performance.now() ms).
  const deferredUntil = new Map<number, number>();
  let pausedNoted = false;
  const onBatch = ({ scanned, copied }: DualReadEvents['backfill:batch'][0]) => {
    counts.rowsScanned += scanned;
    counts.rowsCopied += copied;
    counts.batches++;
  };
  const onRangeDone = ({ rangeId }: DualReadEvents['backfill:range-done'][0]) => {
    counts.rangesDone++;
    deferredUntil.delete(rangeId);
  };
  const onRetry = () => {
    counts.retries++;
  };
  const onDeferred = ({ rangeId, retryInMs }: DualReadEvents['backfill:range-deferred'][0]) => {
    deferredUntil.set(rangeId, performance.now() + retryInMs);
  };
  const onPause = () => {
    if (pausedNoted) return;
    pausedNoted = true;
    onPaused();
  };
  migration.events
    .on('backfill:batch', onBatch)
    .on('backfill:range-done', onRangeDone)
    .on('backfill:retry', onRetry)
    .on('backfill:range-deferred', onDeferred)
    .on('backfill:paused', onPause);
  return {
    run(): BackfillRunView {
      const now = performance.now();
      const deferredRanges = [...deferredUntil.values()].filter((until) => until > now).length;
      return { ...counts, deferredRanges, elapsedMs: now - started };
    },
    /** The backfill runs again: the next pause is noted again. */
    pauseEnded() {
      pausedNoted = false;
    },
    unsubscribe() {
      migration.events
        .off('backfill:batch', onBatch)
        .off('backfill:range-done', onRangeDone)
        .off('backfill:retry', onRetry)
        .off('backfill:range-deferred', onDeferred)
        .off('backfill:paused', onPause);
    },
  };
}

/**
 * The `backfill` command: runs `migration.backfill()` with a live progress line.
 * @internal
 */

import type { BackfillStatus } from '../backfill/backfill-status.js';
import type { BackfillResult } from '../backfill/run-backfill.js';
import type { PersonsMigration } from '../migration/persons-migration.js';
import { resolveBackfillOptions } from '../options/backfill-options.js';
import type { CliInvocation } from './arguments.js';
import { count, plural, progressLine } from './backfill-format.js';
import type { CommandIo, Print } from './command.js';
import { type StopSignal, stopExitCodes, stopOnSignal } from './stop-signal.js';

/** How often `backfill` prints its progress line. @internal */
export const progressIntervalMs = 2_000;

/**
 * `backfill [--workers N] [--batch-size N] ...`: runs `migration.backfill()` with the options
 * given (the library validates them and applies its defaults) until every range is done.
 * Prints a progress line of the whole plan (all processes) every {@link progressIntervalMs}
 * from `backfillStatus()`, a note when the backfill is paused, and a summary at the end.
 *
 * The first SIGINT or SIGTERM aborts the call's signal: every worker stops after its current
 * batch (each batch commits with its checkpoint), gives its range back, and the command
 * resolves to {@link stopExitCodes} (130 for SIGINT, 143 for SIGTERM) after saying the
 * backfill is resumable: running `backfill` again, from any host, continues it. A signal
 * that arrives after the last range is done changes nothing: the exit status is 0. With the
 * process's signals, a second one ends the process at once (the batch in flight rolls back;
 * the range it held is taken over once its lease expires, after `--lease-ms`).
 *
 * Options are validated by the library (`InvalidOptionsError`, exit 2, pointing at the flag)
 * before anything is printed.
 *
 * @example
 * ```ts
 * const code = await backfill(migration, { ...invocation, backfill: { workers: 4 } }, io);
 * // backfill 42.3%: 12,345 rows scanned, 16,800 to go, 5,120 rows/s, ETA 4 s, 4 workers active
 * // backfill done: 29,145 rows scanned, 29,140 copied in total (100%)
 * // this run: 29,145 rows scanned, 29,140 copied, 31 batches, 8 ranges finished in 6.2 s
 * ```
 * @internal
 */
export async function backfill(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print, onStop }: CommandIo,
): Promise<number | undefined> {
  // The library's own validation, run first so that a bad flag fails before anything is
  // printed; backfill() below validates the same options again.
  resolveBackfillOptions(invocation.backfill);
  const stop = stopOnSignal(onStop, (signal) =>
    print(
      `${signal}: stopping after the current batch (a second signal quits at once; ` +
        'the batch in flight then rolls back)',
    ),
  );
  const progress = watchProgress(migration, print);
  print(
    `backfill of migration "${migration.options.name}": progress every ${progressIntervalMs / 1_000} s; ` +
      'Ctrl-C stops it after the current batch (resumable)',
  );
  let result: BackfillResult;
  try {
    result = await migration.backfill({ ...invocation.backfill, signal: stop.signal });
  } finally {
    await progress.stop();
    stop.unsubscribe();
  }
  return reportOutcome(migration, result, stop.stoppedBy(), print);
}

/**
 * Prints the progress line of the whole plan every {@link progressIntervalMs} (once while
 * paused), a note when the backfill pauses, and this run's own figures when the plan's cannot
 * be read. `stop()` ends it and waits for a read in flight.
 */
function watchProgress(migration: PersonsMigration, print: Print): { stop(): Promise<void> } {
  // This run's own figures, from the events (the progress line shows the whole plan's).
  const run = { scanned: 0, copied: 0 };
  // Said once per pause, whichever worker notices it first; the progress line says when the
  // backfill runs again.
  let pausedNoted = false;
  const onBatch = ({ scanned, copied }: { scanned: number; copied: number }) => {
    run.scanned += scanned;
    run.copied += copied;
  };
  const onPaused = () => {
    if (pausedNoted) return;
    pausedNoted = true;
    print('the backfill is paused: waiting (backfill-resume continues it)');
  };
  migration.events.on('backfill:batch', onBatch).on('backfill:paused', onPaused);

  let reading: Promise<void> | undefined;
  let lastLine: string | undefined;
  let ended = false;
  const printProgress = (s: BackfillStatus | undefined) => {
    if (s === undefined || ended) return;
    const line = progressLine(s);
    // While paused the line would not change: say it once.
    if (s.state !== 'paused' || line !== lastLine) print(line);
    lastLine = line;
    if (s.state !== 'paused') pausedNoted = false;
  };
  const printRun = () => {
    if (!ended) {
      print(`backfill: this run scanned ${count(run.scanned)} rows, copied ${count(run.copied)}`);
    }
  };
  const timer = setInterval(() => {
    if (reading !== undefined) return; // the previous read is still running: skip a beat
    reading = migration
      .backfillStatus()
      .then(printProgress, printRun)
      .finally(() => {
        reading = undefined;
      });
  }, progressIntervalMs);
  timer.unref();
  return {
    async stop() {
      ended = true;
      clearInterval(timer);
      await reading;
      migration.events.off('backfill:batch', onBatch).off('backfill:paused', onPaused);
    },
  };
}

/** The closing lines of `backfill` and its exit status. */
async function reportOutcome(
  migration: PersonsMigration,
  result: BackfillResult,
  stoppedBy: StopSignal | undefined,
  print: Print,
): Promise<number | undefined> {
  // The figures of the whole plan; the run's outcome stands even if they cannot be read.
  const plan = await migration.backfillStatus().catch(() => undefined);
  const thisRun =
    `this run: ${count(result.rowsScanned)} rows scanned, ${count(result.rowsCopied)} copied, ` +
    `${plural(result.batches, 'batch', 'batches')}, ${plural(result.rangesDone, 'range')} finished ` +
    `in ${(result.ms / 1_000).toFixed(1)} s${result.planned ? ` (planned ${plural(plan?.ranges.length ?? 0, 'range')})` : ''}`;
  if (result.finished) {
    print(
      `backfill done: ${count(plan?.rowsScanned ?? result.rowsScanned)} rows scanned, ` +
        `${count(plan?.rowsCopied ?? result.rowsCopied)} copied in total (100%)`,
    );
    print(thisRun);
    return undefined;
  }
  const where = plan ? ` at ${plan.percent.toFixed(1)}%, ${count(plan.rowsToGo)} rows to go` : '';
  print(`backfill stopped${stoppedBy ? ` by ${stoppedBy}` : ''}${where}`);
  print(thisRun);
  print(
    'the backfill is resumable: run backfill again (from this or any host) to continue from ' +
      'its committed checkpoints',
  );
  return stoppedBy ? stopExitCodes[stoppedBy] : 1;
}

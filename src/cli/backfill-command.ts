/**
 * The `backfill` command: runs `migration.backfill()` while showing its progress: a live
 * display on a terminal, plain lines otherwise, JSON events with `--json`.
 * @internal
 */

import type { BackfillStatus } from '../backfill/backfill-status.js';
import type { BackfillResult } from '../backfill/run-backfill.js';
import type { PersonsMigration } from '../migration/persons-migration.js';
import { resolveBackfillOptions } from '../options/backfill-options.js';
import type { CliInvocation } from './arguments.js';
import { backfillDoneEvent } from './backfill-events.js';
import { count, plural } from './backfill-format.js';
import {
  type BackfillOutput,
  jsonBackfillOutput,
  liveBackfillOutput,
  plainBackfillOutput,
} from './backfill-output.js';
import { type BackfillView, watchBackfill } from './backfill-watch.js';
import type { CommandIo, Print } from './command.js';
import { type StopSignal, stopExitCodes, stopOnSignal } from './stop-signal.js';

/**
 * `backfill [--workers N] [--batch-size N] ... [--json]`: runs `migration.backfill()` with the
 * options given (the library validates them and applies its defaults) until every range is
 * done, showing the progress of the whole plan (all processes) from `backfillStatus()`:
 * - on a terminal, a live display redrawn every second: a bar with rows, percent, rate, ETA,
 *   workers, ranges done/running/deferred, this process's retries, the phase and the fleet's
 *   fallback rate (read every 5 s); the last frame stays, the summary follows it;
 * - otherwise a progress line every 2 s, a note when the backfill is paused, and the summary;
 * - with `--json`, newline-delimited events: `progress` every 2 s, `paused`, `stopping`, and a
 *   final `done` (instead of the summary).
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
  io: CommandIo,
): Promise<number | undefined> {
  // The library's own validation, run first so that a bad flag fails before anything is
  // printed; backfill() below validates the same options again.
  resolveBackfillOptions(invocation.backfill);
  const output = backfillOutputOf(migration, invocation, io);
  const stop = stopOnSignal(io.onStop, output.stopping);
  const watch = watchBackfill(migration, output, output.timing);
  output.start(watch.view());
  let result: BackfillResult;
  let final: BackfillView | undefined;
  try {
    result = await migration.backfill({ ...invocation.backfill, signal: stop.signal });
  } finally {
    final = await watch.stop();
    output.end(final);
    stop.unsubscribe();
  }
  const stoppedBy = stop.stoppedBy();
  const code = outcomeExitCode(result, stoppedBy);
  if (invocation.json) io.print(backfillDoneEvent(result, final.status, stoppedBy, code ?? 0));
  else reportOutcome(result, final.status, stoppedBy, io.print);
  return code;
}

/** The output `backfill` shows its progress on: JSON, a live display, or plain lines. */
function backfillOutputOf(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print, openLiveDisplay }: CommandIo,
): BackfillOutput {
  const { name } = migration.options;
  if (invocation.json) return jsonBackfillOutput(print, name);
  if (openLiveDisplay) return liveBackfillOutput(openLiveDisplay(), name);
  return plainBackfillOutput(print, name);
}

/** 0 (undefined) when every range is done, 130/143 when a signal stopped it, else 1. */
function outcomeExitCode(
  result: BackfillResult,
  stoppedBy: StopSignal | undefined,
): number | undefined {
  if (result.finished) return undefined;
  return stoppedBy ? stopExitCodes[stoppedBy] : 1;
}

/**
 * The closing lines of `backfill`. `plan`: the figures of the whole plan, read after the run
 * (undefined when they could not be read: the run's outcome stands).
 */
function reportOutcome(
  result: BackfillResult,
  plan: BackfillStatus | undefined,
  stoppedBy: StopSignal | undefined,
  print: Print,
): void {
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
    return;
  }
  const where = plan ? ` at ${plan.percent.toFixed(1)}%, ${count(plan.rowsToGo)} rows to go` : '';
  print(`backfill stopped${stoppedBy ? ` by ${stoppedBy}` : ''}${where}`);
  print(thisRun);
  print(
    'the backfill is resumable: run backfill again (from this or any host) to continue from ' +
      'its committed checkpoints',
  );
}

/**
 * Where `backfill` shows its progress while it runs, one of three ways: a live display redrawn
 * in place on a terminal, plain lines every 2 s otherwise (a pipe, a file, CI), or JSON events
 * with `--json`. The closing summary is the command's (`backfill-command.ts`).
 * @internal
 */
import { backfillProgressEvent } from './backfill-events.js';
import { count, progressLine } from './backfill-format.js';
import { backfillFrame } from './backfill-frame.js';
import type { BackfillView, BackfillWatchOutput, BackfillWatchTiming } from './backfill-watch.js';
import type { Print } from './command.js';
import type { LiveDisplay } from './live-display.js';
import { ndjsonLine } from './ndjson.js';
import type { StopSignal } from './stop-signal.js';

/** How often plain lines and JSON progress events come. @internal */
export const progressIntervalMs = 2_000;

/** How often the live display reads the backfill's progress. @internal */
export const liveIntervalMs = 1_000;

/** How often the live display and JSON events read the phase and the fleet (`status()`). @internal */
export const fleetIntervalMs = 5_000;

/**
 * The output of a running `backfill`.
 *
 * @example
 * ```ts
 * const output = plainBackfillOutput(print, 'persons');
 * const watch = watchBackfill(migration, output, output.timing);
 * output.start(watch.view());
 * ```
 * @internal
 */
export interface BackfillOutput extends BackfillWatchOutput {
  readonly timing: BackfillWatchTiming;
  /** Before the first batch. */
  readonly start: (view: BackfillView) => void;
  /** The first SIGINT or SIGTERM: the workers stop after their current batch. */
  readonly stopping: (signal: StopSignal) => void;
  /** After `backfill()` returned or threw, with the final reading; nothing is shown after it. */
  readonly end: (view: BackfillView) => void;
}

const pausedNote = 'the backfill is paused: waiting (backfill-resume continues it)';

function stoppingNote(signal: StopSignal): string {
  return (
    `${signal}: stopping after the current batch (a second signal quits at once; ` +
    'the batch in flight then rolls back)'
  );
}

/**
 * Plain lines: an opening line, the progress line of the whole plan every 2 s (once while
 * paused), a note when the backfill pauses, and this run's own figures when the plan's cannot
 * be read.
 *
 * @example
 * ```ts
 * const output = plainBackfillOutput(print, 'persons');
 * ```
 * @internal
 */
export function plainBackfillOutput(print: Print, migrationName: string): BackfillOutput {
  let lastLine: string | undefined;
  return {
    timing: { intervalMs: progressIntervalMs, fleetIntervalMs: undefined },
    start: () =>
      print(
        `backfill of migration "${migrationName}": progress every ${progressIntervalMs / 1_000} s; ` +
          'Ctrl-C stops it after the current batch (resumable)',
      ),
    onView: ({ status, readFailed, run }) => {
      if (readFailed) {
        print(
          `backfill: this run scanned ${count(run.rowsScanned)} rows, copied ${count(run.rowsCopied)}`,
        );
        return;
      }
      if (status === undefined) return;
      const line = progressLine(status);
      // While paused the line would not change: say it once.
      if (status.state !== 'paused' || line !== lastLine) print(line);
      lastLine = line;
    },
    onPaused: () => print(pausedNote),
    stopping: (signal) => print(stoppingNote(signal)),
    end: () => undefined,
  };
}

/**
 * The live display: the frame of {@link backfillFrame} redrawn every second; notes stay above
 * it; the final frame stays on the screen, the summary comes below it.
 *
 * @example
 * ```ts
 * const output = liveBackfillOutput(openLiveDisplay(), 'persons');
 * ```
 * @internal
 */
export function liveBackfillOutput(display: LiveDisplay, migrationName: string): BackfillOutput {
  const draw = (view: BackfillView) => display.draw(backfillFrame(view, migrationName));
  return {
    timing: { intervalMs: liveIntervalMs, fleetIntervalMs },
    start: draw,
    onView: draw,
    onPaused: () => display.print(pausedNote),
    stopping: (signal) => display.print(stoppingNote(signal)),
    end: (view) => {
      draw(view);
      display.end();
    },
  };
}

/**
 * `--json`: a `progress` event every 2 s, `paused` and `stopping` events; the command prints
 * the `done` event.
 *
 * @example
 * ```ts
 * const output = jsonBackfillOutput(print, 'persons');
 * ```
 * @internal
 */
export function jsonBackfillOutput(print: Print, migrationName: string): BackfillOutput {
  return {
    timing: { intervalMs: progressIntervalMs, fleetIntervalMs },
    start: () => undefined,
    onView: (view) => print(backfillProgressEvent(view, migrationName)),
    onPaused: () => print(ndjsonLine('paused', { command: 'backfill' })),
    stopping: (signal) => print(ndjsonLine('stopping', { command: 'backfill', signal })),
    end: () => undefined,
  };
}

/**
 * `status --watch`: the status read again every interval until Ctrl-C, shown as a live
 * display on a terminal, a line per interval otherwise, `status` events with `--json`.
 * @internal
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { MigrationStatus, PersonsMigration } from '../migration/persons-migration.js';
import { checkArgument } from '../options/call-arguments.js';
import { integerIn } from '../util/parse-options.js';
import type { CliInvocation } from './arguments.js';
import { describeFailure } from './cli-errors.js';
import type { CommandIo, Print } from './command.js';
import type { LiveDisplay } from './live-display.js';
import { ndjsonLine } from './ndjson.js';
import { statusWatchEvent, statusWatchFrame, statusWatchLine } from './status-watch-format.js';
import { type StopSignal, stopOnSignal } from './stop-signal.js';

/** `status --watch` reads the status this often unless `--interval-ms` says otherwise. @internal */
export const defaultWatchIntervalMs = 2_000;

/** `--interval-ms`: from 200 ms (the status reads the catalog) to an hour. @internal */
const intervalMsSchema = integerIn('intervalMs', 200, 3_600_000);

/**
 * The interval of `status --watch`, checked (`InvalidOptionsError` naming `intervalMs`, which
 * the CLI reports as `--interval-ms`, exit 2).
 *
 * @example
 * ```ts
 * watchIntervalOf({ ...invocation, intervalMs: 500 }); // 500
 * ```
 * @internal
 */
export function watchIntervalOf(invocation: Pick<CliInvocation, 'intervalMs'>): number {
  return checkArgument(
    intervalMsSchema,
    invocation.intervalMs ?? defaultWatchIntervalMs,
    'intervalMs',
  );
}

/**
 * `status --watch [--interval-ms N] [--json]`: reads `migration.status()` at once and then
 * every interval (default {@link defaultWatchIntervalMs}) until the first SIGINT or SIGTERM,
 * and resolves to 0 then. On a terminal the live display is redrawn in place (the backfill's
 * bar with its ETA, which settles as the same migration object is asked again, the phase and
 * the fleet's fallback rate, the latest verification, the cutover guards); otherwise one line
 * per interval; with `--json` a `status` event per interval (the object of `status --json`)
 * and a final `done` event. A first read that fails fails the command (exit 1, as `status`);
 * a later one is shown (`error` event) and tried again at the next interval.
 *
 * @example
 * ```ts
 * const code = await statusWatch(migration, { ...invocation, watch: true, intervalMs: 1_000 }, io);
 * // 0 after Ctrl-C
 * ```
 * @internal
 */
export async function statusWatch(
  migration: PersonsMigration,
  invocation: CliInvocation,
  io: CommandIo,
): Promise<number> {
  const intervalMs = watchIntervalOf(invocation);
  let latest = await migration.status();
  const output = watchOutputOf(migration, invocation, io, intervalMs);
  const stop = stopOnSignal(io.onStop, () => undefined);
  try {
    output.show(latest);
    while (!stop.signal.aborted) {
      const woke = await sleep(intervalMs, true, { signal: stop.signal }).catch(() => false);
      if (!woke) break;
      try {
        latest = await migration.status();
        output.show(latest);
      } catch (error) {
        output.failed(describeFailure(error).lines[0] ?? 'the status could not be read');
      }
    }
  } finally {
    stop.unsubscribe();
    output.end(stop.stoppedBy());
  }
  return 0;
}

interface WatchOutput {
  show(s: MigrationStatus): void;
  /** A read failed: `reason` is the CLI's `error [CODE]: message` line. */
  failed(reason: string): void;
  end(stoppedBy: StopSignal | undefined): void;
}

function watchOutputOf(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print, openLiveDisplay }: CommandIo,
  intervalMs: number,
): WatchOutput {
  const { controlSchema } = migration.options;
  if (invocation.json) return jsonWatch(print, controlSchema);
  if (openLiveDisplay) return liveWatch(openLiveDisplay(), print, intervalMs);
  return {
    show: (s) => print(statusWatchLine(s, new Date())),
    failed: (reason) => print(`status at ${new Date().toISOString()}: unavailable: ${reason}`),
    end: (stoppedBy) => print(stoppedLine(stoppedBy)),
  };
}

function stoppedLine(stoppedBy: StopSignal | undefined): string {
  return `stopped watching${stoppedBy ? ` (${stoppedBy})` : ''}`;
}

function liveWatch(display: LiveDisplay, print: Print, intervalMs: number): WatchOutput {
  let frame: string[] = [];
  return {
    show(s) {
      frame = statusWatchFrame(s, intervalMs, new Date());
      display.draw(frame);
    },
    failed(reason) {
      display.draw([
        ...frame,
        `  last read failed at ${new Date().toTimeString().slice(0, 8)}: ${reason}`,
      ]);
    },
    end(stoppedBy) {
      display.end();
      print(stoppedLine(stoppedBy));
    },
  };
}

function jsonWatch(print: Print, controlSchema: string): WatchOutput {
  return {
    show: (s) => print(statusWatchEvent(s, controlSchema, new Date())),
    failed: (reason) =>
      print(ndjsonLine('error', { command: 'status', at: new Date(), message: reason })),
    end: (stoppedBy) =>
      print(
        ndjsonLine('done', {
          command: 'status',
          outcome: 'stopped',
          signal: stoppedBy,
          exitCode: 0,
        }),
      ),
  };
}

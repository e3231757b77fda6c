/**
 * The live display of `backfill`, `verify` and `status --watch` on a terminal: a block of
 * lines redrawn in place (through `log-update`, which writes the terminal's control sequences),
 * with lines that stay printed above it. Only used when stdout is a terminal; a pipe, a file or
 * `--json` get plain lines instead.
 * @internal
 */
import { createLogUpdate } from 'log-update';

/**
 * What the live display writes to: a terminal's output stream (`process.stdout` when it is a
 * TTY). `columns` and `rows` size the display; a terminal that reports 0 (a pseudo-terminal
 * nobody sized) is taken as 80 x 24.
 *
 * @example
 * ```ts
 * const terminal: TerminalStream | undefined = liveTerminalOf(process.stdout, process.env);
 * ```
 * @internal
 */
export interface TerminalStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
  readonly rows?: number;
}

/**
 * A block of lines redrawn in place.
 *
 * @example
 * ```ts
 * const display = createLiveDisplay(process.stdout, (text) => text);
 * display.draw(['backfill [#####.....] 50.0%']);
 * display.print('SIGINT: stopping after the current batch'); // stays, above the block
 * display.end(); // the last block stays; what is printed next goes below it
 * ```
 * @internal
 */
export interface LiveDisplay {
  /** Replaces the block with these lines (nothing is written when they did not change). */
  draw(lines: readonly string[]): void;
  /** Prints a line that stays, above the block, and draws the block again below it. */
  print(line: string): void;
  /** Leaves the last block on the screen; what is written next goes below it. Idempotent. */
  end(): void;
}

/**
 * `stream` when it is a terminal that can redraw lines (a TTY whose `TERM` is not `dumb`),
 * else undefined: output then goes as plain lines.
 *
 * @example
 * ```ts
 * liveTerminalOf(process.stdout, process.env); // process.stdout in a terminal, undefined in a pipe
 * ```
 * @internal
 */
export function liveTerminalOf(
  stream: TerminalStream,
  env: Readonly<Record<string, string | undefined>>,
): TerminalStream | undefined {
  return stream.isTTY === true && env.TERM !== 'dumb' ? stream : undefined;
}

/**
 * A live display on `terminal`; `redact` is applied to every line before it is written (the
 * CLI passes its password redaction, as for every other line it prints).
 *
 * @example
 * ```ts
 * const display = createLiveDisplay(process.stdout, (text) => redactSecrets(text, passwords));
 * ```
 * @internal
 */
export function createLiveDisplay(
  terminal: TerminalStream,
  redact: (text: string) => string,
): LiveDisplay {
  // log-update wraps and clips to the reported size: an unsized terminal (0 x 0) would clip
  // the whole block away.
  const sized = {
    write: (text: string) => terminal.write(text),
    get columns() {
      return terminal.columns || 80;
    },
    get rows() {
      return terminal.rows || 24;
    },
  };
  // The cursor stays visible: hiding it makes log-update install signal-exit's SIGINT handler,
  // which kills the process when the CLI's own stop handler has just unsubscribed (the first
  // Ctrl-C must stop a command cleanly, not kill it).
  const update = createLogUpdate(sized as unknown as NodeJS.WriteStream, { showCursor: true });
  let block = '';
  let ended = false;
  return {
    draw(lines) {
      if (ended) return;
      block = lines.map(redact).join('\n');
      update(block);
    },
    print(line) {
      if (ended) {
        terminal.write(`${redact(line)}\n`);
        return;
      }
      update.clear();
      terminal.write(`${redact(line)}\n`);
      if (block !== '') update(block);
    },
    end() {
      if (ended) return;
      ended = true;
      update.done();
    },
  };
}

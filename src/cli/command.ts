/**
 * What every CLI command is: a thin call of one `PersonsMigration` method that prints what
 * happened. The CLI adds no behaviour of its own, so a service and an operator at the terminal
 * always agree.
 * @internal
 */
import type { PersonsMigration } from '../migration/persons-migration.js';
import type { CliInvocation, CommandName } from './arguments.js';
import type { LiveDisplay } from './live-display.js';
import type { OnStopSignal } from './stop-signal.js';

/** Where a command writes its lines (already redacted by the caller). @internal */
export type Print = (line: string) => void;

/** What a command may use besides the migration. @internal */
export interface CommandIo {
  readonly print: Print;
  readonly onStop: OnStopSignal;
  /**
   * Opens a live display on the terminal (`backfill`, `verify`, `status --watch`); undefined
   * when stdout is not a terminal (a pipe, a file, CI) or with `--json`: print lines then.
   * While a display is open, lines go through its `print`.
   */
  readonly openLiveDisplay: (() => LiveDisplay) | undefined;
}

/** A command that needs the database. @internal */
export type DatabaseCommand = Exclude<CommandName, 'help'>;

/** A command: resolves to its exit status, or to nothing for 0. @internal */
export type Command = (
  migration: PersonsMigration,
  invocation: CliInvocation,
  io: CommandIo,
) => Promise<number | undefined>;

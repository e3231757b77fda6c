/**
 * How the CLI reports a failure: the lines to print on stderr and the exit status.
 *
 * | error                                   | prints                          | exit |
 * |-----------------------------------------|---------------------------------|------|
 * | {@link UsageError}                      | `error [USAGE]: ...`            | 2    |
 * | `InvalidOptionsError` (a flag's value)  | `error [INVALID_OPTIONS]: ...`  | 2    |
 * | any other `DualReadError`               | `error [CODE]: ...`             | 1    |
 * | a database error with a SQLSTATE        | `error [QUERY_FAILED]: ...`     | 1    |
 * | anything else                           | `error [UNEXPECTED]: ...`       | 1    |
 *
 * Only messages are printed, never a driver error's other fields (`detail` can quote row
 * values); the caller redacts passwords from every line.
 * @internal
 */
import { toQueryFailedError } from '../db/query-failed.js';
import { DualReadError, InvalidOptionsError, PreflightError } from '../errors.js';
import { type CommandName, flagFor } from './arguments.js';
import { findingLines } from './finding-format.js';
import { UsageError, usage } from './usage.js';

/** What to print for a failure, and the exit status. @internal */
export interface CliFailure {
  readonly lines: readonly string[];
  readonly exitCode: 1 | 2;
}

// SQLSTATEs an operator can fix from the command line, with the way to do it.
const hints: Record<string, string> = {
  '42501': 'the database user lacks a privilege this command needs (see the message above)',
  '3F000': 'a schema does not exist: check --schema and --control-schema',
  '42P01':
    'a table does not exist: check --schema and --control-schema, or run install then prepare if this migration is new',
};

/**
 * Describes `error` for the terminal. `command`, when known, lets a rejected option point at
 * the way that command sets it (`backfill-rate 0` -> its argument, not `--max-rows-per-second`).
 *
 * @example
 * ```ts
 * const { lines, exitCode } = describeFailure(new UsageError('no command given'));
 * // lines[0] === 'error [USAGE]: no command given', exitCode === 2
 * ```
 * @internal
 */
export function describeFailure(error: unknown, command?: CommandName): CliFailure {
  if (error instanceof UsageError) {
    const more = error.showUsage ? ['', usage.trimEnd()] : ['run "pg-dual-read help" for usage'];
    return { lines: [`error [USAGE]: ${error.message}`, ...more], exitCode: 2 };
  }
  if (error instanceof InvalidOptionsError) {
    const flags = [
      ...new Set(error.issues.map((i) => flagFor(i.path, command)).filter((f) => f !== undefined)),
    ];
    const lines = [`error [${error.code}]: ${error.message}`];
    if (flags.length > 0) lines.push(`check ${flags.join(', ')} (pg-dual-read help)`);
    return { lines, exitCode: 2 };
  }
  if (error instanceof PreflightError) {
    const warnings = findingLines('warning', error.warnings);
    return { lines: [`error [${error.code}]: ${error.message}`, ...warnings], exitCode: 1 };
  }
  if (error instanceof DualReadError) {
    return { lines: [`error [${error.code}]: ${error.message}`], exitCode: 1 };
  }
  const failed = toQueryFailedError(error, '', 0);
  const message = failed.cause instanceof Error ? failed.cause.message : String(error);
  if (failed.sqlState) {
    const lines = [`error [QUERY_FAILED]: SQLSTATE ${failed.sqlState}: ${message}`];
    const hint = hints[failed.sqlState];
    if (hint) lines.push(`hint: ${hint}`);
    return { lines, exitCode: 1 };
  }
  return { lines: [`error [UNEXPECTED]: ${message}`], exitCode: 1 };
}

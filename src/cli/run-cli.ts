/**
 * The CLI as a function: parse the command line, open the database, run one command, close
 * everything, return the exit status. It never calls `process.exit`, so tests (and other
 * programs) can run it in-process.
 * @internal
 */

import type { DatabaseHandle } from '../db/database-handle.js';
import { openDatabase } from '../db/open-database.js';
import { createPersonsMigration, type PersonsMigration } from '../migration/persons-migration.js';
import { resolveBackfillOptions } from '../options/backfill-options.js';
import { callArguments, checkArgument } from '../options/call-arguments.js';
import {
  resolveCutoverOptions,
  resolveDropRetiredOptions,
  resolveFinalizeOptions,
  resolveRollbackOptions,
} from '../options/cutover-options.js';
import { checkMigrationOptionsWithoutDb } from '../options/migration-options.js';
import { resolvePrepareOptions } from '../options/prepare-options.js';
import { resolveVerifyOptions } from '../options/verify-options.js';
import { type CliInvocation, parseCliArguments } from './arguments.js';
import { describeFailure } from './cli-errors.js';
import { commands, prepareOptionsOf } from './commands.js';
import { createLiveDisplay, liveTerminalOf, type TerminalStream } from './live-display.js';
import { passwordsOf, redactSecrets } from './redact.js';
import { watchIntervalOf } from './status-watch.js';
import { type OnStopSignal, onProcessStop } from './stop-signal.js';
import { usage } from './usage.js';

/**
 * Where the CLI reads its environment and writes its output. Each write is one line without
 * its trailing newline.
 *
 * @example
 * ```ts
 * const out: string[] = [];
 * const io: Partial<CliIo> = { stdout: (l) => out.push(l), env: { DATABASE_URL: url } };
 * ```
 */
export interface CliIo {
  readonly stdout: (line: string) => void;
  readonly stderr: (line: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Subscribes to the signals that stop a `backfill` after its current batch (or a `verify`
   * after its current chunk); returns the
   * unsubscribe. By default the process's first SIGINT or SIGTERM (a second one has its
   * default effect: the process ends at once). Tests pass their own to stop a backfill.
   */
  readonly onStop: OnStopSignal;
  /**
   * The terminal `backfill`, `verify` and `status --watch` draw their live display on (written
   * to directly, not through `stdout`); undefined for plain lines. By default `process.stdout`
   * when it is a terminal (and `TERM` is not `dumb`) and `stdout` is not given; a caller that
   * passes its own `stdout` gets plain lines unless it passes a terminal too.
   */
  readonly terminal: TerminalStream | undefined;
}

const processIo: Omit<CliIo, 'terminal'> = {
  stdout: (line) => process.stdout.write(`${line}\n`),
  stderr: (line) => process.stderr.write(`${line}\n`),
  env: process.env,
  onStop: onProcessStop,
};

/** The terminal of the live display: the process's own only when its stdout is used. */
function terminalOf(io: Partial<CliIo>, env: CliIo['env']): TerminalStream | undefined {
  if ('terminal' in io) return io.terminal;
  return io.stdout === undefined ? liveTerminalOf(process.stdout, env) : undefined;
}

/**
 * Runs `pg-dual-read` with `argv` (the arguments after the program name) and resolves to the
 * exit status: 0 done (`verify`: clean), 1 the operation failed (`error [CODE]` on stderr) or
 * `verify` found mismatches (keys on stdout), 2 wrong usage, 130 (SIGINT) or 143 (SIGTERM) a
 * `backfill` (resumable) or `verify` stopped before the end. Never prints a database password,
 * whatever fails.
 *
 * @example
 * ```ts
 * import { runCli } from './run-cli.js';
 * const code = await runCli(['status', '--json'], { env: { DATABASE_URL: 'pglite://./data' } });
 * ```
 */
export async function runCli(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const { stdout, stderr, env, onStop } = { ...processIo, ...io };
  const terminal = terminalOf(io, env);
  let passwords: string[] = [];
  const redact = (line: string) => redactSecrets(line, passwords);
  const out = (line: string) => stdout(redact(line));
  const err = (line: string) => stderr(redact(line));

  let invocation: CliInvocation;
  try {
    invocation = parseCliArguments(argv, env);
  } catch (error) {
    return fail(error, err);
  }
  if (invocation.command === 'help' || invocation.databaseUrl === undefined) {
    out(usage.trimEnd());
    return 0;
  }
  passwords = passwordsOf(invocation.databaseUrl);

  let db: DatabaseHandle | undefined;
  let migration: PersonsMigration | undefined;
  try {
    checkCommandOptions(invocation);
    db = await openDatabase(invocation.databaseUrl, {
      maxConnections: connectionsFor(invocation),
    });
    migration = createPersonsMigration({ ...invocation.migration, db });
    const openLiveDisplay =
      terminal && !invocation.json ? () => createLiveDisplay(terminal, redact) : undefined;
    const code = await commands[invocation.command](migration, invocation, {
      print: out,
      onStop,
      openLiveDisplay,
    });
    return code ?? 0;
  } catch (error) {
    return fail(error, err, invocation);
  } finally {
    await migration?.close().catch(() => undefined);
    await db?.close().catch(() => undefined);
  }
}

/**
 * The library's own validation of every flag, before connecting: a bad flag value is reported
 * (`InvalidOptionsError`, exit 2, naming the flag) even when the database is down, and at
 * once. The same schemas as the library's, so the CLI accepts exactly what the library does;
 * the command validates them again when it calls the library.
 */
function checkCommandOptions(invocation: CliInvocation): void {
  checkMigrationOptionsWithoutDb(invocation.migration);
  if (invocation.command === 'prepare') resolvePrepareOptions(prepareOptionsOf(invocation));
  if (invocation.command === 'backfill') resolveBackfillOptions(invocation.backfill);
  if (invocation.command === 'verify') resolveVerifyOptions(invocation.verify);
  if (invocation.command === 'backfill-rate') {
    checkArgument(callArguments.maxRowsPerSecond, invocation.rate ?? null, 'maxRowsPerSecond');
  }
  if (invocation.command === 'grants') {
    checkArgument(callArguments.roleName, invocation.role, 'role');
  }
  if (invocation.command === 'status' && invocation.watch) watchIntervalOf(invocation);
  const { lifecycle } = invocation;
  if (invocation.command === 'cutover') resolveCutoverOptions(lifecycle);
  if (invocation.command === 'rollback') resolveRollbackOptions(lifecycle);
  if (invocation.command === 'finalize') resolveFinalizeOptions(lifecycle);
  if (invocation.command === 'drop-retired') resolveDropRetiredOptions(lifecycle);
}

/**
 * One connection runs a command (phase changes do not need a pool); a backfill needs one per
 * worker, one for its progress, and the status its display reads every few seconds checks
 * the catalog side by side; a verification reads both tables at once (checksums of the old and
 * the new range side by side). An invalid --workers is the library's to refuse.
 */
function connectionsFor(invocation: CliInvocation): number {
  if (invocation.command === 'verify') return 4;
  if (invocation.command !== 'backfill') return 2;
  const workers = invocation.backfill.workers ?? 2;
  return Number.isSafeInteger(workers) ? Math.min(Math.max(workers, 1), 64) + 4 : 2;
}

function fail(error: unknown, err: (line: string) => void, invocation?: CliInvocation): 1 | 2 {
  const { lines, exitCode } = describeFailure(error, invocation?.command);
  for (const line of lines) for (const part of line.split('\n')) err(part);
  return exitCode;
}

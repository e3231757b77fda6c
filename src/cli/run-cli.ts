/**
 * The CLI as a function: parse the command line, open the database, run one command, close
 * everything, return the exit status. It never calls `process.exit`, so tests (and other
 * programs) can run it in-process.
 * @internal
 */
import type { DatabaseHandle } from '../db/database-handle.js';
import { openDatabase } from '../db/open-database.js';
import { createPersonsMigration, type PersonsMigration } from '../migration/persons-migration.js';
import { type CliInvocation, parseCliArguments } from './arguments.js';
import { describeFailure } from './cli-errors.js';
import { commands } from './commands.js';
import { passwordsOf, redactSecrets } from './redact.js';
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
}

const processIo: CliIo = {
  stdout: (line) => process.stdout.write(`${line}\n`),
  stderr: (line) => process.stderr.write(`${line}\n`),
  env: process.env,
};

/**
 * Runs `pg-dual-read` with `argv` (the arguments after the program name) and resolves to the
 * exit status: 0 done, 1 the operation failed, 2 wrong usage. Never prints a database
 * password, whatever fails.
 *
 * @example
 * ```ts
 * import { runCli } from './run-cli.js';
 * const code = await runCli(['status', '--json'], { env: { DATABASE_URL: 'pglite://./data' } });
 * ```
 */
export async function runCli(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const { stdout, stderr, env } = { ...processIo, ...io };
  let passwords: string[] = [];
  const out = (line: string) => stdout(redactSecrets(line, passwords));
  const err = (line: string) => stderr(redactSecrets(line, passwords));

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
    // One connection runs the command; phase changes do not need a pool.
    db = await openDatabase(invocation.databaseUrl, { maxConnections: 2 });
    migration = createPersonsMigration({ ...invocation.migration, db });
    await commands[invocation.command](migration, invocation, out);
    return 0;
  } catch (error) {
    return fail(error, err);
  } finally {
    await migration?.close().catch(() => undefined);
    await db?.close().catch(() => undefined);
  }
}

function fail(error: unknown, err: (line: string) => void): 1 | 2 {
  const { lines, exitCode } = describeFailure(error);
  for (const line of lines) for (const part of line.split('\n')) err(part);
  return exitCode;
}

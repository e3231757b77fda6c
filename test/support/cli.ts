/** The CLI run in-process by the suites, with what it printed. */
import { runCli } from '../../src/cli/main.js';

/** What one in-process run of the CLI printed, its exit status and how long it took. */
export interface CliRun {
  readonly code: number;
  readonly ms: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout, one entry per printed line. */
  readonly lines: readonly string[];
}

/**
 * Runs `pg-dual-read argv` in-process against `databaseUrl` (as `DATABASE_URL`), with `env`'s
 * variables too.
 */
export async function runCliInProcess(
  argv: readonly string[],
  databaseUrl: string,
  env: Readonly<Record<string, string>> = {},
): Promise<CliRun> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const started = performance.now();
  const code = await runCli(argv, {
    stdout: (line) => stdout.push(line),
    stderr: (line) => stderr.push(line),
    env: { DATABASE_URL: databaseUrl, ...env },
  });
  return {
    code,
    ms: performance.now() - started,
    stdout: stdout.join('\n'),
    stderr: stderr.join('\n'),
    lines: stdout,
  };
}

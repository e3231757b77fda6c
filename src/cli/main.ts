#!/usr/bin/env node
/**
 * The `pg-dual-read` executable (`bin` in package.json). Importing this module runs nothing:
 * the command line is only executed when this file is the process's entry script.
 *
 * @example
 * ```sh
 * DATABASE_URL=postgres://app@db/prod pg-dual-read install
 * pg-dual-read prepare --partitions 16
 * pg-dual-read start-dual-read
 * pg-dual-read backfill --workers 4 --max-rows-per-second 20000   # Ctrl-C: resumable, exit 130
 * pg-dual-read backfill-rate 5000
 * pg-dual-read verify --repair              # exit 0 clean, 1 mismatches (each key listed)
 * pg-dual-read status --json
 * ```
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { redactSecrets } from './redact.js';
import { runCli } from './run-cli.js';

export { type CliIo, runCli } from './run-cli.js';

/** True when node was started with this file (directly or through the npm bin symlink). */
function isEntryScript(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryScript()) {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      // runCli reports its own failures; reaching here is a bug in the CLI itself.
      const message = (error as Error)?.message ?? String(error);
      process.stderr.write(`error [UNEXPECTED]: ${redactSecrets(message, [])}\n`);
      process.exitCode = 1;
    },
  );
}

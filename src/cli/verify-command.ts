/**
 * The `verify` command: runs `migration.verify()` and lists every mismatched key.
 * @internal
 */
import type { PersonsMigration } from '../migration/persons-migration.js';
import { resolveVerifyOptions } from '../options/verify-options.js';
import type { VerificationResult } from '../verify/run-verify.js';
import type { MismatchedKey } from '../verify/verification-store.js';
import type { CliInvocation, CliVerifyOptions } from './arguments.js';
import { plural } from './backfill-format.js';
import type { CommandIo, Print } from './command.js';
import { ndjsonLine } from './ndjson.js';
import { type CommandStop, type StopSignal, stopExitCodes, stopOnSignal } from './stop-signal.js';
import {
  keyJson,
  keyLine,
  keysCutLine,
  keysHeading,
  verificationResultJson,
  verifySummaryLines,
} from './verify-format.js';
import { type VerifyProgress, watchVerify } from './verify-progress.js';

/**
 * Exit status of a `verify` that finished with mismatches left (after re-checks and repair).
 * The same as a failed operation: a CI job fails either way; a failure prints
 * `error [CODE]` on stderr, mismatches print their keys on stdout and nothing on stderr.
 * @internal
 */
export const mismatchExitCode = 1;

/**
 * `verify [--method join|checksum] [--columns a,b] [--ranges 1,2] [--repair] [--max-keys N]
 * [--no-distinct-ids] [--json]`: runs `migration.verify()` with the options given (the
 * library validates them and applies its defaults), then lists every mismatched key of the
 * run, streamed a page at a time through `migration.mismatches(id)` (with `--repair`, the keys
 * it repaired too, marked). `--max-keys N` lists the first N keys only (and is the result's
 * inline `maxKeys`); the counts always cover every key.
 *
 * Text: a summary (outcome, what was checked, rows, counts per class, what a repair changed),
 * then one line per key, `class team_id person_id` (` repaired` appended for a repaired key).
 * While it runs, on a terminal, a live display (chunks done of total, mismatches so far,
 * elapsed) whose last frame stays above the summary; otherwise, with more than one chunk of
 * keys, a progress line per chunk comes first.
 *
 * JSON (newline-delimited events): with more than one chunk, a `progress` event per chunk;
 * then the `done` event: the fields of `VerificationResult` except its inline keys, plus
 * `migration`, `ranges`, `outcome` (`clean`, `mismatched`) and `exitCode`, then `keys` (every
 * key listed: `{"class","teamId","personId","repaired"}`) and `truncated` (true when
 * `--max-keys` cut the list). Stopped by a signal: a `stopping` event, then
 * `{"type":"done","outcome":"stopped","signal":...,"exitCode":130}`.
 *
 * Resolves to 0 when the run is clean, {@link mismatchExitCode} when mismatches remain. The
 * first SIGINT or SIGTERM stops the verification between chunks (the run is stored as
 * `aborted`) or the listing, exit 130 or 143. A bad flag value is the library's
 * `InvalidOptionsError` (exit 2, naming the flag) before anything is printed.
 *
 * @example
 * ```ts
 * const code = await verify(migration, { ...invocation, verify: { repair: true } }, io);
 * // verification 7 of migration "persons": NOT clean, 1 mismatched key
 * //   ...
 * // mismatched keys (class team_id person_id; keys the repair fixed end with 'repaired'):
 * // missing_in_new 1 17 repaired
 * // content_differs 1 23
 * ```
 * @internal
 */
export async function verify(
  migration: PersonsMigration,
  invocation: CliInvocation,
  io: CommandIo,
): Promise<number> {
  const { print } = io;
  const options = invocation.verify;
  const { json } = invocation;
  // The library's own validation first, so that a bad flag fails before anything is printed.
  resolveVerifyOptions(options);
  const progress = watchVerify(migration, { json, io });
  const stop = stopOnSignal(io.onStop, progress.stopping);
  try {
    const result = await runVerification(migration, options, stop, progress);
    if (typeof result === 'string') {
      if (json) print(stoppedEvent(result));
      else print(`verification stopped by ${result}: stored as aborted; run verify again`);
      return stopExitCodes[result];
    }
    return json
      ? await printJson(migration, result, options, stop, print)
      : await printText(migration, result, options, stop, print);
  } finally {
    stop.unsubscribe();
  }
}

/**
 * Runs `migration.verify()` until the stop signal, its chunks shown by `progress` (ended when
 * the call returns or throws). The result, or the signal that stopped it.
 */
async function runVerification(
  migration: PersonsMigration,
  options: CliVerifyOptions,
  stop: CommandStop,
  progress: VerifyProgress,
): Promise<VerificationResult | StopSignal> {
  try {
    return await migration.verify({ ...options, signal: stop.signal });
  } catch (error) {
    const stoppedBy = stop.stoppedBy();
    if (stoppedBy === undefined) throw error;
    return stoppedBy;
  } finally {
    progress.end();
  }
}

/** The `done` event of a `verify --json` that a signal stopped. */
function stoppedEvent(signal: StopSignal): string {
  return ndjsonLine('done', {
    command: 'verify',
    outcome: 'stopped',
    signal,
    exitCode: stopExitCodes[signal],
  });
}

/**
 * Calls `onKey` with every mismatched key of the run in key order (streamed a page at a time;
 * with `--repair`, the repaired keys too), up to `--max-keys`. Says how the listing ended:
 * every key, cut at `--max-keys` (more keys exist), or stopped by a signal.
 */
async function eachKey(
  migration: PersonsMigration,
  result: VerificationResult,
  options: CliVerifyOptions,
  stop: CommandStop,
  onKey: (key: MismatchedKey) => void,
): Promise<'all' | 'cut' | 'stopped'> {
  let listed = 0;
  const keys = migration.mismatches(result.id, { includeRepaired: options.repair === true });
  for await (const key of keys) {
    if (stop.stoppedBy() !== undefined) return 'stopped';
    if (options.maxKeys !== undefined && listed >= options.maxKeys) return 'cut';
    onKey(key);
    listed++;
  }
  return stop.stoppedBy() !== undefined ? 'stopped' : 'all';
}

/** `verify` as text: the summary, one line per key, what to do next; the exit status. */
async function printText(
  migration: PersonsMigration,
  result: VerificationResult,
  options: CliVerifyOptions,
  stop: CommandStop,
  print: Print,
): Promise<number> {
  const withRepaired = options.repair === true;
  for (const line of verifySummaryLines(result, migration.options.name, rangeText(options))) {
    print(line);
  }
  let listed = 0;
  const end = await eachKey(migration, result, options, stop, (key) => {
    if (listed === 0) print(keysHeading(withRepaired));
    print(keyLine(key));
    listed++;
  });
  const stoppedBy = stop.stoppedBy();
  if (end === 'stopped' && stoppedBy !== undefined) {
    print(`listing stopped by ${stoppedBy} after ${plural(listed, 'key')}`);
    return stopExitCodes[stoppedBy];
  }
  if (end === 'cut') print(keysCutLine(result, listed));
  else if (listed === 0) print('no mismatched key');
  for (const line of whatNextLines(result, withRepaired)) print(line);
  return result.clean ? 0 : mismatchExitCode;
}

/** `verify --json`'s `done` event: one object, serialised once; the exit status. */
async function printJson(
  migration: PersonsMigration,
  result: VerificationResult,
  options: CliVerifyOptions,
  stop: CommandStop,
  print: Print,
): Promise<number> {
  const keys: ReturnType<typeof keyJson>[] = [];
  const end = await eachKey(migration, result, options, stop, (key) => keys.push(keyJson(key)));
  const stoppedBy = stop.stoppedBy();
  if (end === 'stopped' && stoppedBy !== undefined) {
    print(stoppedEvent(stoppedBy));
    return stopExitCodes[stoppedBy];
  }
  const head = verificationResultJson(result, migration.options.name, options.ranges);
  const exitCode = result.clean ? 0 : mismatchExitCode;
  const outcome = result.clean ? 'clean' : 'mismatched';
  print(ndjsonLine('done', { ...head, outcome, exitCode, keys, truncated: end === 'cut' }));
  return exitCode;
}

/** What was asked for, as the library describes the run in status: ids sorted, each once. */
function rangeText(options: CliVerifyOptions): string {
  return options.ranges
    ? `backfill ranges ${[...new Set(options.ranges)].sort((a, b) => a - b).join(', ')}`
    : 'every key';
}

/** The closing lines of a run that is not clean: what a repair could do, what remains. */
function whatNextLines(result: VerificationResult, withRepaired: boolean): string[] {
  if (result.clean) return [];
  const lines: string[] = [];
  const repairable = (result.counts.missing_in_new ?? 0) + (result.counts.older_in_new ?? 0);
  if (repairable > 0 && !withRepaired) {
    lines.push(
      'verify --repair copies the missing_in_new and older_in_new rows from the old table',
    );
  }
  if (withRepaired && (result.counts.content_differs ?? 0) > 0) {
    lines.push('content_differs keys are never repaired: which table is right is yours to decide');
  }
  const remain = result.mismatches === 1 ? 'remains' : 'remain';
  lines.push(
    `not clean: ${plural(result.mismatches, 'mismatched key')} ${remain} (exit status ${mismatchExitCode})`,
  );
  return lines;
}

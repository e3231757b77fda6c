/**
 * What each CLI command does with an open migration, and what it prints. Each command is a
 * thin call of one `PersonsMigration` method: the CLI adds no behaviour of its own, so a
 * service and an operator at the terminal always agree.
 * @internal
 */

import type { BackfillResult } from '../backfill/run-backfill.js';
import type { PersonsMigration } from '../migration/persons-migration.js';
import { resolveBackfillOptions } from '../options/backfill-options.js';
import { resolveVerifyOptions } from '../options/verify-options.js';
import type { VerificationResult } from '../verify/run-verify.js';
import type { CliInvocation, CommandName } from './arguments.js';
import { count, plural, progressLine, statusJson, statusLines } from './backfill-format.js';
import {
  keyJson,
  keyLine,
  keysCutLine,
  keysHeading,
  verificationJson,
  verificationStatusLines,
  verifyJsonHead,
  verifySummaryLines,
} from './verify-format.js';

/** Where a command writes its lines (already redacted by the caller). @internal */
export type Print = (line: string) => void;

/** A signal that stops a running backfill. @internal */
export type StopSignal = 'SIGINT' | 'SIGTERM';

/**
 * Subscribes `handler` to the stop signals and returns the unsubscribe. The process's
 * implementation delivers the first SIGINT or SIGTERM only: after it, the signals have their
 * default effect again, so a second Ctrl-C ends the process at once.
 * @internal
 */
export type OnStopSignal = (handler: (signal: StopSignal) => void) => () => void;

/** What a command may use besides the migration. @internal */
export interface CommandIo {
  readonly print: Print;
  readonly onStop: OnStopSignal;
}

/**
 * Exit status of a `backfill` that a signal stopped before the end: 128 + the signal number,
 * as a shell reports a process killed by it. Non-zero on purpose: a supervisor (a Kubernetes
 * Job, systemd) must not take an interrupted backfill for a finished one. @internal
 */
export const stopExitCodes: Record<StopSignal, number> = { SIGINT: 130, SIGTERM: 143 };

/** How often `backfill` prints its progress line. @internal */
export const progressIntervalMs = 2_000;

/** A command that needs the database. @internal */
export type DatabaseCommand = Exclude<CommandName, 'help'>;

/** A command: resolves to its exit status, or to nothing for 0. @internal */
export type Command = (
  migration: PersonsMigration,
  invocation: CliInvocation,
  io: CommandIo,
) => Promise<number | undefined>;

/**
 * `install`: create or upgrade the control schema.
 *
 * @example
 * ```ts
 * await install(migration, invocation, io);
 * // control schema "dual_read": version 0 -> 1 (applied 1)
 * ```
 * @internal
 */
export async function install(
  migration: PersonsMigration,
  _: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const { controlSchema } = migration.options;
  const result = await migration.install();
  if (result.applied.length === 0) {
    print(
      `control schema "${controlSchema}" is already at version ${result.toVersion}; nothing to do`,
    );
  } else {
    print(
      `control schema "${controlSchema}": version ${result.fromVersion} -> ${result.toVersion} ` +
        `(applied ${result.applied.join(', ')})`,
    );
  }
  return undefined;
}

/**
 * `prepare [--partitions N]`: preflight, create the new table, register the migration.
 * A failed check throws `PreflightError`, whose message lists each problem with its fix.
 *
 * @example
 * ```ts
 * await prepare(migration, { ...invocation, partitions: 8 }, io);
 * ```
 * @internal
 */
export async function prepare(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const { name, schema, newTable } = migration.options;
  const result = await migration.prepare(
    invocation.partitions === undefined ? {} : { partitions: invocation.partitions },
  );
  const layout =
    result.partitions > 0 ? `${result.partitions} hash partitions by team_id` : 'not partitioned';
  print(
    `new table ${schema}.${newTable}: ${result.createdNewTable ? 'created' : 'already there'}, ${layout}`,
  );
  print(`ids of new persons come from ${result.idSequence}, shared with the old table`);
  print(
    `migration "${name}": ${result.registered ? 'registered in phase old' : 'already registered'}`,
  );
  print('next: deploy the services with migration.repository(), then run start-dual-read');
  return undefined;
}

/**
 * `start-dual-read`: move the migration from `old` to `dual_read`. From any other phase it
 * throws `PhaseTransitionError` and changes nothing.
 *
 * @example
 * ```ts
 * await startDualRead(migration, invocation, io);
 * // migration "persons": old -> dual_read (epoch 2)
 * ```
 * @internal
 */
export async function startDualRead(
  migration: PersonsMigration,
  _: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const { name, schema, newTable } = migration.options;
  const state = await migration.startDualRead();
  print(`migration "${name}": old -> ${state.phase} (epoch ${state.epoch})`);
  print(`reads now merge both tables; writes go to ${schema}.${newTable}`);
  print('next: run backfill to copy the old rows the new table lacks');
  return undefined;
}

/**
 * `backfill [--workers N] [--batch-size N] ...`: runs `migration.backfill()` with the options
 * given (the library validates them and applies its defaults) until every range is done.
 * Prints a progress line of the whole plan (all processes) every {@link progressIntervalMs}
 * from `backfillStatus()`, a note when the backfill is paused, and a summary at the end.
 *
 * The first SIGINT or SIGTERM aborts the call's signal: every worker stops after its current
 * batch (each batch commits with its checkpoint), gives its range back, and the command
 * resolves to {@link stopExitCodes} (130 for SIGINT, 143 for SIGTERM) after saying the
 * backfill is resumable: running `backfill` again, from any host, continues it. A signal
 * that arrives after the last range is done changes nothing: the exit status is 0. With the
 * process's signals, a second one ends the process at once (the batch in flight rolls back;
 * the range it held is taken over once its lease expires, after `--lease-ms`).
 *
 * Options are validated by the library (`InvalidOptionsError`, exit 2, pointing at the flag)
 * before anything is printed.
 *
 * @example
 * ```ts
 * const code = await backfill(migration, { ...invocation, backfill: { workers: 4 } }, io);
 * // backfill 42.3%: 12,345 rows scanned, 16,800 to go, 5,120 rows/s, ETA 4 s, 4 workers active
 * // backfill done: 29,145 rows scanned, 29,140 copied in total (100%)
 * // this run: 29,145 rows scanned, 29,140 copied, 31 batches, 8 ranges finished in 6.2 s
 * ```
 * @internal
 */
export async function backfill(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print, onStop }: CommandIo,
): Promise<number | undefined> {
  // The library's own validation, run first so that a bad flag fails before anything is
  // printed; backfill() below validates the same options again.
  resolveBackfillOptions(invocation.backfill);
  const controller = new AbortController();
  let stoppedBy: StopSignal | undefined;
  const unsubscribe = onStop((signal) => {
    if (stoppedBy !== undefined) return;
    stoppedBy = signal;
    print(
      `${signal}: stopping after the current batch (a second signal quits at once; ` +
        'the batch in flight then rolls back)',
    );
    controller.abort();
  });

  // This run's own figures, from the events (the progress line shows the whole plan's).
  const run = { scanned: 0, copied: 0 };
  // Said once per pause, whichever worker notices it first; the progress line says when the
  // backfill runs again.
  let pausedNoted = false;
  const onBatch = ({ scanned, copied }: { scanned: number; copied: number }) => {
    run.scanned += scanned;
    run.copied += copied;
  };
  const onPaused = () => {
    if (pausedNoted) return;
    pausedNoted = true;
    print('the backfill is paused: waiting (backfill-resume continues it)');
  };
  migration.events.on('backfill:batch', onBatch).on('backfill:paused', onPaused);

  let reading: Promise<void> | undefined;
  let lastLine: string | undefined;
  let ended = false;
  const timer = setInterval(() => {
    if (reading !== undefined) return; // the previous read is still running: skip a beat
    reading = migration
      .backfillStatus()
      .then(
        (s) => {
          if (s === undefined || ended) return;
          const line = progressLine(s);
          // While paused the line would not change: say it once.
          if (s.state !== 'paused' || line !== lastLine) print(line);
          lastLine = line;
          if (s.state !== 'paused') pausedNoted = false;
        },
        () => {
          if (!ended) {
            print(
              `backfill: this run scanned ${count(run.scanned)} rows, copied ${count(run.copied)}`,
            );
          }
        },
      )
      .finally(() => {
        reading = undefined;
      });
  }, progressIntervalMs);
  timer.unref();

  print(
    `backfill of migration "${migration.options.name}": progress every ${progressIntervalMs / 1_000} s; ` +
      'Ctrl-C stops it after the current batch (resumable)',
  );
  let result: BackfillResult;
  try {
    result = await migration.backfill({ ...invocation.backfill, signal: controller.signal });
  } finally {
    ended = true;
    clearInterval(timer);
    await reading;
    unsubscribe();
    migration.events.off('backfill:batch', onBatch).off('backfill:paused', onPaused);
  }

  // The figures of the whole plan; the run's outcome stands even if they cannot be read.
  const plan = await migration.backfillStatus().catch(() => undefined);
  const thisRun =
    `this run: ${count(result.rowsScanned)} rows scanned, ${count(result.rowsCopied)} copied, ` +
    `${plural(result.batches, 'batch', 'batches')}, ${plural(result.rangesDone, 'range')} finished ` +
    `in ${(result.ms / 1_000).toFixed(1)} s${result.planned ? ` (planned ${plural(plan?.ranges.length ?? 0, 'range')})` : ''}`;
  if (result.finished) {
    print(
      `backfill done: ${count(plan?.rowsScanned ?? result.rowsScanned)} rows scanned, ` +
        `${count(plan?.rowsCopied ?? result.rowsCopied)} copied in total (100%)`,
    );
    print(thisRun);
    return undefined;
  }
  const where = plan ? ` at ${plan.percent.toFixed(1)}%, ${count(plan.rowsToGo)} rows to go` : '';
  print(`backfill stopped${stoppedBy ? ` by ${stoppedBy}` : ''}${where}`);
  print(thisRun);
  print(
    'the backfill is resumable: run backfill again (from this or any host) to continue from ' +
      'its committed checkpoints',
  );
  return stoppedBy ? stopExitCodes[stoppedBy] : 1;
}

/**
 * `backfill-pause`: `pauseBackfill()`. Every worker of every process stops before its next
 * batch (within one batch) and waits, keeping its lease. Without a plan it throws
 * `BackfillRefusedError` (exit 1).
 *
 * @example
 * ```ts
 * await backfillPause(migration, invocation, io);
 * // backfill of migration "persons": paused (backfill-resume continues it)
 * ```
 * @internal
 */
export async function backfillPause(
  migration: PersonsMigration,
  _: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  await migration.pauseBackfill();
  print(
    `backfill of migration "${migration.options.name}": paused; workers stop within one batch ` +
      '(backfill-resume continues it)',
  );
  return undefined;
}

/**
 * `backfill-resume`: `resumeBackfill()`. Workers still running continue with their next
 * batch; if none runs, start `backfill` again. Without a plan it throws
 * `BackfillRefusedError` (exit 1).
 *
 * @example
 * ```ts
 * await backfillResume(migration, invocation, io);
 * ```
 * @internal
 */
export async function backfillResume(
  migration: PersonsMigration,
  _: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  await migration.resumeBackfill();
  print(
    `backfill of migration "${migration.options.name}": resumed (workers still running continue; ` +
      'if none is, run backfill)',
  );
  return undefined;
}

/**
 * `backfill-rate <N|none>`: `setBackfillRate(N)` or `setBackfillRate(null)`. Workers of every
 * process apply it with their next batch. The library checks N (a positive integer) and that
 * a plan exists (`BackfillRefusedError`, exit 1, when not).
 *
 * @example
 * ```ts
 * await backfillRate(migration, { ...invocation, rate: 5_000 }, io);
 * // backfill of migration "persons": at most 5,000 rows/s
 * ```
 * @internal
 */
export async function backfillRate(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const rate = invocation.rate ?? null;
  await migration.setBackfillRate(rate);
  const what = rate === null ? 'no rate ceiling' : `at most ${count(rate)} rows/s`;
  print(
    `backfill of migration "${migration.options.name}": ${what} (workers apply it with their next batch)`,
  );
  return undefined;
}

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
 * With more than one chunk of keys, a progress line per chunk comes first.
 *
 * JSON: one object, the fields of `VerificationResult` except its inline keys, plus
 * `migration` and `ranges`, then `keys` (every key listed, each on its own line so that any
 * number streams: `{"class","teamId","personId","repaired"}`) and `truncated` (true when
 * `--max-keys` cut the list).
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
  { print, onStop }: CommandIo,
): Promise<number> {
  const options = invocation.verify;
  const { json } = invocation;
  // The library's own validation first, so that a bad flag fails before anything is printed.
  resolveVerifyOptions(options);
  const controller = new AbortController();
  let stoppedBy: StopSignal | undefined;
  const unsubscribe = onStop((signal) => {
    if (stoppedBy !== undefined) return;
    stoppedBy = signal;
    if (!json) print(`${signal}: stopping the verification (a second signal quits at once)`);
    controller.abort();
  });
  const onChunk = ({
    chunk,
    chunks,
    mismatches,
  }: {
    chunk: number;
    chunks: number;
    mismatches: number;
  }) => {
    if (chunks > 1) {
      print(
        `verify: chunk ${count(chunk)} of ${count(chunks)} checked, ` +
          `${plural(mismatches, 'key')} to re-check`,
      );
    }
  };
  if (!json) migration.events.on('verify:chunk', onChunk);
  try {
    let result: VerificationResult;
    try {
      result = await migration.verify({ ...options, signal: controller.signal });
    } catch (error) {
      if (stoppedBy === undefined) throw error;
      if (!json) print(`verification stopped by ${stoppedBy}: stored as aborted; run verify again`);
      return stopExitCodes[stoppedBy];
    } finally {
      migration.events.off('verify:chunk', onChunk);
    }

    const name = migration.options.name;
    // As the library describes the run in status: ids sorted, each once.
    const range = options.ranges
      ? `backfill ranges ${[...new Set(options.ranges)].sort((a, b) => a - b).join(', ')}`
      : 'every key';
    const withRepaired = options.repair === true;
    const limit = options.maxKeys;
    let listed = 0;
    let cut = false;
    let pending: string | undefined;
    if (json) print(verifyJsonHead(result, name, options.ranges));
    else for (const line of verifySummaryLines(result, name, range)) print(line);
    for await (const key of migration.mismatches(result.id, { includeRepaired: withRepaired })) {
      if (stoppedBy !== undefined) break;
      if (limit !== undefined && listed >= limit) {
        cut = true;
        break;
      }
      if (json) {
        // Each key on its own line, the comma after it once the next one is known.
        if (pending !== undefined) print(`${pending},`);
        pending = keyJson(key);
      } else {
        if (listed === 0) print(keysHeading(withRepaired));
        print(keyLine(key));
      }
      listed++;
    }
    if (stoppedBy !== undefined) {
      if (!json) print(`listing stopped by ${stoppedBy} after ${plural(listed, 'key')}`);
      return stopExitCodes[stoppedBy];
    }
    if (json) {
      if (pending !== undefined) print(pending);
      print(`],"truncated":${cut}}`);
    } else {
      if (listed === 0 && !cut) print('no mismatched key');
      if (cut) print(keysCutLine(result, listed));
      if (!result.clean) {
        const repairable = (result.counts.missing_in_new ?? 0) + (result.counts.older_in_new ?? 0);
        if (repairable > 0 && !withRepaired) {
          print(
            'verify --repair copies the missing_in_new and older_in_new rows from the old table',
          );
        }
        if (withRepaired && (result.counts.content_differs ?? 0) > 0) {
          print('content_differs keys are never repaired: which table is right is yours to decide');
        }
        const remain = result.mismatches === 1 ? 'remains' : 'remain';
        print(
          `not clean: ${plural(result.mismatches, 'mismatched key')} ${remain} (exit status ${mismatchExitCode})`,
        );
      }
    }
    return result.clean ? 0 : mismatchExitCode;
  } finally {
    unsubscribe();
  }
}

/**
 * `status [--json]`: the phase as stored now, the backfill's progress and the latest
 * verification.
 *
 * The JSON form is one object with the fields of `MigrationStatus` plus `controlSchema`;
 * `epoch` is a decimal string, dates are ISO 8601, and `backfill` is `null` before the first
 * `backfill`, else every field of `BackfillStatus` (absent values as `null`, every range in
 * `ranges`); `verification` is `null` before the first `verify`, else every field of
 * `VerificationSummary` (`finishedAt` `null` while it runs).
 *
 * The text form lists the ranges one per line when the plan has at most 16
 * ({@link rangesListedInFull}); bigger plans list the running ranges only, with counts of the
 * others.
 *
 * @example
 * ```ts
 * await status(migration, { ...invocation, json: true }, io);
 * // {"name":"persons","phase":"dual_read","epoch":"2",...,"backfill":{"state":"done",...}}
 * ```
 * @internal
 */
export async function status(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const s = await migration.status();
  const { controlSchema } = migration.options;
  if (invocation.json) {
    print(
      JSON.stringify({
        ...s,
        phaseChangedAt: s.phaseChangedAt.toISOString(),
        backfill: statusJson(s.backfill),
        verification: verificationJson(s.verification),
        controlSchema,
      }),
    );
    return undefined;
  }
  print(`migration "${s.name}" (control schema "${controlSchema}")`);
  print(`  phase         ${s.phase} (epoch ${s.epoch}, since ${s.phaseChangedAt.toISOString()})`);
  print(`  old table     ${s.oldTable}`);
  print(`  new table     ${s.newTable}`);
  print(`  distinct ids  ${s.distinctIdsTable}`);
  for (const line of statusLines(s.backfill)) print(line);
  for (const line of verificationStatusLines(s.verification, s.backfill)) print(line);
  return undefined;
}

/** The command behind each name. @internal */
export const commands: Record<DatabaseCommand, Command> = {
  install,
  prepare,
  'start-dual-read': startDualRead,
  backfill,
  'backfill-pause': backfillPause,
  'backfill-resume': backfillResume,
  'backfill-rate': backfillRate,
  verify,
  status,
};

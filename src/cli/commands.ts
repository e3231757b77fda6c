/**
 * The short CLI commands (install, prepare, start-dual-read, backfill-pause/-resume/-rate,
 * status, grants) and the table of every command; `backfill` and `verify` have files of their own.
 * Each is a thin call of one `PersonsMigration` method (see `command.ts`).
 * @internal
 */

import type { PersonsMigration } from '../migration/persons-migration.js';
import type { PrepareOptions } from '../options/prepare-options.js';
import type { PrepareResult } from '../prepare/prepare.js';
import type { CliInvocation } from './arguments.js';
import { backfill } from './backfill-command.js';
import { count } from './backfill-format.js';
import type { Command, CommandIo, DatabaseCommand, Print } from './command.js';
import { findingLines } from './finding-format.js';
import { clients, cutover, dropRetired, finalize, rollback } from './lifecycle-commands.js';
import { statusJsonOf, statusTextLines } from './status-format.js';
import { statusWatch } from './status-watch.js';
import { verify } from './verify-command.js';

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
 * `prepare [--partitions N] [--dry-run]`: preflight, create the new table, register the
 * migration, then every warning with its fix. A failed check throws `PreflightError`, whose
 * message lists each problem with its fix. `--dry-run` changes nothing and prints every
 * finding and the DDL it would run; it exits 1 when `prepare` would refuse.
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
): Promise<number | undefined> {
  const result = await migration.prepare(prepareOptionsOf(invocation));
  if (result.dryRun) return printDryRun(migration, result, print);
  printPrepared(migration, result, print);
  for (const line of findingLines('warning', result.warnings)) print(line);
  print('next: deploy the services with migration.repository(), then run start-dual-read');
  return undefined;
}

/**
 * The `prepare()` options of `prepare [--partitions N] [--dry-run]`: the CLI checks them
 * before it connects, then passes them. @internal
 *
 * @example
 * ```ts
 * prepareOptionsOf({ ...invocation, partitions: 8 }); // { partitions: 8, dryRun: false }
 * ```
 */
export function prepareOptionsOf(invocation: CliInvocation): PrepareOptions {
  return {
    ...(invocation.partitions === undefined ? {} : { partitions: invocation.partitions }),
    dryRun: invocation.dryRun,
  };
}

/** What `prepare --dry-run` found and would run; exit 1 when prepare would refuse. */
function printDryRun(
  migration: PersonsMigration,
  result: PrepareResult,
  print: Print,
): number | undefined {
  print(`dry run of prepare for migration "${migration.options.name}": nothing was changed`);
  for (const line of findingLines('problem', result.problems)) print(line);
  for (const line of findingLines('warning', result.warnings)) print(line);
  if (result.ddl.length === 0) print('DDL: none');
  else {
    print(`DDL prepare would run (${result.ddl.length} statements):`);
    for (const statement of result.ddl) print(`${statement.replace(/\s+/g, ' ')};`);
  }
  if (result.problems.length === 0) {
    print('prepare would succeed: run it without --dry-run');
    return undefined;
  }
  print(`prepare would refuse: ${result.problems.length} problem(s) to fix first`);
  return 1;
}

function printPrepared(migration: PersonsMigration, result: PrepareResult, print: Print): void {
  const { name, schema, newTable } = migration.options;
  const layout =
    result.partitions > 0 ? `${result.partitions} hash partitions by team_id` : 'not partitioned';
  print(
    `new table ${schema}.${newTable}: ${result.createdNewTable ? 'created' : 'already there'}, ${layout}`,
  );
  print(`ids of new persons come from ${result.idSequence}, shared with the old table`);
  print(
    `migration "${name}": ${result.registered ? 'registered in phase old' : 'already registered'}`,
  );
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
 * `status [--json]`: the phase as stored now, the backfill's progress and the latest
 * verification. `status --watch [--interval-ms N] [--json]` redraws it until Ctrl-C
 * ({@link statusWatch}).
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
  io: CommandIo,
): Promise<number | undefined> {
  const { print } = io;
  if (invocation.watch) return statusWatch(migration, invocation, io);
  const s = await migration.status();
  const { controlSchema } = migration.options;
  if (invocation.json) print(JSON.stringify(statusJsonOf(s, controlSchema)));
  else for (const line of statusTextLines(s, controlSchema)) print(line);
  return undefined;
}

/**
 * `grants --role NAME`: prints the GRANT statements of a least-privilege runtime role (one per
 * line, each ending with `;`), to review and run as the owner of the control schema. Changes
 * nothing.
 *
 * @example
 * ```ts
 * await grants(migration, { ...invocation, role: 'persons_service' }, io);
 * // GRANT USAGE ON SCHEMA "public", "dual_read" TO "persons_service";
 * ```
 * @internal
 */
export async function grants(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  for (const statement of await migration.runtimeGrants(invocation.role ?? '')) {
    print(`${statement};`);
  }
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
  grants,
  cutover,
  rollback,
  finalize,
  'drop-retired': dropRetired,
  clients,
};

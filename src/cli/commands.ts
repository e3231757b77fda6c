/**
 * What each CLI command does with an open migration, and what it prints. Each command is a
 * thin call of one `PersonsMigration` method: the CLI adds no behaviour of its own, so a
 * service and an operator at the terminal always agree.
 * @internal
 */
import type { PersonsMigration } from '../migration/persons-migration.js';
import type { CliInvocation, CommandName } from './arguments.js';

/** Where a command writes its lines (already redacted by the caller). @internal */
export type Print = (line: string) => void;

/** A command that needs the database. @internal */
export type DatabaseCommand = Exclude<CommandName, 'help'>;

/**
 * `install`: create or upgrade the control schema.
 *
 * @example
 * ```ts
 * await install(migration, invocation, console.log);
 * // control schema "dual_read": version 0 -> 1 (applied 1)
 * ```
 * @internal
 */
export async function install(migration: PersonsMigration, _: CliInvocation, print: Print) {
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
}

/**
 * `prepare [--partitions N]`: preflight, create the new table, register the migration.
 * A failed check throws `PreflightError`, whose message lists each problem with its fix.
 *
 * @example
 * ```ts
 * await prepare(migration, { ...invocation, partitions: 8 }, console.log);
 * ```
 * @internal
 */
export async function prepare(
  migration: PersonsMigration,
  invocation: CliInvocation,
  print: Print,
) {
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
}

/**
 * `start-dual-read`: move the migration from `old` to `dual_read`. From any other phase it
 * throws `PhaseTransitionError` and changes nothing.
 *
 * @example
 * ```ts
 * await startDualRead(migration, invocation, console.log);
 * // migration "persons": old -> dual_read (epoch 2)
 * ```
 * @internal
 */
export async function startDualRead(migration: PersonsMigration, _: CliInvocation, print: Print) {
  const { name, schema, newTable } = migration.options;
  const state = await migration.startDualRead();
  print(`migration "${name}": old -> ${state.phase} (epoch ${state.epoch})`);
  print(`reads now merge both tables; writes go to ${schema}.${newTable}`);
}

/**
 * `status [--json]`: the phase as stored now. The JSON form is one object with the fields of
 * `MigrationStatus` plus `controlSchema`; `epoch` is a decimal string, `phaseChangedAt` ISO 8601.
 *
 * @example
 * ```ts
 * await status(migration, { ...invocation, json: true }, console.log);
 * // {"name":"persons","phase":"dual_read","epoch":"2",...}
 * ```
 * @internal
 */
export async function status(migration: PersonsMigration, invocation: CliInvocation, print: Print) {
  const s = await migration.status();
  if (invocation.json) {
    print(JSON.stringify({ ...s, controlSchema: migration.options.controlSchema }));
    return;
  }
  print(`migration "${s.name}" (control schema "${migration.options.controlSchema}")`);
  print(`  phase         ${s.phase} (epoch ${s.epoch}, since ${s.phaseChangedAt.toISOString()})`);
  print(`  old table     ${s.oldTable}`);
  print(`  new table     ${s.newTable}`);
  print(`  distinct ids  ${s.distinctIdsTable}`);
}

/** The command behind each name. @internal */
export const commands: Record<
  DatabaseCommand,
  (migration: PersonsMigration, invocation: CliInvocation, print: Print) => Promise<void>
> = {
  install,
  prepare,
  'start-dual-read': startDualRead,
  status,
};

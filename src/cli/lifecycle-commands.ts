/**
 * The CLI commands of the end of the lifecycle: `cutover`, `rollback`, `finalize`,
 * `drop-retired`. Each is a thin call of one `PersonsMigration` method; a refusal
 * (`TransitionRefusedError`) prints every unmet guard on stderr and exits 1.
 * @internal
 */

import type { PersonsMigration } from '../migration/persons-migration.js';
import type { CliInvocation } from './arguments.js';
import type { CommandIo } from './command.js';
import { clientLines } from './lifecycle-format.js';

/**
 * `cutover [--force] [--actor WHO] [--waive-index a,b]`: `dual_read -> new`.
 *
 * @example
 * ```ts
 * await cutover(migration, { ...invocation, lifecycle: { actor: 'ops' } }, io);
 * // migration "persons": dual_read -> new (epoch 3)
 * ```
 * @internal
 */
export async function cutover(
  migration: PersonsMigration,
  { lifecycle }: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const { force, actor, waiveIndexes } = lifecycle;
  const state = await migration.cutover({
    ...(force === undefined ? {} : { force }),
    ...(actor === undefined ? {} : { actor }),
    ...(waiveIndexes === undefined ? {} : { waiveIndexes }),
  });
  const { name, schema, newTable } = migration.options;
  print(`migration "${name}": dual_read -> ${state.phase} (epoch ${state.epoch})`);
  print(`reads and writes now use ${schema}.${newTable} only; rollback goes back to dual_read`);
  print('next: finalize, once every service runs well on the new table');
  return undefined;
}

/**
 * `rollback [--actor WHO]`: `new -> dual_read`, keeping every write made in `new`.
 *
 * @example
 * ```ts
 * await rollback(migration, invocation, io);
 * // migration "persons": new -> dual_read (epoch 4)
 * ```
 * @internal
 */
export async function rollback(
  migration: PersonsMigration,
  { lifecycle }: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const state = await migration.rollback(
    lifecycle.actor === undefined ? {} : { actor: lifecycle.actor },
  );
  print(`migration "${migration.options.name}": new -> ${state.phase} (epoch ${state.epoch})`);
  print('reads merge both tables again; every write made in new is kept');
  return undefined;
}

/**
 * `finalize [--force] [--actor WHO] [--lock-timeout-ms N] [--timeout-ms N]`: the consolidation.
 *
 * @example
 * ```ts
 * await finalize(migration, invocation, io);
 * // migration "persons": new -> finalized (epoch 5); old table kept as public.posthog_person_retired
 * ```
 * @internal
 */
export async function finalize(
  migration: PersonsMigration,
  { lifecycle }: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const { force, actor, lockTimeoutMs, timeoutMs } = lifecycle;
  const state = await migration.finalize({
    ...(force === undefined ? {} : { force }),
    ...(actor === undefined ? {} : { actor }),
    ...(lockTimeoutMs === undefined ? {} : { lockTimeoutMs }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
  const { name, schema, oldTable } = migration.options;
  print(
    `migration "${name}": new -> ${state.phase} (epoch ${state.epoch}); ` +
      `${schema}.${oldTable} is now the consolidated table`,
  );
  print(`the old table is kept as ${schema}.${state.retiredTable}`);
  print(`when nothing reads it any more: drop-retired --confirm ${state.retiredTable}`);
  return undefined;
}

/**
 * `drop-retired --confirm NAME`: drops the old table kept by `finalize`.
 *
 * @example
 * ```ts
 * await dropRetired(migration, { ...invocation, lifecycle: { confirm: 'posthog_person_retired' } }, io);
 * // dropped public.posthog_person_retired
 * ```
 * @internal
 */
export async function dropRetired(
  migration: PersonsMigration,
  { lifecycle }: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const { dropped } = await migration.dropRetiredTable({ confirm: lifecycle.confirm ?? '' });
  print(`dropped ${dropped}`);
  return undefined;
}

/**
 * `clients [--json]`: the live service instances of the client registry.
 *
 * @example
 * ```ts
 * await clients(migration, invocation, io);
 * // ingestion on host-1 (pid 4242, 0.1.0, protocol 2): dual_read epoch 2, ...
 * ```
 * @internal
 */
export async function clients(
  migration: PersonsMigration,
  invocation: CliInvocation,
  { print }: CommandIo,
): Promise<undefined> {
  const status = await migration.status();
  if (invocation.json) {
    print(JSON.stringify(status.clients));
    return undefined;
  }
  for (const line of clientLines(status)) print(line);
  return undefined;
}

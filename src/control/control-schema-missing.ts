import { sqlStateOf } from '../db/query-failed.js';
import { NotInstalledError } from '../errors.js';

/**
 * SQLSTATEs of a statement that names a table (42P01), a schema (3F000), a column (42703) or a
 * function (42883) that does not exist: what a statement on the control schema fails with when
 * `install()` never ran, or ran with an older version of the library.
 */
const missingObjectStates: ReadonlySet<string> = new Set(['42P01', '3F000', '42703', '42883']);

/**
 * True when `error` says a table, schema or column the statement names does not exist (by
 * SQLSTATE, never by message text). @internal
 *
 * @example
 * ```ts
 * catch (error) { if (isMissingObject(error)) return undefined; throw error; }
 * ```
 */
export function isMissingObject(error: unknown): boolean {
  const state = sqlStateOf(error);
  return state !== undefined && missingObjectStates.has(state);
}

/**
 * The error to throw when a statement on the control schema failed with
 * {@link isMissingObject}: the control schema is missing or older than this code. `next` says
 * what to do after `install()`. @internal
 *
 * @example
 * ```ts
 * if (isMissingObject(error)) throw controlSchemaNotInstalled('dual_read', 'prepare()', error);
 * ```
 */
export function controlSchemaNotInstalled(
  controlSchema: string,
  next: string,
  cause: unknown,
): NotInstalledError {
  return new NotInstalledError(
    `The control schema "${controlSchema}" is missing or older than this version of ` +
      `pg-dual-read (a table or column it names does not exist): run migration.install() ` +
      `(CLI: pg-dual-read install), then ${next}.`,
    { cause },
  );
}

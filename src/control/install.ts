import createDebug from 'debug';
import { sql } from 'kysely';
import type { DatabaseHandle } from '../db/database-handle.js';
import { quoteIdent } from '../db/identifiers.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { runTransaction } from '../db/transaction.js';
import { ControlSchemaTooNewError, NotInstalledError } from '../errors.js';
import { controlMigrations, latestControlVersion } from './control-migrations.js';

const debug = createDebug('pg-dual-read:install');

/**
 * What `migration.install()` ({@link PersonsMigration.install}) did.
 *
 * @example
 * ```ts
 * const { fromVersion, toVersion, applied } = await migration.install();
 * ```
 */
export interface InstallResult {
  /** Control schema version before this call (0 when it did not exist). */
  readonly fromVersion: number;
  /** Control schema version after this call. */
  readonly toVersion: number;
  /** Versions applied by this call; empty when another process (or an earlier run) did it. */
  readonly applied: readonly number[];
}

/**
 * Key of the transaction-level advisory lock that serialises installs of one control schema,
 * so ten processes starting at once apply each migration exactly once. @internal
 */
export function installLockKey(controlSchema: string) {
  return sql`hashtextextended(${`pg-dual-read:install:${controlSchema}`}, 0)`;
}

/**
 * Creates or upgrades the control schema, in one transaction, under an advisory lock.
 * Idempotent; refuses a control schema newer than this code. @internal (use `migration.install()`)
 */
export async function installControlSchema(
  handle: DatabaseHandle,
  controlSchema: string,
): Promise<InstallResult> {
  return sanitizeErrors(`install() of control schema "${controlSchema}"`, () =>
    applyControlMigrations(handle, controlSchema),
  );
}

async function applyControlMigrations(
  handle: DatabaseHandle,
  controlSchema: string,
): Promise<InstallResult> {
  return runTransaction(handle.db, async (trx) => {
    // The lock comes first: CREATE SCHEMA IF NOT EXISTS itself races between sessions.
    await sql`SELECT pg_advisory_xact_lock(${installLockKey(controlSchema)})`.execute(trx);
    await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(controlSchema)}`.execute(trx);
    const versions = sql.id(controlSchema, 'schema_version');
    await sql`CREATE TABLE IF NOT EXISTS ${versions} (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`.execute(trx);
    const { rows } = await sql<{ version: number | null }>`
      SELECT max(version) AS version FROM ${versions}`.execute(trx);
    const fromVersion = rows[0]?.version ?? 0;
    if (fromVersion > latestControlVersion) {
      throw new ControlSchemaTooNewError(fromVersion, latestControlVersion);
    }
    const applied: number[] = [];
    for (const migration of controlMigrations) {
      if (migration.version <= fromVersion) continue;
      debug('applying control migration %d (%s)', migration.version, migration.name);
      for (const statement of migration.statements(controlSchema)) await statement.execute(trx);
      await sql`INSERT INTO ${versions} (version, name)
        VALUES (${migration.version}, ${migration.name})`.execute(trx);
      applied.push(migration.version);
    }
    return { fromVersion, toVersion: Math.max(fromVersion, latestControlVersion), applied };
  });
}

/**
 * The installed control schema version, or 0 when it is not installed. @internal
 */
export async function installedControlVersion(
  handle: DatabaseHandle,
  controlSchema: string,
): Promise<number> {
  const { rows } = await sql<{ version: number | null }>`
    SELECT CASE WHEN to_regclass(${`${quoteIdent(controlSchema)}.schema_version`}) IS NULL
      THEN 0 END AS version`.execute(handle.db);
  if (rows[0]?.version === 0) return 0;
  const result = await sql<{ version: number | null }>`
    SELECT max(version) AS version FROM ${sql.id(controlSchema, 'schema_version')}`.execute(
    handle.db,
  );
  return result.rows[0]?.version ?? 0;
}

/**
 * Refuses, with what to do, a control schema older than this code (or none): `before` names
 * the call that needs it, e.g. `'prepare()'`. @internal
 */
export async function requireCurrentControlSchema(
  handle: DatabaseHandle,
  controlSchema: string,
  before: string,
): Promise<void> {
  const version = await installedControlVersion(handle, controlSchema);
  if (version < latestControlVersion) {
    throw new NotInstalledError(
      `The control schema "${controlSchema}" is at version ${version} of ${latestControlVersion}: ` +
        `run migration.install() (once per version of pg-dual-read) before ${before}.`,
    );
  }
}

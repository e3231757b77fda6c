import { DualReadError, QueryFailedError } from '../errors.js';

const MAX_SQL_CHARS = 500;

// The driver-error fields that name things (tables, constraints) but never carry row values.
// `detail` (`Key (team_id, distinct_id)=(1, alice) already exists`), `where`, `hint`,
// `internalQuery` and PGlite's `params` can, so they are dropped.
const KEPT_FIELDS = ['code', 'severity', 'schema', 'table', 'column', 'constraint', 'routine'];

const SQLSTATE = /^[0-9A-Z]{5}$/;

function driverSqlState(err: unknown): string | undefined {
  const code =
    typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && SQLSTATE.test(code) ? code : undefined;
}

// Class 22 (data exception) messages quote the offending input, e.g.
// `invalid input syntax for type integer: "alice"`: blank out every quoted part.
function redactedMessage(message: string, sqlState: string | undefined): string {
  return sqlState?.startsWith('22') ? message.replace(/"(?:[^"]|"")*"/g, '"<redacted>"') : message;
}

/**
 * @internal Wrap a driver error in a {@link QueryFailedError} whose message carries the SQLSTATE,
 * the driver's message, the first 500 characters of the SQL and the parameter count, never the
 * parameters. The `cause` is a sanitised copy of the driver error: only `code`, `message`,
 * `severity`, `schema`, `table`, `column`, `constraint` and `routine` are kept.
 *
 * @example
 * ```ts
 * const query = db.insertInto('persons').values(row).compile();
 * try {
 *   await db.executeQuery(query);
 * } catch (err) {
 *   throw toQueryFailedError(err, query.sql, query.parameters.length);
 * }
 * // QueryFailedError: Query failed (SQLSTATE 23505: duplicate key value violates unique
 * // constraint "persons_pkey"): insert into "persons" ... [3 parameters]
 * ```
 */
export function toQueryFailedError(
  err: unknown,
  sql: string,
  parameterCount: number,
): QueryFailedError {
  if (err instanceof QueryFailedError) return err;
  const sqlState = driverSqlState(err);
  const driverMessage = redactedMessage(
    err instanceof Error ? err.message : `non-Error value of type ${typeof err}`,
    sqlState,
  );
  const cause = new Error(driverMessage);
  if (err instanceof Error) cause.name = err.name;
  if (typeof err === 'object' && err !== null) {
    for (const field of KEPT_FIELDS) {
      const value = (err as Record<string, unknown>)[field];
      if (value !== undefined) Object.assign(cause, { [field]: value });
    }
  }
  const reason = sqlState ? `SQLSTATE ${sqlState}: ${driverMessage}` : driverMessage;
  const shownSql = sql.length > MAX_SQL_CHARS ? `${sql.slice(0, MAX_SQL_CHARS)}...` : sql;
  const params = `${parameterCount} parameter${parameterCount === 1 ? '' : 's'}`;
  return new QueryFailedError(
    `Query failed (${reason}): ${shownSql} [${params}]`,
    sql,
    parameterCount,
    sqlState,
    { cause },
  );
}

/**
 * True when `err` is a database error with this SQLSTATE: a driver error's `code`, or a
 * {@link QueryFailedError}'s `sqlState`.
 *
 * @example
 * ```ts
 * try { await insertPerson(row); } catch (err) {
 *   if (isSqlState(err, '23505')) return 'already exists';
 *   throw err;
 * }
 * ```
 */
export function isSqlState(err: unknown, code: string): boolean {
  return sqlStateOf(err) === code;
}

/**
 * The SQLSTATE of a driver error or a {@link QueryFailedError}, if it has one. @internal
 *
 * @example
 * ```ts
 * sqlStateOf(error); // '55P03' for a lock timeout
 * ```
 */
export function sqlStateOf(err: unknown): string | undefined {
  if (err instanceof QueryFailedError) return err.sqlState;
  return driverSqlState(err);
}

/**
 * A field of a driver error that names something, never a row value: the `constraint`, `column`
 * or `table` Postgres reports with a constraint violation (read from a {@link QueryFailedError}'s
 * sanitised cause too). @internal
 *
 * @example
 * ```ts
 * errorField(error, 'constraint'); // 'posthog_person_new_team_id_uuid_key'
 * ```
 */
export function errorField(
  err: unknown,
  field: 'constraint' | 'column' | 'table',
): string | undefined {
  const source = err instanceof QueryFailedError ? err.cause : err;
  const value =
    typeof source === 'object' && source !== null
      ? (source as Record<string, unknown>)[field]
      : undefined;
  return typeof value === 'string' ? value : undefined;
}

/**
 * Runs `fn`, passing {@link DualReadError}s through and turning any other error (a driver
 * error whose `detail` may hold row values) into a {@link QueryFailedError} described by
 * `operation`. For control-plane calls that run several statements. @internal
 *
 * @example
 * ```ts
 * await sanitizeErrors('install() of control schema "dual_read"', () => install());
 * ```
 */
export async function sanitizeErrors<T>(operation: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof DualReadError) throw error;
    throw toQueryFailedError(error, operation, 0);
  }
}

/**
 * An error described for a log line: its SQLSTATE (if any) and its message with class-22
 * values redacted, never the driver's `detail`, `where` or parameters (they can carry row
 * values). @internal
 *
 * @example
 * ```ts
 * debug('shadow read failed: %s', describeError(error));
 * ```
 */
export function describeError(err: unknown): string {
  if (err instanceof DualReadError && !(err instanceof QueryFailedError)) {
    return `${err.name} (${err.code}): ${err.message}`;
  }
  const failed = toQueryFailedError(err, '', 0);
  const cause = failed.cause instanceof Error ? failed.cause : undefined;
  const message = cause?.message ?? failed.message;
  return failed.sqlState ? `SQLSTATE ${failed.sqlState}: ${message}` : message;
}

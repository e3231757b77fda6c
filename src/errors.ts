/**
 * Every error this library throws is a {@link DualReadError} with a literal `code`, so callers
 * branch on `err.code`, never on message text. Messages say what to do next and never contain
 * row values (persons are personal data): at most SQL text and a parameter count.
 */

/**
 * All error codes, one per error class.
 *
 * @example
 * ```ts
 * function isRetryable(code: DualReadErrorCode): boolean {
 *   return code === 'QUERY_FAILED';
 * }
 * ```
 */
export type DualReadErrorCode =
  | 'INVALID_OPTIONS'
  | 'CONFIGURATION'
  | 'PREFLIGHT_FAILED'
  | 'PHASE_TRANSITION'
  | 'NOT_INSTALLED'
  | 'CONTROL_SCHEMA_TOO_NEW'
  | 'QUERY_FAILED'
  | 'CONTROL_STATE'
  | 'BACKFILL_REFUSED'
  | 'BACKFILL_STOPPED'
  | 'BACKFILL_DATA'
  | 'VERIFY_REFUSED'
  | 'UUID_TAKEN'
  | 'UNEXPECTED_RESULT'
  | 'OUTCOME_UNKNOWN'
  | 'PHASE_FENCE_TIMEOUT'
  | 'TRANSITION_REFUSED';

/**
 * Base class of every error thrown by pg-dual-read.
 *
 * @example
 * ```ts
 * try {
 *   await migration.startDualRead();
 * } catch (err) {
 *   if (err instanceof DualReadError && err.code === 'PHASE_TRANSITION') {
 *     console.error(err.message);
 *   }
 * }
 * ```
 */
export abstract class DualReadError extends Error {
  /**
   * Literal code of the error class (`'PHASE_TRANSITION'`, ...): branch on it, not on the message.
   */
  abstract readonly code: DualReadErrorCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * An options object failed validation. `issues` lists each bad option by its path.
 *
 * @example
 * ```ts
 * createPersonsMigration({ name: '' }); // throws InvalidOptionsError: name must ...
 * ```
 */
export class InvalidOptionsError extends DualReadError {
  readonly code = 'INVALID_OPTIONS' as const;
  constructor(
    message: string,
    /** Each bad option or argument, the first one first. */
    readonly issues: readonly {
      /** Dotted path of the option (`workers`, `shadowReads.sampleRate`), never its value. */
      path: string;
      /** What is wrong and what is accepted: `workers must be an integer from 1 to 64`. */
      message: string;
    }[],
  ) {
    super(message);
  }
}

/**
 * The environment is not usable as configured: a driver that turns int8 into lossy numbers,
 * an unsupported database URL, an unreachable server.
 *
 * @example
 * ```ts
 * await openDatabase('mysql://x'); // throws ConfigurationError
 * ```
 */
export class ConfigurationError extends DualReadError {
  readonly code = 'CONFIGURATION' as const;
}

/**
 * One finding of preflight (a problem that makes `prepare()` refuse, or a warning that only
 * needs attention), with the SQL or step that fixes it when there is one.
 *
 * @example
 * ```ts
 * for (const problem of preflightError.problems) console.log(problem.check, problem.fix ?? '');
 * ```
 */
export interface PreflightProblem {
  /** Stable identifier of the check, e.g. `old_table_missing`, `column_missing_in_new`. */
  readonly check: string;
  /** What is wrong, naming tables and columns (never row values). */
  readonly message: string;
  /** What to run or change to fix it. */
  readonly fix?: string;
}

/**
 * `prepare()` found problems and changed nothing. `problems` lists each one with its fix.
 *
 * @example
 * ```ts
 * try { await migration.prepare(); } catch (err) {
 *   if (err instanceof PreflightError) for (const p of err.problems) console.log(p.check, p.fix);
 * }
 * ```
 */
export class PreflightError extends DualReadError {
  readonly code = 'PREFLIGHT_FAILED' as const;
  constructor(
    /** Each reason for the refusal, with its fix. */
    readonly problems: readonly PreflightProblem[],
    /** What needs attention besides (not a reason for the refusal). */
    readonly warnings: readonly PreflightProblem[] = [],
  ) {
    super(
      `prepare() found ${problems.length} problem(s) and changed nothing:\n${problems
        .map((p) => `- [${p.check}] ${p.message}${p.fix ? `\n  fix: ${p.fix}` : ''}`)
        .join('\n')}`,
    );
  }
}

/**
 * A phase change was asked for from a phase that does not allow it. Nothing changed.
 *
 * @example
 * ```ts
 * await migration.startDualRead();
 * await migration.startDualRead(); // throws PhaseTransitionError (already in dual_read)
 * ```
 */
export class PhaseTransitionError extends DualReadError {
  readonly code = 'PHASE_TRANSITION' as const;
  constructor(
    message: string,
    /** The phase the migration is in (nothing changed it). */
    readonly from: string,
    /** The phase that was asked for. */
    readonly to: string,
  ) {
    super(message);
  }
}

/**
 * The control schema is missing, or has no row for this migration: run `install()` then
 * `prepare()`.
 *
 * @example
 * ```ts
 * await migration.status(); // throws NotInstalledError before install()
 * ```
 */
export class NotInstalledError extends DualReadError {
  readonly code = 'NOT_INSTALLED' as const;
}

/**
 * The control schema was migrated by a newer version of pg-dual-read than this one.
 *
 * @example
 * ```ts
 * await migration.install(); // throws ControlSchemaTooNewError when an older library runs
 * ```
 */
export class ControlSchemaTooNewError extends DualReadError {
  readonly code = 'CONTROL_SCHEMA_TOO_NEW' as const;
  constructor(
    /** Version of the control schema in the database. */
    readonly installedVersion: number,
    /** Highest control schema version this library knows. */
    readonly supportedVersion: number,
  ) {
    super(
      `The control schema is at version ${installedVersion} but this pg-dual-read knows ` +
        `versions up to ${supportedVersion}: upgrade pg-dual-read in this service before using it.`,
    );
  }
}

/**
 * A statement failed. The message carries the SQL text, the parameter count and the SQLSTATE,
 * never the parameters; the driver's error is the `cause`.
 *
 * @example
 * ```ts
 * catch (err) { if (err instanceof QueryFailedError) log(err.sqlState, err.sql); }
 * ```
 */
export class QueryFailedError extends DualReadError {
  readonly code = 'QUERY_FAILED' as const;
  constructor(
    message: string,
    /** The statement's SQL text, with `$1` placeholders (the parameters are never kept). */
    readonly sql: string,
    /** How many parameters the statement had. */
    readonly parameterCount: number,
    /** Postgres's SQLSTATE (`40001`, `23505`, ...), undefined when the connection died. */
    readonly sqlState: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The control row is in a state this code cannot act on: an unknown phase written by hand or
 * by a newer version, or a phase that kept changing while a read was retried.
 *
 * @example
 * ```ts
 * catch (err) { if (err instanceof ControlStateError) alert(err.message); }
 * ```
 */
export class ControlStateError extends DualReadError {
  readonly code = 'CONTROL_STATE' as const;
}

/**
 * A backfill cannot start as asked, or a backfill control call (pause, resume, rate, reset)
 * cannot act: the migration is not in `dual_read`, a plan with other options exists, no plan
 * exists yet, workers hold live leases, or the old table lacks the `(team_id, id)` index
 * keyset pagination needs. The message says what to do; the refused call copied and changed
 * nothing. (A backfill that stops after it started copying throws {@link BackfillStoppedError}.)
 *
 * @example
 * ```ts
 * try { await migration.backfill(); } catch (err) {
 *   if (err instanceof BackfillRefusedError) console.error(err.message);
 * }
 * ```
 */
export class BackfillRefusedError extends DualReadError {
  readonly code = 'BACKFILL_REFUSED' as const;
}

/**
 * A running backfill stopped before the end, after copying: the migration left `dual_read`, or
 * its plan was discarded by `resetBackfill()`. Every batch committed before stays (each with
 * its checkpoint); nothing is copied after the cause. The message says how to go on.
 *
 * @example
 * ```ts
 * try { await migration.backfill(); } catch (err) {
 *   if (err instanceof BackfillStoppedError) console.error('resume later:', err.message);
 * }
 * ```
 */
export class BackfillStoppedError extends DualReadError {
  readonly code = 'BACKFILL_STOPPED' as const;
}

/**
 * A backfill batch failed on the data, not on a race: rows of the old table violate a
 * constraint of the new table (a unique key other than the copy's own, a `CHECK` or
 * `NOT NULL`), or a value cannot be stored. The backfill stopped at once (no retries) after
 * its last committed batch; the failing batch copied nothing. The message names the range, the
 * constraint and the statement that lists the offending keys (never their values); fix the rows
 * or the constraint, then call `backfill()` again: the range resumes from its checkpoint.
 *
 * @example
 * ```ts
 * try { await migration.backfill(); } catch (err) {
 *   if (err instanceof BackfillDataError) console.error(err.constraint, err.listing);
 * }
 * ```
 */
export class BackfillDataError extends DualReadError {
  readonly code = 'BACKFILL_DATA' as const;
  constructor(
    message: string,
    /** The backfill range the batch was copying. */
    readonly rangeId: number,
    /** The violated constraint (or, for `NOT NULL`, the column), when Postgres named it. */
    readonly constraint: string | undefined,
    /** Postgres's SQLSTATE of the failure (`23505`, `23514`, `22001`, ...). */
    readonly sqlState: string | undefined,
    /** A statement that lists the keys of the old rows at fault in the range. */
    readonly listing: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A verification cannot run as asked: the migration is not in `dual_read`, a column to
 * compare does not exist in both tables, or a backfill range named in `ranges` does not exist.
 * The message says what to do; nothing was checked or changed by the refused call.
 *
 * @example
 * ```ts
 * try { await migration.verify({ columns: ['properties'] }); } catch (err) {
 *   if (err instanceof VerifyRefusedError) console.error(err.message);
 * }
 * ```
 */
export class VerifyRefusedError extends DualReadError {
  readonly code = 'VERIFY_REFUSED' as const;
}

/**
 * `createPerson()` in `dual_read` was given the uuid of a person of the same team that is still
 * in the old table: `(team_id, uuid)` is unique across both tables during the migration.
 * Nothing was written, and the caller's transaction (inside `inTransaction`) is still usable.
 *
 * @example
 * ```ts
 * try { await persons.createPerson({ teamId, uuid, distinctIds }); } catch (err) {
 *   if (err instanceof UuidTakenError) return persons.fetchPersonByUuid(teamId, uuid);
 * }
 * ```
 */
export class UuidTakenError extends DualReadError {
  readonly code = 'UUID_TAKEN' as const;
}

/**
 * The database answered something this library cannot represent or did not expect: a person
 * version above 2^53, a statement that should return a row and returned none (a control table
 * changed by hand, or a bug: please report it with the message).
 *
 * @example
 * ```ts
 * catch (err) { if (err instanceof UnexpectedResultError) alert(err.message); }
 * ```
 */
export class UnexpectedResultError extends DualReadError {
  readonly code = 'UNEXPECTED_RESULT' as const;
}

/**
 * The connection was lost after `COMMIT` was sent and before its answer came back: the write
 * may have been committed or not. Every other error of a repository write means nothing was
 * written. Re-read the person before acting again: a retried create may find its own person
 * (a conflict on its distinct ids), a retried update may apply twice.
 *
 * @example
 * ```ts
 * try { await repository.updatePerson(1, id, { properties }); } catch (err) {
 *   if (err instanceof OutcomeUnknownError) await reconcile(1, id); // read, then decide
 *   else throw err; // nothing was written: safe to retry
 * }
 * ```
 */
export class OutcomeUnknownError extends DualReadError {
  readonly code = 'OUTCOME_UNKNOWN' as const;
}

/**
 * A write waited `writeFenceTimeoutMs` for the phase fence (the migration's control row) and
 * gave up: a phase change is in progress, or a session holds the control row's lock (a phase
 * change whose client hung, someone in psql). Nothing was written; retry the call.
 *
 * @example
 * ```ts
 * try { await repository.createPerson(input); } catch (err) {
 *   if (err instanceof PhaseFenceTimeoutError) return retryLater(input); // nothing written
 *   throw err;
 * }
 * ```
 */
export class PhaseFenceTimeoutError extends DualReadError {
  readonly code = 'PHASE_FENCE_TIMEOUT' as const;
}

/**
 * One guard of a phase change that is not met, named by a stable `guard` identifier, with what
 * is wrong and what to do. `overridable` guards can be waived with `force: true` (recorded in
 * the phase history with the actor); the others cannot.
 *
 * @example
 * ```ts
 * for (const { guard, message, fix } of refusal.unmet) console.error(`[${guard}] ${message} ${fix}`);
 * ```
 */
export interface UnmetGuard {
  /** Stable identifier of the guard, e.g. `backfill_unfinished`, `verification_unclean`. */
  readonly guard: string;
  /** What is not met, naming tables, counts and times (never row values). */
  readonly message: string;
  /** What to do so that the guard is met. */
  readonly fix: string;
  /** True when `force: true` may waive it (the waiver is recorded in the phase history). */
  readonly overridable: boolean;
}

/**
 * A phase change (`cutover()`, `finalize()`) refused because guards are not met; `unmet`
 * lists every one of them, not the first. Nothing was changed.
 *
 * @example
 * ```ts
 * try { await migration.cutover(); } catch (err) {
 *   if (err instanceof TransitionRefusedError) for (const g of err.unmet) console.error(g.guard, g.fix);
 * }
 * ```
 */
export class TransitionRefusedError extends DualReadError {
  readonly code = 'TRANSITION_REFUSED' as const;
  constructor(
    /** The refused call: `cutover` or `finalize`. */
    readonly transition: string,
    /** Every guard that is not met, not only the first. */
    readonly unmet: readonly UnmetGuard[],
  ) {
    super(
      `${transition}() refused, nothing was changed: ${unmet.length} guard(s) not met:\n${unmet
        .map(
          (g) =>
            `- [${g.guard}] ${g.message}\n  fix: ${g.fix}${g.overridable ? ' (or force: true)' : ''}`,
        )
        .join('\n')}`,
    );
  }
}

import { type RawBuilder, sql } from 'kysely';
import { controlSchemaNotInstalled, isMissingObject } from '../control/control-schema-missing.js';
import type { AnyDb } from '../db/any-db.js';
import { idSequenceOf } from '../db/id-sequence.js';
import { setLocal } from '../db/local-settings.js';
import { isSqlState, sanitizeErrors, toQueryFailedError } from '../db/query-failed.js';
import { tagged } from '../db/statement-tag.js';
import { runTransaction } from '../db/transaction.js';
import { ControlStateError, NotInstalledError, PhaseTransitionError } from '../errors.js';
import {
  isPhase,
  type Phase,
  type PhaseState,
  type TransitionName,
  transitions,
} from '../model/phase.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { type PhaseNotification, phaseChannel } from './phase-channel.js';

/**
 * How long a phase change's transaction may sit idle (its client not sending the next
 * statement) before the server ends it. The library sends its statements back to back, so only
 * a hung client comes near it; the writes it holds up wait at most this plus one statement.
 */
const phaseChangeIdleTimeoutMs = 5_000;

/**
 * One entry of the phase history.
 *
 * @example
 * ```ts
 * for (const change of (await migration.status()).history) console.log(change.to, change.actor);
 * ```
 */
export interface PhaseChange {
  /** The phase before the change. */
  readonly from: string;
  /** The phase after it. */
  readonly to: string;
  /** The epoch the change gave the migration (a decimal string). */
  readonly epoch: string;
  /** When it happened. */
  readonly changedAt: Date;
  /** Who asked (the `actor` option), when given. */
  readonly actor: string | undefined;
  /** Guards waived with `force`. */
  readonly forced: readonly string[];
}

/**
 * What a phase change runs besides moving the phase (see {@link PhaseStore.transition}).
 * @internal
 *
 * @example
 * ```ts
 * await store.transition(db, 'cutover', { actor: 'ops', during: async (trx) => checkGuards(trx) });
 * ```
 */
export interface TransitionSteps {
  /** Who asked for the change, recorded in the phase history. */
  readonly actor?: string;
  /** Guards and DDL inside the phase change's transaction; returns the guards it waived. */
  readonly during?: (
    trx: AnyDb,
    current: PhaseState,
  ) => Promise<{ readonly forced?: readonly string[] } | undefined>;
}

interface ControlRow {
  phase: string;
  epoch: string;
  phase_changed_at: Date;
}

/**
 * The control row of a migration as verification reads it: its phase state and the id
 * high-water mark of `startDualRead()` (rule `id-high-water`; null before `dual_read`, or when
 * an earlier version moved it there). @internal
 *
 * @example
 * ```ts
 * const { state, idHighWater } = await store.readWithHighWater(db);
 * ```
 */
export interface ControlRowWithHighWater {
  readonly state: PhaseState;
  readonly idHighWater: string | null;
}

/**
 * The tables a migration was registered for by `prepare()`. @internal
 *
 * @example
 * ```ts
 * const registered = await store.registration(trx); // undefined before prepare()
 * ```
 */
export interface MigrationRegistration {
  readonly schema: string;
  readonly oldTable: string;
  readonly newTable: string;
  readonly distinctIdsTable: string;
}

/**
 * Reads and changes one migration's control row, which is also the phase fence (rule
 * `phase-fence` in docs/correctness.md): writes read it `FOR KEY SHARE` ({@link fence}), phase
 * changes take it `FOR UPDATE` after the table `EXCLUSIVE` ({@link transition}). The database
 * is passed per call. @internal
 */
export class PhaseStore {
  constructor(private readonly options: ResolvedMigrationOptions) {}

  get table() {
    return sql.id(this.options.controlSchema, 'migration');
  }

  /** Reads the phase without locking. Throws {@link NotInstalledError} when missing. */
  async read(db: AnyDb): Promise<PhaseState> {
    const { rows } = await this.controlQuery(() => this.selectRow(sql``).execute(db));
    return this.toState(rows[0]);
  }

  /**
   * Reads the phase and holds `FOR KEY SHARE` on the control row until the transaction ends,
   * so no phase change can commit while this transaction writes. Call inside a transaction.
   * Waits at most `writeFenceTimeoutMs` for the row (SQLSTATE 55P03 after that), through the
   * control schema's `phase_fence()` (control migration 6).
   */
  async fence(trx: AnyDb): Promise<PhaseState> {
    const { rows } = await this.controlQuery(() =>
      tagged(
        'phase-fence',
        sql<ControlRow>`SELECT phase, epoch, phase_changed_at
          FROM ${sql.id(this.options.controlSchema, 'phase_fence')}(
            ${this.options.name}, ${this.options.writeFenceTimeoutMs}::int)`,
      ).execute(trx),
    );
    return this.toState(rows[0]);
  }

  /** The tables the migration was registered for, or undefined before `prepare()`. */
  async registration(db: AnyDb): Promise<MigrationRegistration | undefined> {
    const { rows } = await sql<{
      schema_name: string;
      old_table: string;
      new_table: string;
      distinct_ids_table: string;
    }>`SELECT schema_name, old_table, new_table, distinct_ids_table
       FROM ${this.table} WHERE name = ${this.options.name}`.execute(db);
    const row = rows[0];
    return row
      ? {
          schema: row.schema_name,
          oldTable: row.old_table,
          newTable: row.new_table,
          distinctIdsTable: row.distinct_ids_table,
        }
      : undefined;
  }

  /** Registers the migration in phase `old` (the column default); true when this call did. */
  async register(db: AnyDb): Promise<boolean> {
    const { options } = this;
    const inserted = await sql`
      INSERT INTO ${this.table} (name, schema_name, old_table, new_table, distinct_ids_table)
      VALUES (${options.name}, ${options.schema}, ${options.oldTable}, ${options.newTable},
        ${options.distinctIdsTable})
      ON CONFLICT (name) DO NOTHING`.execute(db);
    return (inserted.numAffectedRows ?? 0n) > 0n;
  }

  /** Reads the phase and the id high-water mark without locking. */
  async readWithHighWater(db: AnyDb): Promise<ControlRowWithHighWater> {
    const { rows } = await this.controlQuery(() =>
      sql<ControlRow & { high_water: string | null }>`
        SELECT phase, epoch::text AS epoch, phase_changed_at,
          dual_read_id_high_water::text AS high_water
        FROM ${this.table} WHERE name = ${this.options.name}`.execute(db),
    );
    return { state: this.toState(rows[0]), idHighWater: rows[0]?.high_water ?? null };
  }

  /** The phase and the old table's retired name (set by `finalize()`), without locking. */
  async readRetired(db: AnyDb): Promise<{ state: PhaseState; retiredTable: string | undefined }> {
    const { rows } = await this.controlQuery(() =>
      sql<ControlRow & { retired_table: string | null }>`
        SELECT phase, epoch::text AS epoch, phase_changed_at, retired_table
        FROM ${this.table} WHERE name = ${this.options.name}`.execute(db),
    );
    return { state: this.toState(rows[0]), retiredTable: rows[0]?.retired_table ?? undefined };
  }

  /** The latest phase changes, newest first: who moved the migration, when, what was waived. */
  async history(db: AnyDb, limit: number): Promise<PhaseChange[]> {
    const { rows } = await this.controlQuery(() =>
      sql<{
        from_phase: string;
        to_phase: string;
        epoch: string;
        changed_at: Date;
        actor: string | null;
        forced: string[];
      }>`SELECT from_phase, to_phase, epoch::text AS epoch, changed_at, actor, forced
        FROM ${sql.id(this.options.controlSchema, 'phase_change')}
        WHERE migration = ${this.options.name} ORDER BY id DESC LIMIT ${limit}`.execute(db),
    );
    return rows.map((r) => ({
      from: r.from_phase,
      to: r.to_phase,
      epoch: r.epoch,
      changedAt: r.changed_at,
      actor: r.actor ?? undefined,
      forced: r.forced,
    }));
  }

  /**
   * Moves the migration through a named transition, or throws {@link PhaseTransitionError}
   * and changes nothing. Waits (up to `phaseChangeLockTimeoutMs`) for in-flight writes.
   * `steps.during` runs inside the transaction, once the phase is checked and every write of
   * the old phase has finished: a guard that throws refuses the change, DDL rides along (rule
   * `phase-fence`); the guards it reports waived are recorded in the history with `actor`.
   */
  async transition(
    db: AnyDb,
    name: TransitionName,
    steps: TransitionSteps = {},
  ): Promise<PhaseState> {
    const { from, to } = transitions[name];
    try {
      return await this.controlQuery(() => this.transitionInTransaction(db, name, steps));
    } catch (error) {
      if (!isSqlState(error, '55P03')) throw error;
      throw new PhaseTransitionError(
        `${name}() waited phaseChangeLockTimeoutMs (${this.options.phaseChangeLockTimeoutMs} ms) for ` +
          'repository transactions holding the phase fence (or sessions holding the tables) and ' +
          'gave up: nothing was changed. Retry, or raise phaseChangeLockTimeoutMs if long write ' +
          'transactions are expected.',
        from.join('|'),
        to,
      );
    }
  }

  private transitionInTransaction(
    db: AnyDb,
    name: TransitionName,
    steps: TransitionSteps,
  ): Promise<PhaseState> {
    const { from, to } = transitions[name];
    return runTransaction(db, async (trx) => {
      await setLocal(trx, {
        lock_timeout: `${this.options.phaseChangeLockTimeoutMs}ms`,
        // Writes queue behind this transaction from the LOCK below to COMMIT: if its client
        // hangs (a frozen process, a dead operator's laptop), the server ends it after this.
        idle_in_transaction_session_timeout: `${phaseChangeIdleTimeoutMs}ms`,
      });
      // Row locks are not queued fairly: a new FOR KEY SHARE never waits behind a waiting
      // FOR UPDATE, so a steady stream of overlapping writes would starve the phase change
      // (and lock_timeout would restart with each new holder). Every fence also holds ROW
      // SHARE on this table, and table locks queue in order: after this lock, new fences wait
      // behind the phase change, and lock_timeout bounds one wait. Plain reads (ACCESS SHARE,
      // the epoch check) are not blocked.
      await tagged('phase-change', sql`LOCK TABLE ${this.table} IN EXCLUSIVE MODE`).execute(trx);
      const { rows } = await this.selectRow(sql`FOR UPDATE`).execute(trx);
      const current = this.toState(rows[0]);
      if (!(from as readonly Phase[]).includes(current.phase)) {
        throw new PhaseTransitionError(
          `${name}() moves a migration from ${from.join(' or ')} to ${to}, but migration ` +
            `"${this.options.name}" is in phase ${current.phase}: nothing was changed.` +
            transitionHint(current.phase, to),
          current.phase,
          to,
        );
      }
      const outcome = await steps.during?.(trx, current);
      const next = await this.writePhase(trx, to);
      await sql`INSERT INTO ${sql.id(this.options.controlSchema, 'phase_change')}
        (migration, from_phase, to_phase, epoch, actor, forced)
        VALUES (${this.options.name}, ${current.phase}, ${to}, ${next.epoch},
          ${steps.actor ?? null}, ${[...(outcome?.forced ?? [])]}::text[])`.execute(trx);
      const payload: PhaseNotification = {
        controlSchema: this.options.controlSchema,
        name: this.options.name,
        phase: next.phase,
        epoch: next.epoch,
      };
      // Delivered at commit, to every session listening (other service instances).
      await sql`SELECT pg_notify(${phaseChannel}, ${JSON.stringify(payload)})`.execute(trx);
      return next;
    });
  }

  /** The control row's new phase and epoch (and, entering dual_read, the id high-water mark). */
  private async writePhase(trx: AnyDb, to: Phase): Promise<PhaseState> {
    const updated = await sql<ControlRow>`
      UPDATE ${this.table}
      SET phase = ${to}, epoch = epoch + 1, phase_changed_at = clock_timestamp()
      WHERE name = ${this.options.name}
      RETURNING phase, epoch::text AS epoch, phase_changed_at`.execute(trx);
    const next = this.toState(updated.rows[0]);
    if (to === 'dual_read') {
      // Rule `id-high-water`: every id the old table holds was issued by its sequence before
      // this point (writes in phase old hold the fence we now wait out). The sequence however
      // the table got it (a default on a sequence it does not own too). Kept from the first
      // dual_read: a rollback from new does not move it.
      const sequence = await idSequenceOf(trx, this.options.schema, this.options.oldTable, 'id');
      await sql`UPDATE ${this.table}
        SET dual_read_id_high_water = coalesce(dual_read_id_high_water, coalesce(
          pg_sequence_last_value(${sequence ?? null}::regclass), 0))
        WHERE name = ${this.options.name}`.execute(trx);
    }
    return next;
  }

  /**
   * Sanitises driver errors; a missing control schema, table or column means install() never
   * ran (or ran with an older version).
   */
  private async controlQuery<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      if (isMissingObject(error)) {
        throw controlSchemaNotInstalled(
          this.options.controlSchema,
          'prepare() (CLI: pg-dual-read prepare)',
          toQueryFailedError(error, 'control row lookup', 1),
        );
      }
      return sanitizeErrors(`phase control of migration "${this.options.name}"`, () =>
        Promise.reject(error),
      );
    }
  }

  private selectRow(lock: RawBuilder<unknown>): RawBuilder<ControlRow> {
    return sql<ControlRow>`
      SELECT phase, epoch::text AS epoch, phase_changed_at
      FROM ${this.table} WHERE name = ${this.options.name} ${lock}`;
  }

  private toState(row: ControlRow | undefined): PhaseState {
    if (!row) {
      throw new NotInstalledError(
        `Migration "${this.options.name}" is not registered in control schema ` +
          `"${this.options.controlSchema}": run prepare() (CLI: pg-dual-read prepare).`,
      );
    }
    if (!isPhase(row.phase)) {
      throw new ControlStateError(
        `Migration "${this.options.name}" is in a phase this version does not know; upgrade pg-dual-read.`,
      );
    }
    return { phase: row.phase, epoch: String(row.epoch), changedAt: row.phase_changed_at };
  }
}

function transitionHint(current: Phase, wanted: Phase): string {
  if (current === wanted) return ` It is already in ${wanted}.`;
  return '';
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { regclassText } from '../db/identifiers.js';
import { isSqlState, sanitizeErrors, toQueryFailedError } from '../db/query-failed.js';
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

interface ControlRow {
  phase: string;
  epoch: string;
  phase_changed_at: Date;
}

/**
 * Reads and changes one migration's control row.
 *
 * The control row is also the **phase fence**. Every repository write transaction starts with
 * {@link PhaseStore.fence}, which reads the phase under `FOR KEY SHARE`; a phase change takes
 * the table `EXCLUSIVE` (fair queueing, see `transitionInTransaction`) and the row `FOR UPDATE`
 * first, so it waits until every write that routed itself by the old
 * phase has committed, and every write after it sees the new phase. Writes therefore never
 * land in a table that the current phase no longer reads, whatever an instance has cached.
 * @internal
 */
export class PhaseStore {
  constructor(private readonly options: ResolvedMigrationOptions) {}

  get table() {
    return sql.id(this.options.controlSchema, 'migration');
  }

  /** Reads the phase without locking. Throws {@link NotInstalledError} when missing. */
  async read(db: AnyDb): Promise<PhaseState> {
    const { rows } = await this.controlQuery(() => this.selectRow(db, sql``));
    return this.toState(rows[0]);
  }

  /**
   * Reads the phase and holds `FOR KEY SHARE` on the control row until the transaction ends,
   * so no phase change can commit while this transaction writes. Call inside a transaction.
   */
  async fence(trx: AnyDb): Promise<PhaseState> {
    const { rows } = await this.controlQuery(() => this.selectRow(trx, sql`FOR KEY SHARE`));
    return this.toState(rows[0]);
  }

  /**
   * Moves the migration through a named transition, or throws {@link PhaseTransitionError}
   * and changes nothing. Waits (up to `phaseChangeLockTimeoutMs`) for in-flight writes.
   */
  async transition(db: AnyDb, name: TransitionName): Promise<PhaseState> {
    const { from, to } = transitions[name];
    try {
      return await this.controlQuery(() => this.transitionInTransaction(db, name, from, to));
    } catch (error) {
      if (!isSqlState(error, '55P03')) throw error;
      throw new PhaseTransitionError(
        `${name}() waited phaseChangeLockTimeoutMs (${this.options.phaseChangeLockTimeoutMs} ms) for ` +
          'repository transactions holding the phase fence and gave up: nothing was changed. ' +
          'Retry, or raise phaseChangeLockTimeoutMs if long write transactions are expected.',
        from.join('|'),
        to,
      );
    }
  }

  private transitionInTransaction(
    db: AnyDb,
    name: TransitionName,
    from: readonly Phase[],
    to: Phase,
  ): Promise<PhaseState> {
    return db.transaction().execute(async (trx) => {
      await sql`SELECT set_config('lock_timeout', ${`${this.options.phaseChangeLockTimeoutMs}ms`}, true)`.execute(
        trx,
      );
      // Row locks are not queued fairly: a new FOR KEY SHARE never waits behind a waiting
      // FOR UPDATE, so a steady stream of overlapping writes would starve the phase change
      // (and lock_timeout would restart with each new holder). Every fence also holds ROW
      // SHARE on this table, and table locks queue in order: after this lock, new fences wait
      // behind the phase change, and lock_timeout bounds one wait. Plain reads (ACCESS SHARE,
      // the epoch check) are not blocked.
      await sql`LOCK TABLE ${this.table} IN EXCLUSIVE MODE`.execute(trx);
      const { rows } = await this.selectRow(trx, sql`FOR UPDATE`);
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
      const updated = await sql<ControlRow>`
        UPDATE ${this.table}
        SET phase = ${to}, epoch = epoch + 1, phase_changed_at = clock_timestamp()
        WHERE name = ${this.options.name}
        RETURNING phase, epoch::text AS epoch, phase_changed_at`.execute(trx);
      const next = this.toState(updated.rows[0]);
      if (to === 'dual_read') {
        // Every id the old table holds was issued by its sequence before this point (writes
        // in phase old hold the fence we now wait out). Verification uses the mark to tell a
        // person created in dual_read from a deleted one copied back (a resurrection).
        const oldTable = regclassText(this.options.schema, this.options.oldTable);
        await sql`UPDATE ${this.table}
          SET dual_read_id_high_water = coalesce(dual_read_id_high_water, coalesce(
            pg_sequence_last_value(pg_get_serial_sequence(${oldTable}, 'id')::regclass), 0))
          WHERE name = ${this.options.name}`.execute(trx);
      }
      await sql`INSERT INTO ${sql.id(this.options.controlSchema, 'phase_change')}
        (migration, from_phase, to_phase, epoch)
        VALUES (${this.options.name}, ${current.phase}, ${to}, ${next.epoch})`.execute(trx);
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

  /**
   * Sanitises driver errors; a missing control schema or table means install() never ran,
   * and a lock timeout on the control row means writes held the fence too long.
   */
  private async controlQuery<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      if (isSqlState(error, '42P01') || isSqlState(error, '3F000')) {
        throw new NotInstalledError(
          `The control schema "${this.options.controlSchema}" is not installed: run ` +
            'install() then prepare() (CLI: pg-dual-read install, pg-dual-read prepare).',
          { cause: toQueryFailedError(error, 'control row lookup', 1) },
        );
      }
      return sanitizeErrors(`phase control of migration "${this.options.name}"`, () =>
        Promise.reject(error),
      );
    }
  }

  private selectRow(db: AnyDb, lock: ReturnType<typeof sql>) {
    return sql<ControlRow>`
      SELECT phase, epoch::text AS epoch, phase_changed_at
      FROM ${this.table} WHERE name = ${this.options.name} ${lock}`.execute(db);
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

import { z } from 'zod';
import { type InstallResult, installControlSchema } from '../control/install.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { DualReadEmitter } from '../events.js';
import type { PhaseState } from '../phases/phase.js';
import { PhaseStore } from '../phases/phase-store.js';
import { PhaseWatcher } from '../phases/phase-watcher.js';
import { type PrepareResult, prepareMigration } from '../prepare/prepare.js';
import type { PersonsRepository } from '../repository/persons-repository.js';
import { PhaseAwareRepository } from '../repository/phase-aware-repository.js';
import {
  type PersonsMigrationOptions,
  parseOptions,
  type ResolvedMigrationOptions,
  resolveMigrationOptions,
} from './options.js';

const prepareOptionsSchema = z
  .object({
    partitions: z
      .number({ error: 'partitions must be a number' })
      .int({ error: 'partitions must be an integer from 2 to 1024' })
      .min(2, { error: 'partitions must be an integer from 2 to 1024' })
      .max(1024, { error: 'partitions must be an integer from 2 to 1024' })
      .optional(),
  })
  .strict();

/**
 * Options of `migration.prepare()`.
 *
 * @example
 * ```ts
 * await migration.prepare({ partitions: 16 }); // new table hash-partitioned by team_id
 * ```
 */
export type PrepareOptions = z.input<typeof prepareOptionsSchema>;

/**
 * What `migration.status()` reports.
 *
 * @example
 * ```ts
 * const { phase, epoch, phaseChangedAt } = await migration.status();
 * ```
 */
export interface MigrationStatus {
  readonly name: string;
  readonly phase: PhaseState['phase'];
  readonly epoch: string;
  readonly phaseChangedAt: Date;
  readonly oldTable: string;
  readonly newTable: string;
  readonly distinctIdsTable: string;
}

/**
 * One persons migration: its control plane (install, prepare, phase changes, status) and the
 * phase-aware repository that services read and write persons through.
 *
 * @example
 * ```ts
 * const db = await openDatabase(process.env.DATABASE_URL);
 * const migration = createPersonsMigration({ db });
 * await migration.install();
 * await migration.prepare({ partitions: 8 });
 * await migration.startDualRead();
 * const persons = migration.repository();
 * await persons.fetchPerson(1, 'anon-123');
 * await migration.close();
 * ```
 */
export class PersonsMigration {
  /** Typed events: `phase:changed`, `read:phase-retry`, `phase:refresh-failed`. */
  readonly events = new DualReadEmitter();
  /** The validated, frozen options. */
  readonly options: ResolvedMigrationOptions;
  private readonly store: PhaseStore;
  private readonly watcher: PhaseWatcher;
  private sharedRepository: PersonsRepository | undefined;

  /** Use {@link createPersonsMigration}. */
  constructor(options: ResolvedMigrationOptions) {
    this.options = options;
    this.store = new PhaseStore(options);
    this.watcher = new PhaseWatcher(this.handle, this.store, options, this.events);
  }

  private get handle(): DatabaseHandle {
    return this.options.db;
  }

  /**
   * Creates or upgrades the library's control schema (append-only numbered migrations under an
   * advisory lock). Idempotent and safe to call from many processes at once.
   *
   * @example
   * ```ts
   * const { applied } = await migration.install();
   * ```
   */
  install(): Promise<InstallResult> {
    return installControlSchema(this.handle, this.options.controlSchema);
  }

  /**
   * Runs the preflight checks, creates the new table if it is missing (optionally
   * hash-partitioned by `team_id`), makes its ids come from the old table's sequence, and
   * registers the migration in phase `old`. Changes nothing when a check fails
   * ({@link PreflightError} lists each problem with its fix).
   *
   * @example
   * ```ts
   * await migration.prepare({ partitions: 8 });
   * ```
   */
  async prepare(options: PrepareOptions = {}): Promise<PrepareResult> {
    const resolved = parseOptions(prepareOptionsSchema, options, 'prepare()');
    return prepareMigration(this.handle, this.options, { partitions: resolved.partitions });
  }

  /**
   * `old -> dual_read`: from now on reads merge both tables and writes go to the new table.
   * Waits for in-flight repository writes; throws {@link PhaseTransitionError} from any
   * other phase and changes nothing.
   *
   * @example
   * ```ts
   * const { phase, epoch } = await migration.startDualRead();
   * ```
   */
  async startDualRead(): Promise<PhaseState> {
    const state = await this.store.transition(this.handle.db, 'startDualRead');
    this.watcher.observe(state);
    return state;
  }

  /**
   * The phase as stored now (not this instance's cache), with the migration's tables.
   *
   * @example
   * ```ts
   * console.log((await migration.status()).phase);
   * ```
   */
  async status(): Promise<MigrationStatus> {
    const state = await this.store.read(this.handle.db);
    this.watcher.observe(state);
    return {
      name: this.options.name,
      phase: state.phase,
      epoch: state.epoch,
      phaseChangedAt: state.changedAt,
      oldTable: `${this.options.schema}.${this.options.oldTable}`,
      newTable: `${this.options.schema}.${this.options.newTable}`,
      distinctIdsTable: `${this.options.schema}.${this.options.distinctIdsTable}`,
    };
  }

  /**
   * This instance's cached phase (refreshed by LISTEN/NOTIFY and every
   * `phaseRefreshIntervalMs`). For decisions use {@link status}; the repository never relies
   * on the cache for correctness.
   *
   * @example
   * ```ts
   * const { phase } = await migration.currentPhase();
   * ```
   */
  currentPhase(): Promise<PhaseState> {
    return this.watcher.current();
  }

  /**
   * The phase-aware persons repository (one per migration object; cheap to call).
   *
   * @example
   * ```ts
   * const repo = migration.repository();
   * const person = await repo.fetchPerson(1, 'anon-123');
   * ```
   */
  repository(): PersonsRepository {
    this.sharedRepository ??= PhaseAwareRepository.create({
      handle: this.handle,
      options: this.options,
      store: this.store,
      watcher: this.watcher,
      events: this.events,
    });
    return this.sharedRepository;
  }

  /**
   * Stops listening for phase changes and the refresh timer. Does not close the database
   * handle, which the caller owns.
   *
   * @example
   * ```ts
   * await migration.close();
   * await db.close();
   * ```
   */
  close(): Promise<void> {
    return this.watcher.close();
  }
}

/**
 * Describes one persons migration. Validates `options` (throwing an
 * {@link InvalidOptionsError} that names each bad option); touches no database until called.
 *
 * @example
 * ```ts
 * const migration = createPersonsMigration({
 *   db: await openDatabase(process.env.DATABASE_URL),
 *   oldTable: 'posthog_person',
 *   newTable: 'posthog_person_new',
 *   distinctIdsTable: 'posthog_persondistinctid',
 * });
 * ```
 */
export function createPersonsMigration(options: PersonsMigrationOptions): PersonsMigration {
  return new PersonsMigration(resolveMigrationOptions(options));
}

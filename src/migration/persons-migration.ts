import { metrics } from '@opentelemetry/api';
import { BackfillEtaEstimator } from '../backfill/backfill-eta.js';
import { type BackfillStatus, readBackfillStatus } from '../backfill/backfill-status.js';
import { PlanStore } from '../backfill/plan-store.js';
import { type BackfillResult, runBackfill } from '../backfill/run-backfill.js';
import { isMissingObject } from '../control/control-schema-missing.js';
import { type InstallResult, installControlSchema } from '../control/install.js';
import { runtimeGrants } from '../control/runtime-grants.js';
import { runCutover, runRollback } from '../cutover/cutover.js';
import { missingIndexGuard, unmetCutoverGuards } from '../cutover/cutover-guards.js';
import { dropRetiredTable } from '../cutover/drop-retired.js';
import { runFinalize } from '../cutover/finalize.js';
import { runStartDualRead } from '../cutover/start-dual-read.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { sanitizeErrors } from '../db/query-failed.js';
import {
  BackfillRefusedError,
  type PreflightProblem,
  TransitionRefusedError,
  type UnmetGuard,
  VerifyRefusedError,
} from '../errors.js';
import { DualReadEmitter } from '../events.js';
import { MigrationMetrics } from '../metrics/migration-metrics.js';
import type { Phase, PhaseState } from '../model/phase.js';
import { type BackfillOptions, resolveBackfillOptions } from '../options/backfill-options.js';
import { callArguments, checkArgument, toMismatchesOptions } from '../options/call-arguments.js';
import {
  type CutoverOptions,
  type DropRetiredOptions,
  type FinalizeOptions,
  type RollbackOptions,
  resolveCutoverOptions,
  resolveDropRetiredOptions,
  resolveFinalizeOptions,
  resolveRollbackOptions,
} from '../options/cutover-options.js';
import {
  type PersonsMigrationOptions,
  type ResolvedMigrationOptions,
  resolveMigrationOptions,
} from '../options/migration-options.js';
import { type PrepareOptions, resolvePrepareOptions } from '../options/prepare-options.js';
import { resolveVerifyOptions, type VerifyOptions } from '../options/verify-options.js';
import { ClientRegistry, type ClientStatus } from '../phases/client-registry.js';
import { type PhaseChange, PhaseStore } from '../phases/phase-store.js';
import { type PhaseListenerState, PhaseWatcher } from '../phases/phase-watcher.js';
import { type StrayWrite, StrayWrites } from '../phases/stray-writes.js';
import { catalogFindings } from '../prepare/catalog-findings.js';
import { type PrepareResult, prepareMigration } from '../prepare/prepare.js';
import type { PersonsRepository } from '../repository/persons-repository.js';
import { PhaseAwareRepository } from '../repository/phase-aware-repository.js';
import type { ReadStats } from '../repository/read-stats.js';
import { runVerify, type VerificationResult } from '../verify/run-verify.js';
import {
  type MismatchedKey,
  VerificationStore,
  type VerificationSummary,
} from '../verify/verification-store.js';

/**
 * What `migration.status()` reports.
 *
 * @example
 * ```ts
 * const { phase, epoch, phaseChangedAt } = await migration.status();
 * ```
 */
export interface MigrationStatus {
  /** The migration's name (option `name`). */
  readonly name: string;
  /** The phase stored in the control row, read by this call. */
  readonly phase: PhaseState['phase'];
  /** Increases by one on every phase change; a decimal string (int8). */
  readonly epoch: string;
  /** When the phase last changed. */
  readonly phaseChangedAt: Date;
  /** The old table, schema-qualified (`public.posthog_person`). */
  readonly oldTable: string;
  /** The new table, schema-qualified. */
  readonly newTable: string;
  /** The distinct ids table, schema-qualified. */
  readonly distinctIdsTable: string;
  /** The backfill's progress and ETA; undefined before the first `backfill()`. */
  readonly backfill: BackfillStatus | undefined;
  /** The latest verification run; undefined before the first `verify()`. */
  readonly verification: VerificationSummary | undefined;
  /**
   * This process's readiness signal: how many `dual_read` reads of the repository were still
   * answered from the old table, per method (see `repository().readStats()`).
   */
  readonly reads: ReadStats;
  /**
   * What needs attention in the tables' neighbourhood, from the catalog (the findings of
   * `prepare()` except its scan of the data): views and triggers on the old table,
   * publications, foreign keys, indexes, grants or row security the new table lacks...
   */
  readonly warnings: readonly PreflightProblem[];
  /** Indexes of the old table that the new table has no equivalent of (by name, old table's). */
  readonly missingIndexes: readonly string[];
  /**
   * How this instance hears of phase changes: `listening` (LISTEN/NOTIFY), `reconnecting` (its
   * LISTEN connection broke and is being reopened with backoff; events `phase:listen-lost` and
   * `phase:listen-restored`), `polling` (no LISTEN: every `phaseRefreshIntervalMs`), or
   * `not-started` (no read or write through this migration object yet).
   */
  readonly phaseListener: PhaseListenerState;
  /** The old table's name after `finalize()` (until `dropRetiredTable()`), else undefined. */
  readonly retiredTable: string | undefined;
  /** Keys of the old table written by something other than the library since `dual_read` began. */
  readonly strayWrites: {
    /** How many keys (per operation) were written behind the library's back. */
    readonly count: number;
    /** The 20 written last. */
    readonly keys: readonly StrayWrite[];
  };
  /** The latest phase changes, newest first, with who asked and what was waived. */
  readonly history: readonly PhaseChange[];
  /** In `dual_read`: every guard that would refuse `cutover()` now (empty: ready). */
  readonly cutoverGuards: readonly UnmetGuard[];
  /**
   * The live service instances (a heartbeat within three intervals): who runs which library
   * version on which epoch, and the fleet's read counters summed over them (`fallbackRate`:
   * rows answered from the old table / rows returned, in `dual_read`).
   */
  readonly clients: {
    /** Each live instance, with its version, epoch and read counters. */
    readonly live: readonly ClientStatus[];
    /** The read counters of the live instances, summed. */
    readonly fleet: {
      /** Reads answered in `dual_read`. */
      readonly reads: number;
      /** Persons those reads returned. */
      readonly rows: number;
      /** Of those, persons that came from the old table. */
      readonly oldRows: number;
      /** `oldRows / rows` (0 when no row was returned): 0 after the backfill means ready. */
      readonly fallbackRate: number;
    };
  };
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
  /**
   * The validated, frozen options: every field of {@link PersonsMigrationOptions} with its
   * default applied (`migration.options.controlSchema` is `dual_read` unless set).
   */
  readonly options: ResolvedMigrationOptions;
  private readonly store: PhaseStore;
  /** What earlier backfillStatus() calls saw: the ETA settles as a caller polls. */
  private readonly etaEstimator = new BackfillEtaEstimator();
  private readonly plans: PlanStore;
  private readonly verifications: VerificationStore;
  private readonly watcher: PhaseWatcher;
  /** OpenTelemetry instruments fed by `events` (nothing without an SDK). */
  private readonly metrics: MigrationMetrics;
  private sharedRepository: PhaseAwareRepository | undefined;

  /** Use {@link createPersonsMigration}. */
  constructor(options: ResolvedMigrationOptions) {
    this.options = options;
    this.store = new PhaseStore(options);
    this.plans = new PlanStore(options);
    this.verifications = new VerificationStore(options);
    this.watcher = new PhaseWatcher(this.handle, this.store, options, this.events);
    this.metrics = MigrationMetrics.attach(
      options.meterProvider ?? metrics.getMeterProvider(),
      options.name,
      this.events,
    );
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
   * The `GRANT` statements for a least-privilege runtime role (services, backfill workers,
   * verify): it reads and writes persons and the workers' own state, takes the phase fence
   * through the control schema's `phase_fence()`, and can neither change the phase, nor pause,
   * re-rate or reset the backfill, nor run DDL. Run them as the owner of the control schema
   * after `install()` and `prepare()` (CLI: `pg-dual-read grants --role NAME`). Changes nothing.
   *
   * @example
   * ```ts
   * for (const statement of await migration.runtimeGrants('persons_service')) {
   *   await sql.raw(statement).execute(handle.db);
   * }
   * ```
   */
  async runtimeGrants(role: string): Promise<string[]> {
    const name = checkArgument(callArguments.roleName, role, 'role');
    return sanitizeErrors('runtimeGrants()', async () => {
      // After finalize() the new table's name is gone: the old name is the consolidated table.
      const { phase } = await this.store.read(this.handle.db);
      return runtimeGrants(this.handle.db, this.options, name, {
        finalized: phase === 'finalized',
      });
    });
  }

  /**
   * Reads the whole neighbourhood of the old table and tells the truth about it before
   * anything changes: the tables and columns, the sequence behind `id` (however the table got
   * it), the old rows against the keys the new table will enforce, and everything that
   * references or hangs off the old table (foreign keys from any table, views, triggers, rules,
   * publications, inheritance). Then creates the new table if it is missing (optionally
   * hash-partitioned by `team_id`) with every index, grant and row-security policy of the old
   * one, makes its ids come from the old table's sequence, and registers the migration in phase
   * `old`. Changes nothing when a check fails ({@link PreflightError} lists each problem with its
   * fix); `warnings` list what needs attention. `dryRun: true` changes nothing and says what it
   * would do (`ddl`) and every finding.
   *
   * @example
   * ```ts
   * const plan = await migration.prepare({ partitions: 8, dryRun: true });
   * console.log(plan.ddl.join(';\n'), plan.problems, plan.warnings);
   * await migration.prepare({ partitions: 8 });
   * ```
   */
  async prepare(options: PrepareOptions = {}): Promise<PrepareResult> {
    return prepareMigration(this.handle, this.options, resolvePrepareOptions(options));
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
    const state = await runStartDualRead(this.handle, this.options);
    this.watcher.observe(state);
    return state;
  }

  /**
   * `dual_read -> new`: reads and writes use the new table only. Refuses with
   * {@link TransitionRefusedError}, listing every unmet guard and changing nothing, unless the
   * backfill finished, the latest verification is clean, full and newer than the backfill,
   * nothing but the library wrote to the old table since `dual_read` began, and every index of
   * the old table has its equivalent on the new one (or is named in `waiveIndexes`). `force`
   * waives all but the backfill's guard, recorded in the phase history with `actor`.
   *
   * @example
   * ```ts
   * await migration.cutover({ actor: 'ops:alice' });
   * ```
   */
  async cutover(options: CutoverOptions = {}): Promise<PhaseState> {
    const state = await runCutover(this.handle, this.options, resolveCutoverOptions(options));
    this.watcher.observe(state);
    return state;
  }

  /**
   * `new -> dual_read`, without losing a write: what was created, updated, merged or deleted
   * in `new` stays so (deletes in `new` also removed the old row).
   *
   * @example
   * ```ts
   * await migration.rollback({ actor: 'ops:alice' });
   * ```
   */
  async rollback(options: RollbackOptions = {}): Promise<PhaseState> {
    const state = await runRollback(this.handle, this.options, resolveRollbackOptions(options));
    this.watcher.observe(state);
    return state;
  }

  /**
   * `new -> finalized`, the consolidation: the new table takes the old table's name, the old
   * table is kept under a retired name (`retiredTable`) until {@link dropRetiredTable}, the id
   * sequence moves to the consolidated table. One short transaction whose table locks wait at
   * most `lockTimeoutMs`, retried with backoff for up to `timeoutMs`; refuses first, changing
   * nothing, when views, foreign keys, triggers, rules or publications reference the old table
   * (`force` goes ahead, naming each in the phase history).
   *
   * @example
   * ```ts
   * const { retiredTable } = await migration.finalize({ actor: 'ops:alice' });
   * ```
   */
  async finalize(options: FinalizeOptions = {}): Promise<
    PhaseState & {
      /** The old table's new name, unqualified (empty when the migration was finalized already). */
      retiredTable: string;
    }
  > {
    const { state, retiredTable } = await runFinalize(
      this.handle,
      this.options,
      resolveFinalizeOptions(options),
    );
    this.watcher.observe(state);
    return { ...state, retiredTable };
  }

  /**
   * Drops the retired old table after `finalize()`; `confirm` must be its name.
   *
   * @example
   * ```ts
   * await migration.dropRetiredTable({ confirm: 'posthog_person_retired' });
   * ```
   */
  dropRetiredTable(options: DropRetiredOptions): Promise<{
    /** The dropped table, schema-qualified. */
    dropped: string;
  }> {
    const { confirm } = resolveDropRetiredOptions(options);
    return sanitizeErrors('dropRetiredTable()', () =>
      dropRetiredTable(this.handle, this.options, confirm),
    );
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
    const { state, retiredTable } = await this.store.readRetired(this.handle.db);
    this.watcher.observe(state);
    const backfill = await this.backfillStatus();
    const verification = await this.verification();
    // After finalize() the new table is the old table's name: nothing left to compare.
    const { warnings, missingIndexes } =
      state.phase === 'finalized'
        ? { warnings: [], missingIndexes: [] }
        : await sanitizeErrors('status()', () => catalogFindings(this.handle.db, this.options));
    const lifecycle = await sanitizeErrors('status()', () =>
      lifecycleStatus(this.handle.db, this.options, state.phase, missingIndexes),
    );
    return {
      ...lifecycle,
      retiredTable: retiredTable ? `${this.options.schema}.${retiredTable}` : undefined,
      name: this.options.name,
      phase: state.phase,
      epoch: state.epoch,
      phaseChangedAt: state.changedAt,
      oldTable: `${this.options.schema}.${this.options.oldTable}`,
      newTable: `${this.options.schema}.${this.options.newTable}`,
      distinctIdsTable: `${this.options.schema}.${this.options.distinctIdsTable}`,
      backfill,
      verification,
      reads: this.repository().readStats(),
      warnings,
      missingIndexes,
      phaseListener: this.watcher.listenerState(),
    };
  }

  /**
   * Checks that the new table agrees with the old one (the invariant of `dual_read`): every old
   * key has a new row with a version at least the old one's and the same content where the
   * versions are equal, no deleted person is back, and (by default) every distinct id points
   * at an existing person. The check runs in Postgres (one pass per chunk of keys; or, with
   * `method: 'checksum'`, checksums compared and bisected); mismatched keys are stored in the
   * control schema, re-checked once they settle, and named in the result (all of them via
   * {@link mismatches}), never their values. With `repair: true` it copies the missing and
   * stale rows it found, with the backfill's race protocol, and re-checks them.
   *
   * @example
   * ```ts
   * const result = await migration.verify();
   * if (!result.clean) console.error(result.counts, result.keys.slice(0, 10));
   * const repaired = await migration.verify({ repair: true });
   * ```
   */
  async verify(options: VerifyOptions = {}): Promise<VerificationResult> {
    const resolved = resolveVerifyOptions(options);
    return runVerify(this.handle, this.options, resolved, this.events);
  }

  /**
   * A stored verification run (the latest when `id` is omitted), from any process; undefined
   * when there is none.
   *
   * @example
   * ```ts
   * const latest = await migration.verification();
   * console.log(latest?.status, latest?.mismatches);
   * ```
   */
  async verification(id?: string): Promise<VerificationSummary | undefined> {
    if (id !== undefined) checkArgument(callArguments.verificationId, id, 'verificationId');
    return sanitizeErrors('verification()', async () => {
      try {
        return await this.verifications.read(this.handle.db, id);
      } catch (error) {
        // A control schema from before verification existed has no run to show.
        if (isMissingObject(error)) return undefined;
        throw error;
      }
    });
  }

  /**
   * Every mismatched key of a verification run, streamed in key order a page at a time (never
   * all in memory). Repaired keys are included with `repaired: true` when asked.
   *
   * @example
   * ```ts
   * for await (const key of migration.mismatches(result.id)) {
   *   console.log(key.class, key.teamId, key.personId);
   * }
   * ```
   */
  async *mismatches(
    verificationId: string,
    options?: { readonly pageSize?: number; readonly includeRepaired?: boolean },
  ): AsyncGenerator<MismatchedKey> {
    const { pageSize, includeRepaired } = toMismatchesOptions(options);
    checkArgument(callArguments.verificationId, verificationId, 'verificationId');
    const store = this.verifications;
    const db = this.handle.db;
    // An unknown run must not read as an empty (clean-looking) list of keys.
    if (
      (await sanitizeErrors('mismatches()', () => store.read(db, verificationId))) === undefined
    ) {
      throw new VerifyRefusedError(
        `Migration "${this.options.name}" has no verification run ${verificationId}: ` +
          'use the id of a verify() result or of verification().',
      );
    }
    let after: { team: string; id: string; class: string } | undefined;
    for (;;) {
      const page = await sanitizeErrors('mismatches()', () =>
        store.page(db, verificationId, after, pageSize, includeRepaired),
      );
      yield* page;
      const last = page.at(-1);
      if (!last || page.length < pageSize) return;
      after = { team: String(last.teamId), id: last.personId, class: last.class };
    }
  }

  /**
   * Copies every old row the new table lacks, in keyset batches over `(team_id, id)` ranges
   * planned from the real key distribution; each batch and its checkpoint commit together.
   * Resumable (call it again after a crash, from any host), parallel (any number of
   * processes join the same plan through leases), throttled (`maxRowsPerSecond`, batch size
   * adapted to `targetBatchMs`, pause/resume, retries). Runs in `dual_read` only. Resolves
   * when every range is done, or after the current batches when `signal` aborts.
   *
   * @example
   * ```ts
   * migration.events.on('backfill:batch', ({ copied }) => metrics.increment('copied', copied));
   * const result = await migration.backfill({ workers: 4, maxRowsPerSecond: 20_000 });
   * ```
   */
  async backfill(options: BackfillOptions = {}): Promise<BackfillResult> {
    const resolved = resolveBackfillOptions(options);
    // The backfill gauges are read every 5 s while it runs, and once more at its end.
    const gauges = this.metrics.trackBackfill(() => this.backfillStatus());
    try {
      return await runBackfill(this.handle, this.options, resolved, this.events);
    } finally {
      await gauges.end();
    }
  }

  /**
   * Progress and ETA of the backfill as stored in the control schema (any process sees the
   * same), or undefined before the first `backfill()`. The `eta` is made from each range's rows
   * to go and observed rate, as this object saw them over its successive calls: a first call
   * gives a wide, `settling` estimate; polling (every second or few) settles it.
   *
   * @example
   * ```ts
   * const progress = await migration.backfillStatus();
   * const { seconds, lowSeconds, highSeconds, settling } = progress?.eta ?? {};
   * ```
   */
  async backfillStatus(): Promise<BackfillStatus | undefined> {
    return sanitizeErrors('backfill status', () =>
      readBackfillStatus(this.handle.db, this.options, this.etaEstimator),
    );
  }

  /**
   * Pauses the backfill everywhere: every worker, in every process, stops before its next
   * batch (within one batch) and waits, keeping its lease alive.
   *
   * @example
   * ```ts
   * await migration.pauseBackfill();
   * ```
   */
  async pauseBackfill(): Promise<void> {
    await this.setPaused(true);
  }

  /**
   * Resumes a paused backfill.
   *
   * @example
   * ```ts
   * await migration.resumeBackfill();
   * ```
   */
  async resumeBackfill(): Promise<void> {
    await this.setPaused(false);
  }

  /**
   * Changes the rows-per-second ceiling of a planned backfill (`null`: none). Workers of
   * every process read it with their next batch and share it between them.
   *
   * @example
   * ```ts
   * await migration.setBackfillRate(5_000); // the database is busy: slow down
   * ```
   */
  async setBackfillRate(maxRowsPerSecond: number | null): Promise<void> {
    checkArgument(callArguments.maxRowsPerSecond, maxRowsPerSecond, 'maxRowsPerSecond');
    await this.requireBackfillPlan();
    await sanitizeErrors('setBackfillRate()', () =>
      this.plans.setRate(this.handle.db, maxRowsPerSecond),
    );
  }

  /**
   * Discards the backfill plan and its checkpoints (rows already copied stay copied), so the
   * next `backfill()` plans again. Refused while a worker holds a live lease.
   *
   * @example
   * ```ts
   * await migration.resetBackfill();
   * await migration.backfill({ ranges: 64 });
   * ```
   */
  async resetBackfill(): Promise<void> {
    const discarded = await sanitizeErrors('resetBackfill()', () =>
      this.plans.discardUnlessLeased(this.handle.db),
    );
    if (!discarded && (await this.backfillStatus()) !== undefined) {
      throw new BackfillRefusedError(
        'resetBackfill() refused: workers hold live leases on the plan. Stop them (abort their ' +
          'signal) or wait for their leases to expire, then retry.',
      );
    }
  }

  private async setPaused(paused: boolean): Promise<void> {
    await this.requireBackfillPlan();
    await sanitizeErrors('pause/resume of the backfill', () =>
      this.plans.setPaused(this.handle.db, paused),
    );
  }

  private async requireBackfillPlan(): Promise<void> {
    if ((await this.backfillStatus()) === undefined) {
      throw new BackfillRefusedError(
        `Migration "${this.options.name}" has no backfill plan yet: start one with backfill().`,
      );
    }
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
   * Stops listening for phase changes, the refresh timer and the repository's shadow reads
   * (waiting for those in flight, each bounded by its timeout). Does not close the database
   * handle, which the caller owns.
   *
   * @example
   * ```ts
   * await migration.close();
   * await db.close();
   * ```
   */
  async close(): Promise<void> {
    // Pending shadow reads finish (each bounded by its timeout) before the caller closes the db.
    await this.sharedRepository?.close();
    await this.watcher.close();
    this.metrics.close();
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

/** The lifecycle part of `status()`: stray writes, recent history, the cutover's guards now. */
async function lifecycleStatus(
  db: DatabaseHandle['db'],
  options: ResolvedMigrationOptions,
  phase: Phase,
  missingIndexes: readonly string[],
): Promise<Pick<MigrationStatus, 'strayWrites' | 'history' | 'cutoverGuards' | 'clients'>> {
  const strayWrites = await new StrayWrites(options).read(db, 20);
  const history = await new PhaseStore(options).history(db, 10);
  const cutoverGuards =
    phase === 'dual_read'
      ? [...(await unmetCutoverGuards(db, options)), ...missingIndexGuard(missingIndexes, [])]
      : [];
  const live = await new ClientRegistry(options).live(db);
  const sum = (pick: (c: ClientStatus) => number) => live.reduce((n, c) => n + pick(c), 0);
  const rows = sum((c) => c.rows);
  const oldRows = sum((c) => c.oldRows);
  const fleet = {
    reads: sum((c) => c.reads),
    rows,
    oldRows,
    fallbackRate: rows ? oldRows / rows : 0,
  };
  return { strayWrites, history, cutoverGuards, clients: { live, fleet } };
}

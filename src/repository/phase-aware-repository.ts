import type { RawBuilder } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { isSqlState, toQueryFailedError } from '../db/query-failed.js';
import { runTransaction } from '../db/transaction.js';
import {
  ControlStateError,
  DualReadError,
  PhaseFenceTimeoutError,
  UuidTakenError,
} from '../errors.js';
import type { DualReadEmitter } from '../events.js';
import type { Phase, PhaseState } from '../model/phase.js';
import {
  callArguments,
  checkArgument,
  checkFunction,
  toDistinctId,
  toDistinctIdPairs,
  toFetchOptions,
  toIdText,
  toListOptions,
  toPersonIdPairs,
  toTeamId,
  toVersion,
} from '../options/call-arguments.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { checkNewPerson, checkPersonUpdate, type PersonChange } from '../options/person-input.js';
import { loadPersonColumns, type PersonColumns } from '../persons/person-columns.js';
import { type MigrationTables, migrationTables } from '../persons/tables.js';
import type { PhaseStore } from '../phases/phase-store.js';
import type { PhaseWatcher } from '../phases/phase-watcher.js';
import { ClientHeartbeat } from './client-heartbeat.js';
import { epochColumn, foundColumn, fromOldColumn, PersonReads } from './person-reads.js';
import { toPersonRow } from './person-row.js';
import { PersonWrites, personValues } from './person-writes.js';
import type {
  AddDistinctIdResult,
  AssertVersionResult,
  CreatePersonInput,
  CreatePersonResult,
  DistinctIdRow,
  MoveDistinctIdsResult,
  PersonId,
  PersonRow,
  PersonsPage,
  PersonsRepository,
  PersonUpdate,
  PersonWithDistinctId,
  TeamDistinctId,
  TeamPersonId,
} from './persons-repository.js';
import { type ReadStats, type ReadStatsMethod, ReadStatsRecorder } from './read-stats.js';
import { ShadowReads } from './shadow-reads.js';

const maxPhaseRetries = 5;

/** What every repository of one migration shares. @internal */
export interface RepositoryDeps {
  readonly handle: DatabaseHandle;
  readonly options: ResolvedMigrationOptions;
  readonly store: PhaseStore;
  readonly watcher: PhaseWatcher;
  readonly events: DualReadEmitter;
}

/** The readiness counters, shadow reads and client heartbeat the bound repositories share. */

interface Sql {
  readonly tables: MigrationTables;
  readonly columns: PersonColumns;
  readonly reads: PersonReads;
  readonly writes: PersonWrites;
}

/**
 * The reads the readiness signal tracks in `dual_read`, and whether they are shadow-read
 * (point and batch reads by key; a page is not).
 */
const trackedReads: { readonly [M in ReadStatsMethod]: { readonly shadow: boolean } } = {
  fetchPerson: { shadow: true },
  fetchPersonsByDistinctIds: { shadow: true },
  fetchPersonsByPersonIds: { shadow: true },
  fetchPersonByUuid: { shadow: true },
  listPersons: { shadow: false },
};

function isTracked(method: string): method is ReadStatsMethod {
  return Object.hasOwn(trackedReads, method);
}

interface Readiness {
  readonly stats: ReadStatsRecorder;
  readonly shadow: ShadowReads;
  readonly heartbeat: ClientHeartbeat;
}

/** A transaction the repository is bound to, with the phase its fence read. */
interface Bound {
  readonly trx: AnyDb;
  readonly phase: Phase;
}

/** Thrown to roll back a repository-owned `createPerson` whose distinct ids conflicted. */
const conflictRollback = new Error('createPerson: distinct id conflict, rolled back');
const rollBack = (): never => {
  throw conflictRollback;
};

/**
 * The {@link PersonsRepository} whose reads and writes follow the migration's phase.
 *
 * - **Reads outside a transaction** are one statement that also returns the control row's
 *   epoch; when the epoch differs from the cached one (a phase change this instance had not
 *   heard of yet) the cache is refreshed and the read re-run with the right SQL.
 * - **Writes** run in a transaction that first takes the phase fence, so they route by the
 *   phase every reader sees and a phase change waits for them.
 * @internal
 */
export class PhaseAwareRepository implements PersonsRepository {
  constructor(
    private readonly deps: RepositoryDeps,
    private readonly sqlPromise: () => Promise<Sql>,
    private readonly readiness: Readiness,
    private readonly bound?: Bound,
  ) {}

  /** Creates the repository of a migration; column facts are read on first use. */
  static create(deps: RepositoryDeps): PhaseAwareRepository {
    let loading: Promise<Sql> | undefined;
    const load = () => {
      loading ??= loadPersonColumns(deps.handle.db, deps.options).then((columns) => {
        const tables = migrationTables(deps.options);
        return {
          tables,
          columns,
          reads: new PersonReads(tables, columns),
          writes: new PersonWrites(tables, columns),
        };
      });
      loading.catch(() => {
        loading = undefined;
      });
      return loading;
    };
    const stats = new ReadStatsRecorder();
    const shadow = new ShadowReads(deps.options.shadowReads, deps.handle, deps.events, stats);
    const heartbeat = new ClientHeartbeat(deps.handle, deps.options, deps.watcher, () =>
      stats.snapshot(),
    );
    return new PhaseAwareRepository(deps, load, { stats, shadow, heartbeat });
  }

  // ---------------------------------------------------------------- reads

  async fetchPerson(
    teamId: number,
    distinctId: string,
    options?: { forUpdate?: boolean },
  ): Promise<PersonRow | undefined> {
    toTeamId(teamId);
    toDistinctId(distinctId);
    const { forUpdate } = toFetchOptions(options);
    const s = await this.sqlPromise();
    const keys = s.reads.distinctIdKey(teamId, distinctId);
    if (forUpdate) {
      return this.write(async ({ trx, phase }) => {
        await this.exec(trx, () => s.writes.copyOldRows(trx, phase, keys));
        const rows = await this.rows(trx, s.writes.lockForUpdate(phase, keys));
        return rows[0] ? toPersonRow(rows[0]) : undefined;
      });
    }
    const rows = await this.read('fetchPerson', (phase) => s.reads.byKeys(phase, keys));
    return rows[0] ? toPersonRow(rows[0]) : undefined;
  }

  async fetchPersonsByDistinctIds(
    pairs: readonly TeamDistinctId[],
  ): Promise<PersonWithDistinctId[]> {
    const { teamIds, distinctIds } = toDistinctIdPairs(pairs);
    if (teamIds.length === 0) return [];
    const s = await this.sqlPromise();
    const keys = s.reads.distinctIdKeys(teamIds, distinctIds);
    const rows = await this.read('fetchPersonsByDistinctIds', (phase) =>
      s.reads.byKeys(phase, keys, ['distinct_id']),
    );
    return rows.map((row) => toPersonRow(row) as PersonWithDistinctId);
  }

  async fetchPersonsByPersonIds(pairs: readonly TeamPersonId[]): Promise<PersonRow[]> {
    const { teamIds, personIds } = toPersonIdPairs(pairs);
    if (teamIds.length === 0) return [];
    const s = await this.sqlPromise();
    const keys = s.reads.personIdKeys(teamIds, personIds);
    const rows = await this.read('fetchPersonsByPersonIds', (phase) => s.reads.byKeys(phase, keys));
    return rows.map(toPersonRow);
  }

  async fetchPersonByUuid(teamId: number, uuid: string): Promise<PersonRow | undefined> {
    toTeamId(teamId);
    checkArgument(callArguments.uuid, uuid, 'uuid');
    const s = await this.sqlPromise();
    const rows = await this.read('fetchPersonByUuid', (phase) =>
      s.reads.byUuid(phase, teamId, uuid),
    );
    return rows[0] ? toPersonRow(rows[0]) : undefined;
  }

  async fetchDistinctIdsForPersons(pairs: readonly TeamPersonId[]): Promise<DistinctIdRow[]> {
    const { teamIds, personIds } = toPersonIdPairs(pairs);
    if (teamIds.length === 0) return [];
    const s = await this.sqlPromise();
    const rows = await this.rows(
      this.bound?.trx ?? this.deps.handle.db,
      s.reads.distinctIdsOfPersons(teamIds, personIds),
    );
    return rows.map((r) => ({
      teamId: Number(r.team_id),
      personId: String(r.person_id),
      distinctId: String(r.distinct_id),
    }));
  }

  async countPersons(teamId: number): Promise<number> {
    toTeamId(teamId);
    const s = await this.sqlPromise();
    const rows = await this.read('countPersons', (phase) => s.reads.count(phase, teamId));
    return Number(rows[0]?.count ?? 0);
  }

  async listPersons(
    teamId: number,
    options?: { after?: PersonId; limit?: number },
  ): Promise<PersonsPage> {
    toTeamId(teamId);
    const { after, limit } = toListOptions(options);
    const s = await this.sqlPromise();
    const rows = await this.read('listPersons', (phase) =>
      s.reads.page(phase, teamId, after, limit),
    );
    const persons = rows.map(toPersonRow).sort((a, b) => compareIds(a.id, b.id));
    const last = persons.at(-1);
    return { persons, nextCursor: persons.length === limit && last ? last.id : undefined };
  }

  // ---------------------------------------------------------------- writes

  createPerson(input: CreatePersonInput): Promise<CreatePersonResult> {
    return this.timed('createPerson', () => this.runCreatePerson(input));
  }

  private async runCreatePerson(input: CreatePersonInput): Promise<CreatePersonResult> {
    const person = checkNewPerson(input);
    const { teamId, distinctIds, versions, uuid } = person;
    const s = await this.sqlPromise();
    const values = personValues(person, s.columns);
    const insert = async ({ trx, phase }: Bound) => {
      if (phase === 'dual_read' && uuid !== undefined) {
        const taken = await this.rows(trx, s.writes.uuidInOldTable(teamId, uuid));
        if (taken.length > 0) {
          throw new UuidTakenError(
            'createPerson(): a person of this team in the old table already has this uuid; ' +
              '(team_id, uuid) is unique across both tables during the migration. Nothing was written.',
          );
        }
      }
      const rows = await this.rows(
        trx,
        s.writes.createPerson(phase, values, teamId, distinctIds, versions),
      );
      const created = rows[0];
      if (!created || Number(created.inserted_count) !== distinctIds.length) return undefined;
      const { inserted_count: _, ...row } = created;
      return { status: 'created', person: toPersonRow(row), distinctIds } as const;
    };
    const conflict = async (trx: AnyDb): Promise<CreatePersonResult> => {
      const taken = await this.rows(trx, s.writes.takenDistinctIds(teamId, distinctIds));
      return { status: 'conflict', distinctIds: taken.map((r) => String(r.distinct_id)) };
    };
    if (!this.bound) {
      // Its own transaction: a conflict rolls all of it back (no savepoint round trips).
      try {
        return await this.write(async (bound) => (await insert(bound)) ?? rollBack());
      } catch (error) {
        if (error !== conflictRollback) throw error;
        return conflict(this.deps.handle.db);
      }
    }
    // In the caller's transaction, a savepoint undoes the person row without ending it.
    return this.write(async (bound) => {
      const { trx } = bound;
      await this.exec(trx, () => s.writes.savepoint().execute(trx));
      const created = await insert(bound);
      if (created) {
        await this.exec(trx, () => s.writes.releaseSavepoint().execute(trx));
        return created;
      }
      await this.exec(trx, () => s.writes.rollbackToSavepoint().execute(trx));
      return conflict(trx);
    });
  }

  updatePerson(
    teamId: number,
    personId: PersonId,
    update: PersonUpdate,
  ): Promise<PersonRow | undefined> {
    return this.timed('updatePerson', () =>
      this.update(teamId, personId, checkPersonUpdate(update), undefined),
    );
  }

  updatePersonAssertVersion(
    teamId: number,
    personId: PersonId,
    expectedVersion: number,
    update: PersonUpdate,
  ): Promise<AssertVersionResult> {
    return this.timed('updatePersonAssertVersion', async () => {
      checkArgument(callArguments.expectedVersion, expectedVersion, 'expectedVersion');
      const change = checkPersonUpdate(update);
      const person = await this.update(teamId, personId, change, expectedVersion);
      return person ? { status: 'updated', person } : { status: 'no_match' };
    });
  }

  deletePerson(teamId: number, personId: PersonId): Promise<boolean> {
    return this.timed('deletePerson', async () => {
      toTeamId(teamId);
      const id = toIdText(personId, 'personId');
      const s = await this.sqlPromise();
      return this.write(({ trx, phase }) =>
        this.exec(trx, () => s.writes.deletePerson(trx, phase, teamId, id)),
      );
    });
  }

  addDistinctId(
    teamId: number,
    personId: PersonId,
    distinctId: string,
    version = 0,
  ): Promise<AddDistinctIdResult> {
    return this.timed('addDistinctId', () =>
      this.runAddDistinctId(teamId, personId, distinctId, version),
    );
  }

  private async runAddDistinctId(
    teamId: number,
    personId: PersonId,
    distinctId: string,
    version: number,
  ): Promise<AddDistinctIdResult> {
    toTeamId(teamId);
    const id = toIdText(personId, 'personId');
    toDistinctId(distinctId);
    toVersion(version, 'version');
    const [row] = await this.writePerson(
      teamId,
      id,
      (s, phase) => s.writes.addDistinctId(phase, teamId, id, distinctId, version),
      (rows) => Number(rows[0]?.persons ?? 0) > 0,
    );
    if (!row || Number(row.persons) === 0) return { status: 'person_not_found' };
    return Number(row.inserted) > 0 ? { status: 'added' } : { status: 'conflict' };
  }

  moveDistinctIds(
    teamId: number,
    sourcePersonId: PersonId,
    targetPersonId: PersonId,
  ): Promise<MoveDistinctIdsResult> {
    return this.timed('moveDistinctIds', () =>
      this.runMoveDistinctIds(teamId, sourcePersonId, targetPersonId),
    );
  }

  private async runMoveDistinctIds(
    teamId: number,
    sourcePersonId: PersonId,
    targetPersonId: PersonId,
  ): Promise<MoveDistinctIdsResult> {
    toTeamId(teamId);
    const source = toIdText(sourcePersonId, 'sourcePersonId');
    const target = toIdText(targetPersonId, 'targetPersonId');
    // The target is copied (and held FOR KEY SHARE); the source may stay wherever it is.
    const [row] = await this.writePerson(
      teamId,
      target,
      (s, phase) => s.writes.moveDistinctIds(phase, teamId, source, target),
      (rows) => Number(rows[0]?.targets ?? 0) > 0,
    );
    if (!row || Number(row.targets) === 0) return { status: 'target_not_found' };
    return { status: 'moved', distinctIds: (row.moved as unknown[]).map(String) };
  }

  async inTransaction<T>(fn: (repository: PersonsRepository) => Promise<T>): Promise<T> {
    checkFunction(fn, 'fn');
    return this.write(async (bound) => fn(this.bound ? this : this.bindTo(bound)));
  }

  // ---------------------------------------------------------------- readiness

  readStats(): ReadStats {
    return this.readiness.stats.snapshot();
  }

  resetReadStats(): void {
    this.readiness.stats.reset();
  }

  /**
   * Stops shadow reads: no new one is sampled, and those still running (each bounded by
   * `shadowReads.timeoutMs`) finish without events. Resolves when they have; reads and writes
   * keep working. Call it before closing the database handle. @internal
   */
  async close(): Promise<void> {
    // Shadow reads stop being sampled at once; the registry row goes while they finish.
    const shadows = this.readiness.shadow.close();
    await this.readiness.heartbeat.stop();
    await shadows;
  }

  // ---------------------------------------------------------------- plumbing

  /**
   * Runs one public write call and emits `write:done` with its duration and whether it
   * returned: two clock reads and one event per call.
   */
  private async timed<T>(method: string, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let ok = false;
    try {
      const result = await run();
      ok = true;
      return result;
    } finally {
      this.deps.events.emit('write:done', { method, ms: performance.now() - started, ok });
    }
  }

  private async update(
    teamId: number,
    personId: PersonId,
    change: PersonChange,
    expectedVersion: number | undefined,
  ): Promise<PersonRow | undefined> {
    toTeamId(teamId);
    const id = toIdText(personId, 'personId');
    const [row] = await this.writePerson(
      teamId,
      id,
      (s, phase) => s.writes.updatePerson(phase, teamId, id, change, expectedVersion),
      (rows) => rows.length > 0,
    );
    return row ? toPersonRow(row) : undefined;
  }

  /**
   * One write aimed at one person: `statement` runs on the table the phase writes. In
   * `dual_read`, when it did not find the person there (`found` says so from its rows), the
   * person is copied from the old table (copy-on-write) and the statement runs again. Once the
   * backfill copied a person, its writes skip the copy's round trip; the first write of a
   * person not copied yet pays one statement that finds nothing. The statements change nothing
   * when they do not find the person, so running one twice is safe.
   */
  private async writePerson(
    teamId: number,
    personId: string,
    statement: (s: Sql, phase: Phase) => RawBuilder<unknown>,
    found: (rows: Record<string, unknown>[]) => boolean,
  ): Promise<Record<string, unknown>[]> {
    const s = await this.sqlPromise();
    return this.write(async ({ trx, phase }) => {
      const rows = await this.rows(trx, statement(s, phase));
      if (phase !== 'dual_read' || found(rows)) return rows;
      await this.exec(trx, () =>
        s.writes.copyOldRows(trx, phase, s.reads.personIdKeys([teamId], [personId])),
      );
      return this.rows(trx, statement(s, phase));
    });
  }

  private bindTo(bound: Bound): PhaseAwareRepository {
    return new PhaseAwareRepository(this.deps, this.sqlPromise, this.readiness, bound);
  }

  /**
   * Runs `fn` in the bound transaction, or in a new one that starts with the phase fence. A
   * write that throws wrote nothing, except with `OutcomeUnknownError` (see
   * `runTransaction`).
   */
  private async write<T>(fn: (bound: Bound) => Promise<T>): Promise<T> {
    if (this.bound) return fn(this.bound);
    this.readiness.heartbeat.start();
    // Column facts are read through the handle, outside the transaction: on PGlite's single
    // session a query outside an open transaction would wait for it forever.
    await this.sqlPromise();
    const fromCaller = new WeakSet<object>();
    try {
      return await runTransaction(this.deps.handle.db, async (trx) => {
        const state = await this.fence(trx);
        this.deps.watcher.observe(state);
        try {
          return await fn({ trx, phase: state.phase });
        } catch (error) {
          if (typeof error === 'object' && error !== null) fromCaller.add(error);
          throw error;
        }
      });
    } catch (error) {
      // BEGIN fails too (no connection): sanitise it like any statement, but leave the
      // caller's errors and the transaction's own (COMMIT, outcome unknown) alone.
      if (error instanceof DualReadError) throw error;
      if (typeof error === 'object' && error !== null && fromCaller.has(error)) throw error;
      throw toQueryFailedError(error, 'BEGIN of a repository transaction', 0);
    }
  }

  /** The phase fence, bounded by `writeFenceTimeoutMs`. */
  private async fence(trx: AnyDb): Promise<PhaseState> {
    try {
      return await this.exec(trx, () => this.deps.store.fence(trx));
    } catch (error) {
      if (!isSqlState(error, '55P03')) throw error;
      throw new PhaseFenceTimeoutError(
        `A write waited writeFenceTimeoutMs (${this.deps.options.writeFenceTimeoutMs} ms) for ` +
          `the phase fence of migration "${this.deps.options.name}" and gave up: a phase change ` +
          'is in progress, or a session holds the control row lock. Nothing was written; retry.',
        { cause: error },
      );
    }
  }

  /**
   * One read statement. Outside a transaction the statement also returns the control row's
   * epoch (same snapshot as the rows), and is re-run if the cached phase was stale.
   */
  private async read(
    method: string,
    build: (phase: Phase) => RawBuilder<unknown>,
  ): Promise<Record<string, unknown>[]> {
    if (this.bound) {
      const { phase } = this.bound;
      const raw = await this.rows(this.bound.trx, build(phase));
      // Only dual_read statements carry the marker column.
      if (phase !== 'dual_read') {
        this.answered(method, phase, raw, 0, undefined);
        return raw;
      }
      let fromOld = 0;
      const rows = raw.map(({ [fromOldColumn]: old, ...row }) => {
        if (old === true) fromOld++;
        return row;
      });
      // No shadow read inside a transaction: it would not see the transaction's own writes.
      this.answered(method, phase, rows, fromOld, undefined);
      return rows;
    }
    const s = await this.sqlPromise();
    this.readiness.heartbeat.start();
    let state: PhaseState = await this.deps.watcher.current();
    for (let attempt = 0; ; attempt++) {
      const rows = await this.rows(
        this.deps.handle.db,
        s.reads.withEpoch(build(state.phase)),
      ).catch(async (error: unknown) => {
        // A table this instance still reads under its `new` name was renamed by finalize()
        // (the statement fails before it can carry the epoch): re-read the phase and retry.
        if (!isSqlState(error, '42P01') || attempt >= maxPhaseRetries) throw error;
        const seen = await this.deps.watcher.refresh();
        if (seen.epoch === state.epoch) throw error;
        return [];
      });
      if (rows[0]?.[epochColumn] === state.epoch) {
        let fromOld = 0;
        const answer = rows
          .filter((row) => row[foundColumn] === true)
          .map(({ [epochColumn]: _e, [foundColumn]: _f, [fromOldColumn]: old, ...row }) => {
            if (old === true) fromOld++;
            return row;
          });
        this.answered(method, state.phase, answer, fromOld, s);
        return answer;
      }
      if (attempt >= maxPhaseRetries) {
        throw new ControlStateError(
          `${method}: the phase changed ${maxPhaseRetries} times during one read; retry the call.`,
        );
      }
      const previous = state;
      state = await this.deps.watcher.refresh();
      this.deps.events.emit('read:phase-retry', { method, from: previous.phase, to: state.phase });
    }
  }

  /**
   * Bookkeeping of an answered read (the marker column already stripped): emits `read:done`
   * with the persons per source; in `dual_read`, counts it, emits `read:fallback` when old
   * rows were returned, and offers it to the shadow reads. Never throws into the read.
   */
  private answered(
    method: string,
    phase: Phase,
    rows: readonly Record<string, unknown>[],
    fromOld: number,
    s: Sql | undefined,
  ): void {
    if (!isTracked(method)) return;
    // Outside dual_read a read has one table: old in `old`, the new one after the cutover.
    const old = phase === 'dual_read' ? fromOld : phase === 'old' ? rows.length : 0;
    this.deps.events.emit('read:done', {
      method,
      phase,
      fromNew: rows.length - old,
      fromOld: old,
    });
    if (phase !== 'dual_read') return;
    this.readiness.stats.recordRead(method, rows.length, fromOld);
    if (fromOld > 0) {
      this.deps.events.emit('read:fallback', { method, rows: fromOld, total: rows.length });
    }
    if (s && trackedReads[method].shadow) this.readiness.shadow.offer(method, rows, s);
  }

  private async rows(db: AnyDb, query: RawBuilder<unknown>): Promise<Record<string, unknown>[]> {
    const result = await this.exec(db, () => query.execute(db), query);
    return result.rows as Record<string, unknown>[];
  }

  /** Runs a database call, turning driver errors into errors without row values. */
  private async exec<T>(db: AnyDb, run: () => Promise<T>, query?: RawBuilder<unknown>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof DualReadError) throw error;
      const compiled = query?.compile(db);
      throw toQueryFailedError(
        error,
        compiled?.sql ?? '(repository statement)',
        compiled?.parameters.length ?? 0,
      );
    }
  }
}

function compareIds(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

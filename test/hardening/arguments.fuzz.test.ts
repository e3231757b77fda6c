import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  ConfigurationError,
  createPersonsMigration,
  DualReadError,
  InvalidOptionsError,
  openDatabase,
  type PersonsMigration,
  type PersonsRepository,
} from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';
import {
  everythingIn,
  type OfflineMigration,
  offlineMigration,
  personsSnapshot,
} from './argument-support.js';
import {
  arrayArg,
  badValue,
  hostileNumber,
  hostileString,
  marker,
  maybe,
  objectArg,
} from './bad-values.js';

// Fixed seed and run counts: the same inputs on every run (issue 13, "fixed run counts in CI").
const seed = 1_306;
const runsOn = { pglite: 120, postgres: 25 } as const;
const hangMs = 10_000;

/** What one call did: resolved, or rejected with `error`. */
type Outcome = { ok: true } | { ok: false; error: unknown };

async function settle(run: () => unknown): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the call hung for ${hangMs} ms`)), hangMs);
  });
  try {
    await Promise.race([Promise.resolve().then(run), hang]);
    return { ok: true };
  } catch (error) {
    if (error instanceof Error && error.message.startsWith('the call hung')) throw error;
    return { ok: false, error };
  } finally {
    clearTimeout(timer);
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

/** One method under test: how to call it on a target with generated arguments. */
interface Spec<T> {
  readonly name: string;
  readonly args: fc.Arbitrary<unknown[]>;
  call(target: T, args: unknown[]): unknown;
  /** A typed refusal besides InvalidOptionsError that needs no database (a bad URL). */
  readonly refusal?: typeof DualReadError;
}

/** The database a spec runs against and how to see whether it changed. */
interface Targets<T> {
  readonly live: T;
  readonly offline: T;
  readonly offlineAttempts: () => number;
  snapshot(): Promise<unknown>;
  /** The live call's InvalidOptionsError must match the offline one (no check needs the db). */
  readonly strict: boolean;
}

/**
 * The property every call must have: on a database that fails every statement, a refusal is
 * an InvalidOptionsError thrown before any statement, never echoing a value, and anything else
 * comes from the database; on the real database the call succeeds or throws a DualReadError
 * (never a raw TypeError, never a hang), and a call that threw changed nothing.
 */
interface FuzzState {
  snapshot: unknown;
  refused: number;
}

function checkCall<T>(spec: Spec<T>, targets: Targets<T>, state: FuzzState) {
  return async (generated: unknown[]) => {
    const attemptsBefore = targets.offlineAttempts();
    const dry = await settle(() => spec.call(targets.offline, generated));
    const attempted = targets.offlineAttempts() > attemptsBefore;
    const refusedDry = !dry.ok && dry.error instanceof InvalidOptionsError;
    if (!dry.ok) {
      if (refusedDry || (spec.refusal && dry.error instanceof spec.refusal)) {
        expect(attempted, `${spec.name}: refused after a statement`).toBe(false);
        expect(everythingIn(dry.error)).not.toContain(marker);
      } else {
        // Anything but a refusal must be the database's failure, not a crash of the checks.
        expect(attempted, `${spec.name}: ${describeError(dry.error)}`).toBe(true);
      }
    }
    const live = await settle(() => spec.call(targets.live, generated));
    if (live.ok) {
      expect(refusedDry, `${spec.name}: refused offline, accepted live`).toBe(false);
      state.snapshot = await targets.snapshot();
      return;
    }
    expect(live.error, `${spec.name}: ${describeError(live.error)}`).toBeInstanceOf(DualReadError);
    const refusedLive = live.error instanceof InvalidOptionsError;
    if (refusedLive || (spec.refusal && live.error instanceof spec.refusal)) state.refused++;
    if (targets.strict || refusedDry) {
      expect(refusedLive, `${spec.name}: ${describeError(live.error)}`).toBe(refusedDry);
    }
    expect(await targets.snapshot(), `${spec.name}: a refused call changed the database`).toEqual(
      state.snapshot,
    );
  };
}

async function fuzz<T>(spec: Spec<T>, targets: Targets<T>, numRuns: number): Promise<void> {
  const state: FuzzState = { snapshot: await targets.snapshot(), refused: 0 };
  const check = checkCall(spec, targets, state);
  await fc.assert(fc.asyncProperty(spec.args, check), { seed, numRuns, endOnFailure: true });
  // Mostly hostile input: a run that refused little generated little worth refusing.
  expect(state.refused, `${spec.name}: refusals`).toBeGreaterThan(numRuns / 3);
}

/** Arguments of every repository method: each valid now and then, mostly hostile. */
function repositorySpecs(ids: readonly string[]): Spec<PersonsRepository>[] {
  const teamId = maybe(1);
  const personId = maybe(ids[0] ?? '1');
  const absentId = maybe('424242');
  const distinctId = maybe('seed-2', fc.oneof(hostileString, badValue));
  const json = maybe({ plan: 'paid' }, fc.oneof(badValue, objectArg({ k: badValue })));
  const update = objectArg({
    properties: json,
    unsetProperties: maybe(['email'], arrayArg(hostileString)),
    propertiesLastUpdatedAt: json,
    propertiesLastOperation: json,
    isIdentified: maybe(true),
  });
  const distinctPair = objectArg({ teamId, distinctId });
  const personPair = objectArg({ teamId, personId });
  const newPerson = objectArg({
    teamId,
    distinctIds: maybe(
      ['fuzz-new'],
      arrayArg(fc.oneof(hostileString, objectArg({ distinctId, version: maybe(1) }))),
    ),
    uuid: maybe('3f2a9c1e-8d4b-4e6f-9a1b-2c3d4e5f6a7b'),
    properties: json,
    propertiesLastUpdatedAt: json,
    propertiesLastOperation: json,
    createdAt: maybe(new Date('2024-01-01T00:00:00Z')),
    isIdentified: maybe(false),
    isUserId: maybe(null),
    version: maybe(0),
  });
  const method = (name: keyof PersonsRepository) => (repo: PersonsRepository, args: unknown[]) =>
    Reflect.apply(repo[name] as (...a: unknown[]) => unknown, repo, args);
  const spec = (
    name: keyof PersonsRepository,
    ...args: fc.Arbitrary<unknown>[]
  ): Spec<PersonsRepository> => ({ name, args: fc.tuple(...args), call: method(name) });
  return [
    spec('fetchPerson', teamId, distinctId, objectArg({ forUpdate: maybe(true) })),
    spec('fetchPersonsByDistinctIds', arrayArg(distinctPair)),
    spec('fetchPersonsByPersonIds', arrayArg(personPair)),
    spec('fetchPersonByUuid', teamId, maybe('3f2a9c1e-8d4b-4e6f-9a1b-2c3d4e5f6a7b')),
    spec('fetchDistinctIdsForPersons', arrayArg(personPair)),
    spec('countPersons', teamId),
    spec('listPersons', teamId, objectArg({ after: personId, limit: maybe(2) })),
    spec('createPerson', newPerson),
    spec('updatePerson', teamId, personId, update),
    spec('updatePersonAssertVersion', teamId, personId, maybe(0, hostileNumber), update),
    spec('deletePerson', teamId, absentId),
    spec('addDistinctId', teamId, personId, distinctId, maybe(0)),
    spec('moveDistinctIds', teamId, absentId, personId),
    spec(
      'inTransaction',
      maybe((tx: PersonsRepository) => tx.countPersons(1)),
    ),
  ];
}

const repositoryMethods = repositorySpecs([]).map((spec) => spec.name);

/** Arguments of the facade's calls that take any. */
function facadeSpecs(): Spec<PersonsMigration>[] {
  const runId = maybe('999999', fc.oneof(hostileString, badValue));
  const integer = (valid: number) => maybe(valid, fc.oneof(hostileNumber, badValue));
  const backfillOptions = objectArg({
    workers: integer(1),
    batchSize: integer(100),
    maxBatchSize: integer(1_000),
    targetBatchMs: integer(100),
    maxRowsPerSecond: integer(1_000),
    ranges: integer(2),
    leaseMs: integer(10_000),
    batchLockTimeoutMs: integer(200),
    maxRetries: integer(1),
    retryBaseMs: integer(10),
    maxReplicationLagMs: integer(1_000),
    lockMode: maybe('rows', fc.oneof(hostileString, badValue)),
    workerId: maybe('fuzz-worker', fc.oneof(hostileString, badValue)),
    signal: maybe(new AbortController().signal),
  });
  const verifyOptions = objectArg({
    method: maybe('checksum', fc.oneof(hostileString, badValue)),
    columns: maybe(['properties'], arrayArg(hostileString)),
    ranges: maybe([1], arrayArg(hostileNumber)),
    chunkRows: integer(1_000),
    distinctIds: maybe(false),
    repair: maybe(false),
    settleMs: integer(0),
    recheckAttempts: integer(0),
    maxKeys: integer(10),
    leafRows: integer(10),
    fanout: integer(4),
    signal: maybe(new AbortController().signal),
  });
  return [
    {
      name: 'verification',
      args: fc.tuple(runId),
      call: (m, [id]) => m.verification(id as string),
    },
    {
      name: 'mismatches',
      args: fc.tuple(runId, objectArg({ pageSize: integer(10), includeRepaired: maybe(true) })),
      call: (m, [id, options]) => m.mismatches(id as string, options as never).next(),
    },
    {
      name: 'setBackfillRate',
      args: fc.tuple(maybe(null, fc.oneof(hostileNumber, badValue))),
      call: (m, [rate]) => m.setBackfillRate(rate as number),
    },
    { name: 'backfill', args: fc.tuple(backfillOptions), call: (m, [o]) => m.backfill(o as never) },
    { name: 'verify', args: fc.tuple(verifyOptions), call: (m, [o]) => m.verify(o as never) },
  ];
}

/** createPersonsMigration's options (besides a real `db`). */
const migrationOptions = objectArg({
  db: maybe('handle'),
  name: maybe('persons', fc.oneof(hostileString, badValue)),
  schema: maybe('public', fc.oneof(hostileString, badValue)),
  controlSchema: maybe('dual_read', fc.oneof(hostileString, badValue)),
  oldTable: maybe('posthog_person', fc.oneof(hostileString, badValue)),
  newTable: maybe('posthog_person_new', fc.oneof(hostileString, badValue)),
  distinctIdsTable: maybe('posthog_persondistinctid', fc.oneof(hostileString, badValue)),
  phaseRefreshIntervalMs: maybe(600_000, fc.oneof(hostileNumber, badValue)),
  phaseChangeLockTimeoutMs: maybe(1_000, fc.oneof(hostileNumber, badValue)),
  shadowReads: maybe({ sampleRate: 0.5 }, objectArg({ sampleRate: badValue, timeoutMs: badValue })),
});

const openOptions = objectArg({
  maxConnections: maybe(2, fc.oneof(hostileNumber, badValue)),
  connectTimeoutMs: maybe(1_000, fc.oneof(hostileNumber, badValue)),
  preparedStatements: maybe(false),
});

/** createPersonsMigration({ db: 'handle' }) gets the target's handle. */
function withHandle(options: unknown, db: DatabaseHandle): unknown {
  const o = options as { db?: unknown } | null;
  return typeof o === 'object' && o !== null && o.db === 'handle' ? { ...o, db } : options;
}

/** The entry points that take options before any database work. */
const entrySpecs: Spec<DatabaseHandle>[] = [
  {
    name: 'createPersonsMigration',
    args: fc.tuple(migrationOptions),
    call: (h, [o]) => createPersonsMigration(withHandle(o, h) as never),
  },
  {
    name: 'openDatabase',
    args: fc.tuple(openOptions),
    call: async (h, [o]) => (await openDatabase(h.db, o as never)).close(),
  },
  {
    name: 'openDatabase(source)',
    args: fc.tuple(fc.oneof(hostileString, badValue).filter((s) => s !== undefined)),
    call: async (_h, [source]) => (await openDatabase(source as never)).close(),
    refusal: ConfigurationError,
  },
];

describe.each(availableBackends())('hostile arguments on %s', (backend) => {
  const numRuns = runsOn[backend];
  let handle: DatabaseHandle;
  let dualRead: MigrationFixture;
  let oldPhase: MigrationFixture;
  let offline: OfflineMigration;

  beforeAll(async () => {
    handle = await openBackend(backend);
    dualRead = await createMigrationFixture(handle, {
      seed: 5,
      dualRead: true,
      phaseRefreshIntervalMs: 600_000,
    });
    // backfill() and verify() with valid options refuse in phase old: nothing may change.
    oldPhase = await createMigrationFixture(handle, { seed: 5, phaseRefreshIntervalMs: 600_000 });
    offline = offlineMigration();
  });
  afterAll(async () => {
    await offline?.migration.close();
    await dualRead?.drop();
    await oldPhase?.drop();
    await handle?.close();
  });

  it.each(repositoryMethods)(
    'repository.%s refuses bad arguments with a typed error before any statement, changing nothing',
    async (name) => {
      const spec = repositorySpecs(dualRead.seededIds).find((s) => s.name === name);
      if (!spec) throw new Error(`no spec ${name}`);
      await fuzz(
        spec,
        {
          live: dualRead.migration.repository(),
          offline: offline.migration.repository(),
          offlineAttempts: offline.attempts,
          snapshot: () => personsSnapshot(handle, dualRead),
          strict: true,
        },
        numRuns,
      );
    },
  );

  it.each(facadeSpecs().map((spec) => [spec.name, spec] as const))(
    'migration.%s refuses bad arguments and option objects with a typed error, changing nothing',
    async (_name, spec) => {
      await fuzz(
        spec,
        {
          live: oldPhase.migration,
          offline: offline.migration,
          offlineAttempts: offline.attempts,
          snapshot: () => personsSnapshot(handle, oldPhase),
          // verify() checks columns against the table: an InvalidOptionsError only live.
          strict: false,
        },
        numRuns,
      );
    },
  );

  it.each(entrySpecs.map((spec) => [spec.name, spec] as const))(
    '%s refuses bad options with a typed error before connecting',
    async (_name, spec) => {
      await fuzz(
        spec,
        {
          live: handle,
          offline: offline.handle,
          offlineAttempts: offline.attempts,
          snapshot: () => personsSnapshot(handle, dualRead),
          strict: false,
        },
        numRuns,
      );
    },
  );
});

/**
 * The persons repository interface: the calls ingestion services already make, so a service
 * can type against it and swap its own repository for the phase-aware one.
 */

import type { ReadStats } from './read-stats.js';

/**
 * A person id as accepted by the repository; returned ids are always decimal strings.
 *
 * @example
 * ```ts
 * await repo.fetchPersonsByPersonIds([{ teamId: 1, personId: 9007199254740993n }]);
 * ```
 */
export type PersonId = string | number | bigint;

/**
 * A person row with the table's own columns. `id` is an exact decimal string (int8), `version`
 * a number. Columns beyond the ones named here are carried through as they are.
 *
 * @example
 * ```ts
 * const person: PersonRow | undefined = await repo.fetchPerson(1, 'anon-123');
 * if (person) console.log(person.id, person.version, person.properties);
 * ```
 */
export interface PersonRow {
  /** The person's id, an exact decimal string (int8). */
  id: string;
  /** The person's team. */
  team_id: number;
  /** The person's uuid, unique per team. */
  uuid: string;
  /** The person's properties (personal data: never log them). */
  properties: Record<string, unknown>;
  /** Increases by one on every update; the newer row wins in `dual_read`. */
  version: number;
  /** When the person was created. */
  created_at?: Date;
  /** Whether the person was identified (PostHog's `identify`). */
  is_identified?: boolean;
  /** PostHog's `is_user_id` column, when the table has it. */
  is_user_id?: number | null;
  /** When each property was last set, by property name. */
  properties_last_updated_at?: Record<string, unknown> | null;
  /** How each property was last set (`set`, `set_once`), by property name. */
  properties_last_operation?: Record<string, unknown> | null;
  [column: string]: unknown;
}

/**
 * A person found through one of its distinct ids.
 *
 * @example
 * ```ts
 * const rows = await repo.fetchPersonsByDistinctIds([{ teamId: 1, distinctId: 'a' }]);
 * for (const row of rows) console.log(row.distinct_id, '->', row.id);
 * ```
 */
export interface PersonWithDistinctId extends PersonRow {
  /** The distinct id of the pair that found this person. */
  distinct_id: string;
}

/**
 * A `(team, distinct id)` pair to look up.
 *
 * @example
 * ```ts
 * const pairs: TeamDistinctId[] = [{ teamId: 1, distinctId: 'anon-1' }];
 * ```
 */
export interface TeamDistinctId {
  /** The team the distinct id belongs to. */
  teamId: number;
  /** The distinct id, at most 400 characters, without NUL. */
  distinctId: string;
}

/**
 * A `(team, person id)` pair to look up.
 *
 * @example
 * ```ts
 * const pairs: TeamPersonId[] = [{ teamId: 1, personId: '42' }];
 * ```
 */
export interface TeamPersonId {
  /** The person's team. */
  teamId: number;
  /** The person's id. */
  personId: PersonId;
}

/**
 * One distinct id of a person, as returned by `fetchDistinctIdsForPersons`.
 *
 * @example
 * ```ts
 * const rows: DistinctIdRow[] = await repo.fetchDistinctIdsForPersons([{ teamId: 1, personId: '42' }]);
 * ```
 */
export interface DistinctIdRow {
  /** The person's team. */
  teamId: number;
  /** The person's id, an exact decimal string. */
  personId: string;
  /** One of its distinct ids. */
  distinctId: string;
}

/**
 * A person to create with its distinct ids. Only `teamId` and `distinctIds` are required;
 * omitted columns take the table's defaults (`uuid` defaults to a random UUID).
 *
 * @example
 * ```ts
 * const input: CreatePersonInput = {
 *   teamId: 1,
 *   properties: { plan: 'free' },
 *   isIdentified: false,
 *   distinctIds: ['anon-123'],
 * };
 * ```
 */
export interface CreatePersonInput {
  /** The team to create the person in. */
  teamId: number;
  /** Its distinct ids: strings, or objects with the distinct id row's own `version`. */
  distinctIds: readonly (
    | string
    | {
        /** The distinct id. */
        distinctId: string;
        /** The distinct id row's version; defaults to 0. */
        version?: number;
      }
  )[];
  /** The person's uuid; defaults to a random UUID. Unique per team across both tables. */
  uuid?: string;
  /** The person's properties; default `{}`. */
  properties?: Record<string, unknown>;
  /** Stored in `properties_last_updated_at`. */
  propertiesLastUpdatedAt?: Record<string, unknown>;
  /** Stored in `properties_last_operation`. */
  propertiesLastOperation?: Record<string, unknown>;
  /** A Date, or an ISO 8601 timestamp with a time zone (`2024-01-31T12:00:00Z`). */
  createdAt?: Date | string;
  /** Stored in `is_identified`; the table's default when omitted. */
  isIdentified?: boolean;
  /** Stored in `is_user_id`, when the table has that column. */
  isUserId?: number | null;
  /** Starting version; defaults to 0. */
  version?: number;
}

/**
 * Result of `createPerson`: created, or a creation conflict naming the distinct ids that
 * another person already holds (nothing was written then).
 *
 * @example
 * ```ts
 * const result = await repo.createPerson({ teamId: 1, distinctIds: ['anon-1'] });
 * if (result.status === 'conflict') console.log('taken:', result.distinctIds.length);
 * ```
 */
export type CreatePersonResult =
  | {
      /** The person and its distinct ids were written. */
      status: 'created';
      /** The new person's row. */
      person: PersonRow;
      /** Its distinct ids, as given. */
      distinctIds: string[];
    }
  | {
      /** Another person holds some of the distinct ids: nothing was written. */
      status: 'conflict';
      /** The distinct ids that are taken. */
      distinctIds: string[];
    };

/**
 * A change to a person. Every update increments `version` by one.
 *
 * @example
 * ```ts
 * const update: PersonUpdate = { properties: { plan: 'paid' }, unsetProperties: ['trial'] };
 * ```
 */
export interface PersonUpdate {
  /** Keys to set; merged into the stored properties. */
  properties?: Record<string, unknown>;
  /** Keys to remove from the stored properties (applied after `properties`). */
  unsetProperties?: readonly string[];
  /** Merged into `properties_last_updated_at`. */
  propertiesLastUpdatedAt?: Record<string, unknown>;
  /** Merged into `properties_last_operation`. */
  propertiesLastOperation?: Record<string, unknown>;
  /** Sets `is_identified`. */
  isIdentified?: boolean;
}

/**
 * Result of `updatePersonAssertVersion`. `no_match`: the person is gone or its version moved.
 *
 * @example
 * ```ts
 * const result = await repo.updatePersonAssertVersion(1, person.id, person.version, { isIdentified: true });
 * if (result.status === 'no_match') console.log('someone else updated the person first: re-read and retry');
 * ```
 */
export type AssertVersionResult =
  | {
      /** The version matched and the update was applied. */
      status: 'updated';
      /** The updated row (its version one higher). */
      person: PersonRow;
    }
  | {
      /** The person is gone or its version moved: nothing was written. */
      status: 'no_match';
    };

/**
 * Result of `addDistinctId`.
 *
 * @example
 * ```ts
 * const result = await repo.addDistinctId(1, personId, 'device-42');
 * if (result.status === 'conflict') console.log('distinct id belongs to someone else');
 * ```
 */
export type AddDistinctIdResult =
  | {
      /** The distinct id now points at the person. */
      status: 'added';
    }
  | {
      /** The distinct id already exists in the team: nothing was written. */
      status: 'conflict';
    }
  | {
      /** The person does not exist: nothing was written. */
      status: 'person_not_found';
    };

/**
 * Result of `moveDistinctIds`.
 *
 * @example
 * ```ts
 * const moved = await repo.moveDistinctIds(1, sourceId, targetId);
 * if (moved.status === 'moved') await repo.deletePerson(1, sourceId);
 * ```
 */
export type MoveDistinctIdsResult =
  | {
      /** The distinct ids now point at the target person. */
      status: 'moved';
      /** The distinct ids that moved. */
      distinctIds: string[];
    }
  | {
      /** The target person does not exist: nothing was moved. */
      status: 'target_not_found';
    };

/**
 * A page of `listPersons`; pass `nextCursor` as `after` to get the next page.
 *
 * @example
 * ```ts
 * let page = await repo.listPersons(1, { limit: 500 });
 * while (page.nextCursor) page = await repo.listPersons(1, { after: page.nextCursor, limit: 500 });
 * ```
 */
export interface PersonsPage {
  /** Up to `limit` persons, ordered by id. */
  persons: PersonRow[];
  /** The `after` of the next page; undefined on the last page. */
  nextCursor: string | undefined;
}

/**
 * What an ingestion service calls to read and write persons. `migration.repository()` returns
 * one whose behaviour follows the migration's phase.
 *
 * Every argument is checked before any statement runs; a bad one throws an
 * `InvalidOptionsError` naming it (never echoing its value) and nothing is written: ids must be
 * integers (person ids: a decimal string, a safe integer or a bigint within int8), distinct
 * ids strings of at most 400 characters (PostHog's `varchar(400)`) without NUL, JSON arguments
 * plain objects that `jsonb` stores as given (no BigInt, NaN, function, circular reference or
 * NUL character), `unsetProperties` an array of strings, option and update objects only their
 * documented keys.
 *
 * @example
 * ```ts
 * const repo: PersonsRepository = migration.repository();
 * const created = await repo.createPerson({ teamId: 1, distinctIds: ['anon-1'] });
 * if (created.status === 'created') {
 *   await repo.updatePerson(1, created.person.id, { properties: { plan: 'paid' } });
 * }
 * const person = await repo.fetchPerson(1, 'anon-1');
 * ```
 */
export interface PersonsRepository {
  /**
   * The person that `(teamId, distinctId)` points at. `forUpdate` locks it until the transaction ends.
   *
   * @example
   * ```ts
   * const person = await repo.fetchPerson(1, 'anon-123');
   * await repo.inTransaction(async (tx) => tx.fetchPerson(1, 'anon-123', { forUpdate: true }));
   * ```
   */
  fetchPerson(
    teamId: number,
    distinctId: string,
    options?: { forUpdate?: boolean },
  ): Promise<PersonRow | undefined>;
  /**
   * One row per requested pair that exists (several distinct ids of one person: several rows).
   *
   * @example
   * ```ts
   * const rows = await repo.fetchPersonsByDistinctIds([{ teamId: 1, distinctId: 'anon-1' }]);
   * ```
   */
  fetchPersonsByDistinctIds(pairs: readonly TeamDistinctId[]): Promise<PersonWithDistinctId[]>;
  /**
   * One row per requested person that exists.
   *
   * @example
   * ```ts
   * const persons = await repo.fetchPersonsByPersonIds([{ teamId: 1, personId: '42' }]);
   * ```
   */
  fetchPersonsByPersonIds(pairs: readonly TeamPersonId[]): Promise<PersonRow[]>;
  /**
   * The person of `teamId` with this uuid; undefined when there is none.
   *
   * @example
   * ```ts
   * const person = await repo.fetchPersonByUuid(1, '0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b');
   * ```
   */
  fetchPersonByUuid(teamId: number, uuid: string): Promise<PersonRow | undefined>;
  /**
   * Every distinct id of the requested persons, one row each.
   *
   * @example
   * ```ts
   * const ids = await repo.fetchDistinctIdsForPersons([{ teamId: 1, personId: person.id }]);
   * ```
   */
  fetchDistinctIdsForPersons(pairs: readonly TeamPersonId[]): Promise<DistinctIdRow[]>;
  /**
   * Exact number of a team's persons (a person in both tables counts once).
   *
   * @example
   * ```ts
   * const persons = await repo.countPersons(1);
   * ```
   */
  countPersons(teamId: number): Promise<number>;
  /**
   * A team's persons ordered by id, `limit` at a time, after the cursor `after`.
   *
   * @example
   * ```ts
   * const { persons, nextCursor } = await repo.listPersons(1, { limit: 500 });
   * ```
   */
  listPersons(teamId: number, options?: { after?: PersonId; limit?: number }): Promise<PersonsPage>;
  /**
   * Creates a person with its distinct ids, or reports a conflict (nothing written) when
   * another person holds one of them. In `dual_read` and after, in the new table; the id comes
   * from the old table's sequence.
   *
   * @example
   * ```ts
   * const result = await repo.createPerson({ teamId: 1, distinctIds: ['anon-1'], properties: { plan: 'free' } });
   * if (result.status === 'conflict') console.log(`${result.distinctIds.length} distinct id(s) taken`);
   * ```
   */
  createPerson(input: CreatePersonInput): Promise<CreatePersonResult>;
  /**
   * Applies `update` with `version + 1`; `undefined` when the person does not exist.
   *
   * @example
   * ```ts
   * const updated = await repo.updatePerson(1, person.id, { properties: { plan: 'paid' } });
   * ```
   */
  updatePerson(
    teamId: number,
    personId: PersonId,
    update: PersonUpdate,
  ): Promise<PersonRow | undefined>;
  /**
   * Like `updatePerson`, only when the stored version is still `expectedVersion`.
   *
   * @example
   * ```ts
   * const result = await repo.updatePersonAssertVersion(1, person.id, person.version, { isIdentified: true });
   * ```
   */
  updatePersonAssertVersion(
    teamId: number,
    personId: PersonId,
    expectedVersion: number,
    update: PersonUpdate,
  ): Promise<AssertVersionResult>;
  /**
   * Deletes the person and its distinct ids; false when it did not exist.
   *
   * @example
   * ```ts
   * const deleted = await repo.deletePerson(1, person.id);
   * ```
   */
  deletePerson(teamId: number, personId: PersonId): Promise<boolean>;
  /**
   * Points one more distinct id at the person (`version`: the distinct id row's, default 0).
   *
   * @example
   * ```ts
   * const { status } = await repo.addDistinctId(1, person.id, 'device-42');
   * ```
   */
  addDistinctId(
    teamId: number,
    personId: PersonId,
    distinctId: string,
    version?: number,
  ): Promise<AddDistinctIdResult>;
  /**
   * Moves every distinct id of `sourcePersonId` to `targetPersonId` (the write half of a merge).
   *
   * @example
   * ```ts
   * await repo.inTransaction(async (tx) => {
   *   const moved = await tx.moveDistinctIds(1, source.id, target.id);
   *   if (moved.status === 'moved') await tx.deletePerson(1, source.id);
   * });
   * ```
   */
  moveDistinctIds(
    teamId: number,
    sourcePersonId: PersonId,
    targetPersonId: PersonId,
  ): Promise<MoveDistinctIdsResult>;
  /**
   * Runs `fn` in one transaction; every call on the repository it receives joins it. Use that
   * repository inside `fn`, not the outer one.
   *
   * @example
   * ```ts
   * const person = await repo.inTransaction(async (tx) => {
   *   const found = await tx.fetchPerson(1, 'anon-1', { forUpdate: true });
   *   return found && tx.updatePerson(1, found.id, { properties: { seen: true } });
   * });
   * ```
   */
  inTransaction<T>(fn: (repository: PersonsRepository) => Promise<T>): Promise<T>;
  /**
   * The live readiness signal: per read method, how many reads in `dual_read` there were, how
   * many persons they returned and how many of those came from the old table (the new table
   * had no row for them), plus totals, `fallbackRate` (old rows / rows returned, 0 when none)
   * and the counts of the optional shadow reads (migration option `shadowReads`). Counts are
   * kept in this process since the repository was created or `resetReadStats()` was called;
   * reads in other phases are not counted. Each read with old rows also emits `read:fallback`.
   *
   * @example
   * ```ts
   * migration.events.on('read:fallback', ({ method, rows }) => metrics.increment(`fallback.${method}`, rows));
   * const stats = repo.readStats();
   * console.log(stats.fallbackRate, stats.methods.fetchPerson.oldRows, stats.totals.shadow.mismatched);
   * if (stats.totals.rows > 0 && stats.fallbackRate === 0) console.log('no read needed the old table');
   * ```
   */
  readStats(): ReadStats;
  /**
   * Sets every counter of {@link readStats} back to zero (e.g. after the backfill finished, to
   * watch the fallback rate from then on). Shadow reads still running are not counted after it.
   *
   * @example
   * ```ts
   * await migration.backfill();
   * repo.resetReadStats();
   * // ... later: reads since the backfill
   * console.log(repo.readStats().fallbackRate);
   * ```
   */
  resetReadStats(): void;
}

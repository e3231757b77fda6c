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
  id: string;
  team_id: number;
  uuid: string;
  properties: Record<string, unknown>;
  version: number;
  created_at?: Date;
  is_identified?: boolean;
  is_user_id?: number | null;
  properties_last_updated_at?: Record<string, unknown> | null;
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
  teamId: number;
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
  teamId: number;
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
  teamId: number;
  personId: string;
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
  teamId: number;
  distinctIds: readonly (string | { distinctId: string; version?: number })[];
  uuid?: string;
  properties?: Record<string, unknown>;
  propertiesLastUpdatedAt?: Record<string, unknown>;
  propertiesLastOperation?: Record<string, unknown>;
  /** A Date, or an ISO 8601 timestamp with a time zone (`2024-01-31T12:00:00Z`). */
  createdAt?: Date | string;
  isIdentified?: boolean;
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
  | { status: 'created'; person: PersonRow; distinctIds: string[] }
  | { status: 'conflict'; distinctIds: string[] };

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
export type AssertVersionResult = { status: 'updated'; person: PersonRow } | { status: 'no_match' };

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
  | { status: 'added' }
  | { status: 'conflict' }
  | { status: 'person_not_found' };

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
  | { status: 'moved'; distinctIds: string[] }
  | { status: 'target_not_found' };

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
  persons: PersonRow[];
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
  /** The person that `(teamId, distinctId)` points at. `forUpdate` locks it until the transaction ends. */
  fetchPerson(
    teamId: number,
    distinctId: string,
    options?: { forUpdate?: boolean },
  ): Promise<PersonRow | undefined>;
  /** One row per requested pair that exists (several distinct ids of one person: several rows). */
  fetchPersonsByDistinctIds(pairs: readonly TeamDistinctId[]): Promise<PersonWithDistinctId[]>;
  /** One row per requested person that exists. */
  fetchPersonsByPersonIds(pairs: readonly TeamPersonId[]): Promise<PersonRow[]>;
  fetchPersonByUuid(teamId: number, uuid: string): Promise<PersonRow | undefined>;
  fetchDistinctIdsForPersons(pairs: readonly TeamPersonId[]): Promise<DistinctIdRow[]>;
  /** Exact number of a team's persons (a person in both tables counts once). */
  countPersons(teamId: number): Promise<number>;
  /** A team's persons ordered by id, `limit` at a time, after the cursor `after`. */
  listPersons(teamId: number, options?: { after?: PersonId; limit?: number }): Promise<PersonsPage>;
  createPerson(input: CreatePersonInput): Promise<CreatePersonResult>;
  /** Applies `update` with `version + 1`; `undefined` when the person does not exist. */
  updatePerson(
    teamId: number,
    personId: PersonId,
    update: PersonUpdate,
  ): Promise<PersonRow | undefined>;
  /** Like `updatePerson`, only when the stored version is still `expectedVersion`. */
  updatePersonAssertVersion(
    teamId: number,
    personId: PersonId,
    expectedVersion: number,
    update: PersonUpdate,
  ): Promise<AssertVersionResult>;
  /** Deletes the person and its distinct ids; false when it did not exist. */
  deletePerson(teamId: number, personId: PersonId): Promise<boolean>;
  addDistinctId(
    teamId: number,
    personId: PersonId,
    distinctId: string,
    version?: number,
  ): Promise<AddDistinctIdResult>;
  /** Moves every distinct id of `sourcePersonId` to `targetPersonId` (the write half of a merge). */
  moveDistinctIds(
    teamId: number,
    sourcePersonId: PersonId,
    targetPersonId: PersonId,
  ): Promise<MoveDistinctIdsResult>;
  /** Runs `fn` in one transaction; every call on the repository it receives joins it. */
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

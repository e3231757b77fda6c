import { z } from 'zod';
import { InvalidOptionsError } from '../errors.js';
import { identifier, integerIn } from '../util/parse-options.js';

/**
 * Checks of the positional arguments of the repository and of the migration's calls (the
 * option objects have their schemas beside these). Each is checked before any query, and a bad
 * one throws an {@link InvalidOptionsError} naming the argument, never echoing its value.
 */

const uuidPattern = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Schemas of positional arguments, by the name the error gives. @internal */
export const callArguments = {
  /** `runtimeGrants(role)`: a role name, an identifier of at most 63 bytes. */
  roleName: identifier('role'),
  /** `listPersons(teamId, { limit })`. */
  limit: integerIn('limit', 1, 10_000),
  /** `mismatches(id, { pageSize })`. */
  pageSize: integerIn('pageSize', 1, 100_000),
  /** `fetchPersonByUuid(teamId, uuid)`, `createPerson({ uuid })`. */
  uuid: z.string({ error: 'must be a UUID' }).regex(uuidPattern, { error: 'must be a UUID' }),
  /** `updatePersonAssertVersion(teamId, personId, expectedVersion, update)`. */
  expectedVersion: z
    .number({ error: 'must be an integer' })
    .refine(Number.isSafeInteger, { error: 'must be an integer' }),
  /** `setBackfillRate(maxRowsPerSecond)`: a positive integer, or null for no ceiling. */
  maxRowsPerSecond: z
    .number({ error: 'must be a positive integer or null' })
    .refine((n) => Number.isSafeInteger(n) && n >= 1, {
      error: 'must be a positive integer or null',
    })
    .nullable(),
  /** `verification(id)`, `mismatches(id)`: a run id, a bigserial value as a decimal string. */
  verificationId: z
    .string({ error: 'must be the id of a verification run' })
    .regex(/^\d{1,19}$/, { error: 'must be the id of a verification run' }),
} as const;

/**
 * `value` checked by `schema`, or an {@link InvalidOptionsError} whose message and issue name
 * `name` (`limit must be an integer from 1 to 10000`). @internal
 *
 * @example
 * ```ts
 * const limit = checkArgument(callArguments.limit, options.limit ?? 100, 'limit');
 * ```
 */
export function checkArgument<S extends z.ZodType>(
  schema: S,
  value: unknown,
  name: string,
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problem = result.error.issues[0]?.message ?? 'is not valid';
  // integerIn() messages start with the option's name already; the others are a predicate.
  const message = problem.startsWith(name) ? problem : `${name} ${problem}`;
  throw new InvalidOptionsError(message, [{ path: name, message: problem }]);
}

const maxInt8 = 9223372036854775807n;
const minInt8 = -9223372036854775808n;

/**
 * The error for one bad argument: the message is `${argument} ${requirement}` (say what the
 * argument must be, never what it was: callers pass through arbitrary input). @internal
 *
 * @example
 * ```ts
 * if (typeof fn !== 'function') throw invalidArgument('fn', 'must be a function');
 * ```
 */
export function invalidArgument(argument: string, requirement: string): InvalidOptionsError {
  return new InvalidOptionsError(`${argument} ${requirement}`, [
    { path: argument, message: requirement },
  ]);
}

/**
 * Whether `value` is a plain object: `{ ... }` or `Object.create(null)` (of any realm), not an
 * array, a class instance, a Date or a Map. @internal
 *
 * @example
 * ```ts
 * isPlainObject({ a: 1 }); // true
 * isPlainObject([1]); // false
 * ```
 */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/**
 * An options object given by a caller: `undefined` reads as `{}`; anything but a plain object
 * with only the `allowed` keys is refused (a misspelt option must not be ignored). @internal
 *
 * @example
 * ```ts
 * const { forUpdate } = optionsObject(options, 'options', ['forUpdate']);
 * ```
 */
export function optionsObject(
  value: unknown,
  argument: string,
  allowed: readonly string[],
): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) {
    throw invalidArgument(argument, `must be an object with the keys ${allowed.join(', ')}`);
  }
  const unknown = Object.keys(value).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    // Name the keys only when they look like option names (a typo), never arbitrary text.
    const named = unknown.every((key) => /^[A-Za-z_$][\w$]{0,63}$/.test(key));
    throw invalidArgument(
      argument,
      `has unknown key(s)${named ? ` ${unknown.slice(0, 5).join(', ')}` : ''}: ` +
        `the allowed keys are ${allowed.join(', ')}`,
    );
  }
  return value;
}

/**
 * Normalises a person id given by a caller to the exact decimal string sent to Postgres, or
 * throws naming the argument (never its value: ids are not secret, but callers pass through
 * arbitrary input). Only a string, a number or a bigint (never an object's `toString()`), in
 * the range of `bigint` (int8). Plain checks, not a schema: batch reads check a thousand ids
 * per call.
 * @internal
 *
 * @example
 * ```ts
 * toIdText(9007199254740993n, 'personId'); // '9007199254740993'
 * ```
 */
export function toIdText(value: unknown, argument: string): string {
  let text: string;
  if (typeof value === 'string') text = value;
  else if (typeof value === 'bigint') text = value.toString();
  else if (typeof value === 'number' && Number.isSafeInteger(value)) text = String(value);
  else throw invalidArgument(argument, 'must be a safe integer, a bigint or a decimal string');
  if (!/^-?\d{1,19}$/.test(text)) throw invalidArgument(argument, 'must be an integer id');
  // 19 digits may still overflow int8: Postgres would fail the statement (22003).
  if (text.length >= 19 && (BigInt(text) > maxInt8 || BigInt(text) < minInt8)) {
    throw invalidArgument(argument, 'must be an integer id within the range of bigint (int8)');
  }
  return text;
}

/**
 * A team id given by a caller, or an error naming the argument. Plain checks, like
 * {@link toIdText}. @internal
 *
 * @example
 * ```ts
 * const teamId = toTeamId(input.teamId, 'input.teamId');
 * ```
 */
export function toTeamId(value: unknown, argument = 'teamId'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw invalidArgument(argument, 'must be an integer');
  }
  return value;
}

/**
 * The length limit of PostHog's `distinct_id varchar(400)`, in characters (code points).
 * @internal
 *
 * @example
 * ```ts
 * if (id.length > maxDistinctIdLength) console.log('too long for distinct_id');
 * ```
 */
export const maxDistinctIdLength = 400;

// With the u flag a paired surrogate is one code point: only a lone one matches.
const loneSurrogate = /\p{Cs}/u;

/**
 * Why Postgres would refuse `text` as a text value, or undefined: a NUL character (text cannot
 * hold one) or a lone surrogate (not valid UTF-8; the driver would silently store U+FFFD, so
 * two different ids would become one). @internal
 *
 * @example
 * ```ts
 * const problem = textProblem(key);
 * if (problem) throw invalidArgument('update.unsetProperties', problem);
 * ```
 */
export function textProblem(text: string): string | undefined {
  if (text.includes('\u0000'))
    return 'must not contain NUL characters (Postgres text cannot hold them)';
  if (loneSurrogate.test(text)) {
    return 'must be well-formed Unicode (no lone surrogate: Postgres stores only valid UTF-8)';
  }
  return undefined;
}

/**
 * A distinct id given by a caller: a string Postgres can store in PostHog's
 * `distinct_id varchar(400)` (at most 400 characters, no NUL, well-formed Unicode), checked
 * before any statement so an over-long id fails here, not in the middle of the caller's
 * transaction. The empty string is a valid id (the column allows it). @internal
 *
 * @example
 * ```ts
 * const distinctId = toDistinctId(pair.distinctId, 'pairs[].distinctId');
 * ```
 */
export function toDistinctId(value: unknown, argument = 'distinctId'): string {
  if (typeof value !== 'string') throw invalidArgument(argument, 'must be a string');
  // .length counts UTF-16 units (>= code points): count code points only when it may matter.
  if (value.length > maxDistinctIdLength && codePoints(value) > maxDistinctIdLength) {
    throw invalidArgument(
      argument,
      `must be at most ${maxDistinctIdLength} characters (distinct_id is varchar(${maxDistinctIdLength}))`,
    );
  }
  const problem = textProblem(value);
  if (problem) throw invalidArgument(argument, problem);
  return value;
}

function codePoints(text: string): number {
  if (text.length > 2 * maxDistinctIdLength) return text.length;
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/**
 * A version given by a caller for a write (a person's starting version, a distinct id's
 * version): a non-negative safe integer. @internal
 *
 * @example
 * ```ts
 * const version = toVersion(input.version ?? 0, 'input.version');
 * ```
 */
export function toVersion(value: unknown, argument: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalidArgument(argument, 'must be a non-negative integer');
  }
  return value;
}

/**
 * Team ids and distinct ids of `fetchPersonsByDistinctIds(pairs)`, as parallel arrays, or an
 * error naming the bad element's field. Plain checks (no schema per element): a batch read
 * checks thousands of pairs per call. @internal
 *
 * @example
 * ```ts
 * const { teamIds, distinctIds } = toDistinctIdPairs([{ teamId: 1, distinctId: 'anon-1' }]);
 * ```
 */
export function toDistinctIdPairs(pairs: unknown): { teamIds: number[]; distinctIds: string[] } {
  const shape = 'must be an array of { teamId, distinctId } objects';
  if (!Array.isArray(pairs)) throw invalidArgument('pairs', shape);
  const teamIds: number[] = [];
  const distinctIds: string[] = [];
  for (let i = 0; i < pairs.length; i++) {
    const pair: unknown = pairs[i];
    if (typeof pair !== 'object' || pair === null) throw invalidArgument('pairs', shape);
    const { teamId, distinctId } = pair as Record<string, unknown>;
    teamIds.push(toTeamId(teamId, 'pairs[].teamId'));
    distinctIds.push(toDistinctId(distinctId, 'pairs[].distinctId'));
  }
  return { teamIds, distinctIds };
}

/**
 * Team ids and person ids (decimal strings) of `fetchPersonsByPersonIds(pairs)` and
 * `fetchDistinctIdsForPersons(pairs)`, like {@link toDistinctIdPairs}. @internal
 *
 * @example
 * ```ts
 * const { teamIds, personIds } = toPersonIdPairs([{ teamId: 1, personId: 42n }]);
 * ```
 */
export function toPersonIdPairs(pairs: unknown): { teamIds: number[]; personIds: string[] } {
  const shape = 'must be an array of { teamId, personId } objects';
  if (!Array.isArray(pairs)) throw invalidArgument('pairs', shape);
  const teamIds: number[] = [];
  const personIds: string[] = [];
  for (let i = 0; i < pairs.length; i++) {
    const pair: unknown = pairs[i];
    if (typeof pair !== 'object' || pair === null) throw invalidArgument('pairs', shape);
    const { teamId, personId } = pair as Record<string, unknown>;
    teamIds.push(toTeamId(teamId, 'pairs[].teamId'));
    personIds.push(toIdText(personId, 'pairs[].personId'));
  }
  return { teamIds, personIds };
}

/**
 * The options of `fetchPerson(teamId, distinctId, options)`. @internal
 *
 * @example
 * ```ts
 * const { forUpdate } = toFetchOptions({ forUpdate: true }); // true
 * ```
 */
export function toFetchOptions(options: unknown): { forUpdate: boolean } {
  const { forUpdate } = optionsObject(options, 'options', ['forUpdate']);
  if (forUpdate !== undefined && typeof forUpdate !== 'boolean') {
    throw invalidArgument('forUpdate', 'must be true or false');
  }
  return { forUpdate: forUpdate === true };
}

/**
 * The options of `listPersons(teamId, options)`: the cursor as a decimal string and the page
 * size (default 100). @internal
 *
 * @example
 * ```ts
 * const { after, limit } = toListOptions({ after: '42', limit: 500 });
 * ```
 */
export function toListOptions(options: unknown): { after: string | undefined; limit: number } {
  const { after, limit } = optionsObject(options, 'options', ['after', 'limit']);
  return {
    after: after === undefined ? undefined : toIdText(after, 'after'),
    limit: checkArgument(callArguments.limit, limit ?? 100, 'limit'),
  };
}

/**
 * The options of `migration.mismatches(id, options)`. @internal
 *
 * @example
 * ```ts
 * const { pageSize, includeRepaired } = toMismatchesOptions({ pageSize: 500 });
 * ```
 */
export function toMismatchesOptions(options: unknown): {
  pageSize: number;
  includeRepaired: boolean;
} {
  const { pageSize, includeRepaired } = optionsObject(options, 'options', [
    'pageSize',
    'includeRepaired',
  ]);
  if (includeRepaired !== undefined && typeof includeRepaired !== 'boolean') {
    throw invalidArgument('includeRepaired', 'must be true or false');
  }
  return {
    pageSize: checkArgument(callArguments.pageSize, pageSize ?? 1_000, 'pageSize'),
    includeRepaired: includeRepaired === true,
  };
}

/**
 * Refuses a callback argument that is not a function (`inTransaction(fn)`), before the
 * transaction opens. @internal
 *
 * @example
 * ```ts
 * checkFunction(fn, 'fn');
 * ```
 */
export function checkFunction(value: unknown, argument: string): void {
  if (typeof value !== 'function') throw invalidArgument(argument, 'must be a function');
}

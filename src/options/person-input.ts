import {
  callArguments,
  checkArgument,
  invalidArgument,
  optionsObject,
  textProblem,
  toDistinctId,
  toTeamId,
  toVersion,
} from './call-arguments.js';
import { toJsonText } from './json-text.js';

/**
 * Checks of the two object arguments of the repository's writes, `createPerson(input)` and
 * `updatePerson(..., update)`: each is refused with an {@link InvalidOptionsError} naming the
 * field (never its value) before any statement, and returned in the form the SQL takes (JSON
 * as text), so the write cannot fail half-way on something the caller gave.
 */

const newPersonKeys = [
  'teamId',
  'distinctIds',
  'uuid',
  'properties',
  'propertiesLastUpdatedAt',
  'propertiesLastOperation',
  'createdAt',
  'isIdentified',
  'isUserId',
  'version',
] as const;

const updateKeys = [
  'properties',
  'unsetProperties',
  'propertiesLastUpdatedAt',
  'propertiesLastOperation',
  'isIdentified',
] as const;

/**
 * A checked `createPerson` input: JSON columns as JSON text, `undefined` for what was not
 * given (the table's default then). @internal
 *
 * @example
 * ```ts
 * const person: NewPerson = checkNewPerson({ teamId: 1, distinctIds: ['anon-1'] });
 * ```
 */
export interface NewPerson {
  readonly teamId: number;
  readonly distinctIds: string[];
  /** The version of each distinct id, in the order of `distinctIds`. */
  readonly versions: number[];
  readonly uuid: string | undefined;
  /** JSON text; `{}` when not given. */
  readonly properties: string;
  readonly propertiesLastUpdatedAt: string | undefined;
  readonly propertiesLastOperation: string | undefined;
  /** A valid Date, or an ISO 8601 timestamp with a time zone, checked. */
  readonly createdAt: Date | string | undefined;
  readonly isIdentified: boolean | undefined;
  readonly isUserId: number | null | undefined;
  readonly version: number;
}

/**
 * A checked `updatePerson` change: JSON as text, `undefined` for what was not given. @internal
 *
 * @example
 * ```ts
 * const change: PersonChange = checkPersonUpdate({ unsetProperties: ['trial'] });
 * ```
 */
export interface PersonChange {
  readonly properties: string | undefined;
  readonly unsetProperties: string[] | undefined;
  readonly propertiesLastUpdatedAt: string | undefined;
  readonly propertiesLastOperation: string | undefined;
  readonly isIdentified: boolean | undefined;
}

/**
 * The `input` of `createPerson(input)`, checked: a plain object with only the known keys, an
 * integer `teamId`, a non-empty array of distinct ids (strings or `{ distinctId, version? }`,
 * none repeated), JSON objects, a boolean `isIdentified`, and so on. @internal
 *
 * @example
 * ```ts
 * const person = checkNewPerson({ teamId: 1, distinctIds: ['anon-1'], properties: { plan: 'free' } });
 * ```
 */
export function checkNewPerson(input: unknown): NewPerson {
  if (input === undefined) {
    throw invalidArgument('input', 'must be an object { teamId, distinctIds, ... }');
  }
  const o = optionsObject(input, 'input', newPersonKeys);
  const teamId = toTeamId(o.teamId, 'input.teamId');
  const { distinctIds, versions } = toNewDistinctIds(o.distinctIds);
  if (o.uuid !== undefined) checkArgument(callArguments.uuid, o.uuid, 'input.uuid');
  const { isUserId } = o;
  if (isUserId !== undefined && isUserId !== null && !Number.isSafeInteger(isUserId)) {
    throw invalidArgument('input.isUserId', 'must be an integer or null');
  }
  return {
    teamId,
    distinctIds,
    versions,
    uuid: o.uuid as string | undefined,
    properties: o.properties === undefined ? '{}' : toJsonText(o.properties, 'input.properties'),
    propertiesLastUpdatedAt: optionalJson(
      o.propertiesLastUpdatedAt,
      'input.propertiesLastUpdatedAt',
    ),
    propertiesLastOperation: optionalJson(
      o.propertiesLastOperation,
      'input.propertiesLastOperation',
    ),
    createdAt: o.createdAt === undefined ? undefined : toTimestamp(o.createdAt, 'input.createdAt'),
    isIdentified: optionalBoolean(o.isIdentified, 'input.isIdentified'),
    isUserId: isUserId as number | null | undefined,
    version: o.version === undefined ? 0 : toVersion(o.version, 'input.version'),
  };
}

/**
 * The `update` of `updatePerson(teamId, personId, update)` (and of
 * `updatePersonAssertVersion`), checked: a plain object with only the known keys, JSON objects,
 * `unsetProperties` an array of property names, a boolean `isIdentified`. @internal
 *
 * @example
 * ```ts
 * checkPersonUpdate({ unsetProperties: 'email' }); // throws: must be an array of property names
 * ```
 */
export function checkPersonUpdate(update: unknown): PersonChange {
  if (update === undefined) {
    throw invalidArgument('update', 'must be an object, e.g. { properties: { plan: "paid" } }');
  }
  const o = optionsObject(update, 'update', updateKeys);
  return {
    properties: optionalJson(o.properties, 'update.properties'),
    unsetProperties:
      o.unsetProperties === undefined ? undefined : toPropertyNames(o.unsetProperties),
    propertiesLastUpdatedAt: optionalJson(
      o.propertiesLastUpdatedAt,
      'update.propertiesLastUpdatedAt',
    ),
    propertiesLastOperation: optionalJson(
      o.propertiesLastOperation,
      'update.propertiesLastOperation',
    ),
    isIdentified: optionalBoolean(o.isIdentified, 'update.isIdentified'),
  };
}

function optionalJson(value: unknown, argument: string): string | undefined {
  return value === undefined ? undefined : toJsonText(value, argument);
}

function optionalBoolean(value: unknown, argument: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw invalidArgument(argument, 'must be true or false');
  }
  return value;
}

/** Distinct ids of a new person and their versions, from strings or `{ distinctId, version? }`. */
function toNewDistinctIds(value: unknown): { distinctIds: string[]; versions: number[] } {
  const argument = 'input.distinctIds';
  if (!Array.isArray(value)) {
    throw invalidArgument(argument, "must be an array of distinct ids, e.g. ['anon-1']");
  }
  if (value.length === 0) throw invalidArgument(argument, 'must name at least one distinct id');
  const distinctIds: string[] = [];
  const versions: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const entry: unknown = value[i];
    if (typeof entry === 'string') {
      distinctIds.push(toDistinctId(entry, `${argument}[]`));
      versions.push(0);
      continue;
    }
    const o = optionsObject(entry ?? null, `${argument}[]`, ['distinctId', 'version']);
    distinctIds.push(toDistinctId(o.distinctId, `${argument}[].distinctId`));
    versions.push(o.version === undefined ? 0 : toVersion(o.version, `${argument}[].version`));
  }
  if (new Set(distinctIds).size !== distinctIds.length) {
    throw invalidArgument(argument, 'must not repeat a distinct id');
  }
  return { distinctIds, versions };
}

function toPropertyNames(value: unknown): string[] {
  const argument = 'update.unsetProperties';
  // A string is iterable: spread, 'ab' would unset the keys 'a' and 'b'.
  if (!Array.isArray(value)) {
    throw invalidArgument(argument, "must be an array of property names, e.g. ['email']");
  }
  const names: string[] = [];
  for (let i = 0; i < value.length; i++) {
    const name: unknown = value[i];
    if (typeof name !== 'string') {
      throw invalidArgument(argument, "must be an array of property names, e.g. ['email']");
    }
    const problem = textProblem(name);
    if (problem) throw invalidArgument(argument, problem);
    names.push(name);
  }
  return names;
}

const isoTimestamp =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(?:Z|[+-](\d{2})(?::?(\d{2}))?)$/i;

/**
 * A timestamp for a `timestamptz` column: a valid Date of years 1 to 9999, or an ISO 8601
 * string with a time zone whose every field is in range (JavaScript's `Date.parse` rolls
 * February 30 over to March; Postgres refuses it mid-statement).
 */
function toTimestamp(value: unknown, argument: string): Date | string {
  const requirement =
    'must be a valid Date or an ISO 8601 timestamp with a time zone, e.g. 2024-01-31T12:00:00Z';
  if (value instanceof Date) {
    const year = value.getUTCFullYear();
    if (Number.isNaN(value.getTime()) || year < 1 || year > 9999) {
      throw invalidArgument(argument, requirement);
    }
    return value;
  }
  const m = typeof value === 'string' ? isoTimestamp.exec(value) : null;
  if (!m) throw invalidArgument(argument, requirement);
  const [year, month, day, hour, minute, second = 0, offsetHours = 0, offsetMinutes = 0] = m
    .slice(1)
    .map((field) => (field === undefined ? undefined : Number(field)));
  const date = new Date(Date.UTC(2000, (month ?? 1) - 1, day));
  date.setUTCFullYear(year ?? 0);
  const valid =
    (year ?? 0) >= 1 &&
    date.getUTCMonth() === (month ?? 0) - 1 &&
    date.getUTCDate() === day &&
    (hour ?? 24) < 24 &&
    (minute ?? 60) < 60 &&
    second < 60 &&
    offsetHours < 16 &&
    offsetMinutes < 60;
  if (!valid) throw invalidArgument(argument, requirement);
  return value as string;
}

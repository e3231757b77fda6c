import { z } from 'zod';
import { InvalidOptionsError } from '../errors.js';
import { integerIn } from '../util/parse-options.js';

/**
 * Checks of the positional arguments of the repository and of the migration's calls (the
 * option objects have their schemas beside these). Each is checked before any query, and a bad
 * one throws an {@link InvalidOptionsError} naming the argument, never echoing its value.
 */

const uuidPattern = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Schemas of positional arguments, by the name the error gives. @internal */
export const callArguments = {
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

/**
 * Normalises a person id given by a caller to the exact decimal string sent to Postgres, or
 * throws naming the argument (never its value: ids are not secret, but callers pass through
 * arbitrary input). Plain checks, not a schema: batch reads check a thousand ids per call.
 * @internal
 *
 * @example
 * ```ts
 * toIdText(9007199254740993n, 'personId'); // '9007199254740993'
 * ```
 */
export function toIdText(value: string | number | bigint, argument: string): string {
  const text = typeof value === 'string' ? value : String(value);
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new InvalidOptionsError(
      `${argument} must be a safe integer, a bigint or a decimal string`,
      [{ path: argument, message: 'not a safe integer' }],
    );
  }
  if (!/^-?\d{1,19}$/.test(text)) {
    throw new InvalidOptionsError(`${argument} must be an integer id`, [
      { path: argument, message: 'not an integer' },
    ]);
  }
  return text;
}

/**
 * A team id given by a caller, or an error naming the argument. Plain checks, like
 * {@link toIdText}. @internal
 *
 * @example
 * ```ts
 * const teamIds = pairs.map((p) => toTeamId(p.teamId, 'pairs[].teamId'));
 * ```
 */
export function toTeamId(value: number, argument = 'teamId'): number {
  if (!Number.isSafeInteger(value)) {
    throw new InvalidOptionsError(`${argument} must be an integer`, [
      { path: argument, message: 'not an integer' },
    ]);
  }
  return value;
}

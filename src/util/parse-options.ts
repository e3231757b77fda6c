import { z } from 'zod';
import { InvalidOptionsError } from '../errors.js';

/**
 * A Postgres identifier option whose messages name it. Postgres truncates identifiers at 63
 * bytes (of UTF-8, not characters): refusing longer names avoids silently addressing a
 * different table than the one configured. Any other name Postgres accepts is accepted (dots,
 * quotes, spaces, upper case, any Unicode): it is always quoted, never split. @internal
 *
 * @example
 * ```ts
 * const schema = z.object({ table: identifier('table') });
 * ```
 */
export const identifier = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .min(1, { error: `${what} must not be empty` })
    .refine((value) => Buffer.byteLength(value, 'utf8') <= 63, {
      error: `${what} must be at most 63 bytes (Postgres truncates longer identifiers)`,
    })
    .refine((value) => !value.includes('\u0000'), { error: `${what} must not contain NUL` })
    // A lone surrogate reaches the server as U+FFFD: the name stored would differ from this one.
    .refine((value) => !/\p{Cs}/u.test(value), {
      error: `${what} must be valid Unicode (it has a lone surrogate)`,
    });

/**
 * A schema name option: an {@link identifier} that does not start with `pg_` (Postgres reserves
 * those, SQLSTATE 42939, though PGlite accepts them). @internal
 *
 * @example
 * ```ts
 * const schema = z.object({ controlSchema: schemaName('controlSchema') });
 * ```
 */
export const schemaName = (what: string) =>
  identifier(what).refine((value) => !value.toLowerCase().startsWith('pg_'), {
    error: `${what} must not start with pg_ (Postgres reserves those schema names)`,
  });

/**
 * An integer option from `min` to `max` whose messages name it. @internal
 *
 * @example
 * ```ts
 * const schema = z.object({ workers: integerIn('workers', 1, 64).default(2) });
 * ```
 */
export const integerIn = (what: string, min: number, max: number) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be an integer from ${min} to ${max}` })
    .min(min, { error: `${what} must be an integer from ${min} to ${max}` })
    .max(max, { error: `${what} must be an integer from ${min} to ${max}` });

/**
 * Validates `input` with `schema` and freezes the result, or throws an
 * {@link InvalidOptionsError} naming every bad option. @internal
 *
 * @example
 * ```ts
 * const { workers } = parseOptions(z.object({ workers: integerIn('workers', 1, 64) }), input, 'backfill()');
 * ```
 */
export function parseOptions<S extends z.ZodType>(
  schema: S,
  input: unknown,
  entryPoint: string,
): Readonly<z.output<S>> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return Object.freeze(result.data);
  const issues = result.error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    // zod's own messages for unknown keys do not say which option; make them name it.
    const message =
      issue.code === 'unrecognized_keys'
        ? `unknown option(s) ${issue.keys.map((key) => (path ? `${path}.${key}` : key)).join(', ')}`
        : issue.code === 'invalid_type' && !issue.message.startsWith(path)
          ? `${path} ${issue.message}`
          : issue.message;
    return { path, message };
  });
  throw new InvalidOptionsError(
    `Invalid options for ${entryPoint}: ${issues.map((i) => i.message).join('; ')}`,
    issues,
  );
}

import { z } from 'zod';
import type { DatabaseHandle } from '../db/database-handle.js';
import { InvalidOptionsError } from '../errors.js';

// Postgres truncates identifiers at 63 bytes; refusing longer names avoids silently addressing
// a different table than the one configured.
const identifier = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .min(1, { error: `${what} must not be empty` })
    .refine((value) => Buffer.byteLength(value, 'utf8') <= 63, {
      error: `${what} must be at most 63 bytes (Postgres truncates longer identifiers)`,
    })
    .refine((value) => !value.includes('\u0000'), { error: `${what} must not contain NUL` });

// Postgres reserves schema names starting with pg_ (SQLSTATE 42939), though PGlite accepts them.
const schemaName = (what: string) =>
  identifier(what).refine((value) => !value.toLowerCase().startsWith('pg_'), {
    error: `${what} must not start with pg_ (Postgres reserves those schema names)`,
  });

/** An integer option from `min` to `max` whose messages name it. @internal */
export const integerIn = (what: string, min: number, max: number) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be an integer from ${min} to ${max}` })
    .min(min, { error: `${what} must be an integer from ${min} to ${max}` })
    .max(max, { error: `${what} must be an integer from ${min} to ${max}` });

const migrationOptionsSchema = z
  .object({
    db: z.custom<DatabaseHandle>(
      (value) =>
        typeof value === 'object' &&
        value !== null &&
        'db' in value &&
        typeof (value as { close?: unknown }).close === 'function',
      { error: 'db must be a handle returned by openDatabase()' },
    ),
    name: identifier('name').default('persons'),
    schema: schemaName('schema').default('public'),
    controlSchema: schemaName('controlSchema').default('dual_read'),
    oldTable: identifier('oldTable').default('posthog_person'),
    newTable: identifier('newTable').default('posthog_person_new'),
    distinctIdsTable: identifier('distinctIdsTable').default('posthog_persondistinctid'),
    phaseRefreshIntervalMs: integerIn('phaseRefreshIntervalMs', 50, 600_000).default(1_000),
    phaseChangeLockTimeoutMs: integerIn('phaseChangeLockTimeoutMs', 1, 600_000).default(10_000),
  })
  .strict()
  .refine((o) => o.oldTable !== o.newTable, {
    error: 'newTable must differ from oldTable',
    path: ['newTable'],
  })
  .refine((o) => o.distinctIdsTable !== o.oldTable && o.distinctIdsTable !== o.newTable, {
    error: 'distinctIdsTable must differ from oldTable and newTable',
    path: ['distinctIdsTable'],
  });

/**
 * Options of {@link createPersonsMigration}. Only `db` is required.
 *
 * @example
 * ```ts
 * const options: PersonsMigrationOptions = {
 *   db: await openDatabase(process.env.DATABASE_URL),
 *   oldTable: 'posthog_person',
 *   newTable: 'posthog_person_new',
 * };
 * ```
 */
export type PersonsMigrationOptions = z.input<typeof migrationOptionsSchema>;

/** Options after validation and defaults, frozen. @internal */
export type ResolvedMigrationOptions = Readonly<z.output<typeof migrationOptionsSchema>>;

/**
 * Validates `input` with `schema` and freezes the result, or throws an
 * {@link InvalidOptionsError} naming every bad option. @internal
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
        ? `unknown option(s) ${issue.keys.join(', ')}`
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

/** @internal */
export function resolveMigrationOptions(input: unknown): ResolvedMigrationOptions {
  return parseOptions(migrationOptionsSchema, input, 'createPersonsMigration()');
}

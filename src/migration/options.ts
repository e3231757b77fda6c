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

// Off by default: a shadow read costs a second query (its own transaction) per sampled read.
const shadowReadsSchema = z
  .object(
    {
      sampleRate: z
        .number({ error: 'shadowReads.sampleRate must be a number from 0 to 1' })
        .min(0, { error: 'shadowReads.sampleRate must be a number from 0 to 1' })
        .max(1, { error: 'shadowReads.sampleRate must be a number from 0 to 1' }),
      timeoutMs: integerIn('shadowReads.timeoutMs', 1, 60_000).default(200),
    },
    { error: 'shadowReads must be an object { sampleRate, timeoutMs? }' },
  )
  .strict()
  .transform((value) => Object.freeze(value));

/** A handle returned by `openDatabase()`. @internal */
export const databaseHandle = z.custom<DatabaseHandle>(
  (value) =>
    typeof value === 'object' &&
    value !== null &&
    'db' in value &&
    typeof (value as { close?: unknown }).close === 'function',
  { error: 'db must be a handle returned by openDatabase()' },
);

const migrationOptionsSchema = z
  .object({
    db: databaseHandle,
    name: identifier('name').default('persons'),
    schema: schemaName('schema').default('public'),
    controlSchema: schemaName('controlSchema').default('dual_read'),
    oldTable: identifier('oldTable').default('posthog_person'),
    newTable: identifier('newTable').default('posthog_person_new'),
    distinctIdsTable: identifier('distinctIdsTable').default('posthog_persondistinctid'),
    phaseRefreshIntervalMs: integerIn('phaseRefreshIntervalMs', 50, 600_000).default(1_000),
    phaseChangeLockTimeoutMs: integerIn('phaseChangeLockTimeoutMs', 1, 600_000).default(10_000),
    shadowReads: shadowReadsSchema.optional(),
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

/**
 * Option `shadowReads` of {@link createPersonsMigration}: Scientist-style comparison of merged
 * reads with the new table alone, off by default.
 *
 * In `dual_read`, a sampled point or batch read (`fetchPerson`, `fetchPersonsByDistinctIds`,
 * `fetchPersonsByPersonIds`, `fetchPersonByUuid`) that returned at least one person is read
 * again from the new table alone, by the `(team_id, id)` keys it returned, after the caller has
 * its answer (never awaited by the read, never changing its answer), in a read-only
 * transaction bounded by `timeoutMs` (`statement_timeout` on the server and a timer in the
 * process). Keys present in the merged answer but missing or different in the new table are
 * emitted as `read:shadow-mismatch` (keys only, never row values); errors and timeouts as
 * `read:shadow-failed`. Counts are in `repository.readStats()`. At most 4 shadow reads run at
 * once per repository; sampled reads beyond that are skipped (counted in `shadow.skipped`).
 *
 * - `sampleRate`: fraction of reads compared, from 0 (none) to 1 (every read).
 * - `timeoutMs`: integer from 1 to 60000, default 200.
 *
 * @example
 * ```ts
 * const migration = createPersonsMigration({ db, shadowReads: { sampleRate: 0.01, timeoutMs: 200 } });
 * migration.events.on('read:shadow-mismatch', ({ method, keys }) =>
 *   log.warn({ method, keys }, 'new table disagrees with the merged read'),
 * );
 * ```
 */
export type ShadowReadsOptions = z.input<typeof shadowReadsSchema>;

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

/** @internal */
export function resolveMigrationOptions(input: unknown): ResolvedMigrationOptions {
  return parseOptions(migrationOptionsSchema, input, 'createPersonsMigration()');
}

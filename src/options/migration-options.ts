import { basename } from 'node:path';
import type { MeterProvider } from '@opentelemetry/api';
import { z } from 'zod';
import { identifier, integerIn, parseOptions, schemaName } from '../util/parse-options.js';
import { databaseHandle } from './database-handle-option.js';

// Off by default: a shadow read costs a second query (its own transaction) per sampled read.
const shadowReadsSchema = z
  .object(
    {
      /** Fraction of reads compared, from 0 (none) to 1 (every read). */
      sampleRate: z
        .number({ error: 'shadowReads.sampleRate must be a number from 0 to 1' })
        .min(0, { error: 'shadowReads.sampleRate must be a number from 0 to 1' })
        .max(1, { error: 'shadowReads.sampleRate must be a number from 0 to 1' }),
      /** Time bound of one shadow read, in ms, from 1 to 60000 (default 200). */
      timeoutMs: integerIn('shadowReads.timeoutMs', 1, 60_000).default(200),
    },
    { error: 'shadowReads must be an object { sampleRate, timeoutMs? }' },
  )
  .strict()
  .transform((value) => Object.freeze(value));

// Duck-typed: any copy of @opentelemetry/api (or an SDK's own provider) will do.
const meterProviderSchema = z.custom<MeterProvider>(
  (value) =>
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { getMeter?: unknown }).getMeter === 'function',
  { error: 'meterProvider must be an OpenTelemetry MeterProvider (an object with getMeter())' },
);

// Every option but the database handle: the CLI checks them before it connects.
const tableOptionsShape = {
  /** The migration's name, one control row each (default `persons`). */
  name: identifier('name').default('persons'),
  /** Schema of the persons tables (default `public`). */
  schema: schemaName('schema').default('public'),
  /** Schema of the library's control tables (default `dual_read`). */
  controlSchema: schemaName('controlSchema').default('dual_read'),
  /** The table persons move from (default `posthog_person`). */
  oldTable: identifier('oldTable').default('posthog_person'),
  /** The table persons move to, created by `prepare()` (default `posthog_person_new`). */
  newTable: identifier('newTable').default('posthog_person_new'),
  /** The distinct ids table (default `posthog_persondistinctid`). */
  distinctIdsTable: identifier('distinctIdsTable').default('posthog_persondistinctid'),
  /** Fallback re-read of the phase when no notification comes, in ms (default 1000). */
  phaseRefreshIntervalMs: integerIn('phaseRefreshIntervalMs', 50, 600_000).default(1_000),
  /**
   * How long a phase change waits for in-flight writes, and `prepare()` for a lock another
   * session holds on the tables, in ms (default 10000).
   */
  phaseChangeLockTimeoutMs: integerIn('phaseChangeLockTimeoutMs', 1, 600_000).default(10_000),
  /**
   * How long a write waits for the phase fence, in ms (default 15000); then it throws
   * `PhaseFenceTimeoutError`, nothing written.
   */
  writeFenceTimeoutMs: integerIn('writeFenceTimeoutMs', 1, 600_000).default(15_000),
  /** How this service's instances appear in the client registry (default: the script's name). */
  serviceName: z
    .string({ error: 'serviceName must be a string' })
    .min(1, { error: 'serviceName must not be empty' })
    .max(200, { error: 'serviceName must be at most 200 characters' })
    .default(() => basename(process.argv[1] ?? 'node')),
  /**
   * How often a repository instance refreshes its registry row, in ms (default 5000); three
   * missed and it counts as dead.
   */
  heartbeatIntervalMs: integerIn('heartbeatIntervalMs', 100, 600_000).default(5_000),
  /**
   * Compare sampled merged reads with the new table alone (default off): see
   * {@link ShadowReadsOptions}.
   */
  shadowReads: shadowReadsSchema.optional(),
};

/** The three tables must be three different tables. */
function distinctTables<
  T extends z.ZodType<{ oldTable: string; newTable: string; distinctIdsTable: string }>,
>(schema: T): T {
  return schema
    .refine((o) => o.oldTable !== o.newTable, {
      error: 'newTable must differ from oldTable',
      path: ['newTable'],
    })
    .refine((o) => o.distinctIdsTable !== o.oldTable && o.distinctIdsTable !== o.newTable, {
      error: 'distinctIdsTable must differ from oldTable and newTable',
      path: ['distinctIdsTable'],
    });
}

const migrationOptionsSchema = distinctTables(
  z
    .object({
      /** The database, from `openDatabase()` (required). */
      db: databaseHandle,
      /**
       * The OpenTelemetry `MeterProvider` the migration records its metrics with. Default: the
       * global one of `@opentelemetry/api` when the migration is created (a no-op without an SDK).
       */
      meterProvider: meterProviderSchema.optional(),
      ...tableOptionsShape,
    })
    .strict(),
);

const migrationOptionsWithoutDbSchema = distinctTables(z.object(tableOptionsShape).strict());

/**
 * Options of {@link createPersonsMigration}. Only `db` is required.
 *
 * `meterProvider`: the OpenTelemetry `MeterProvider` the migration records its metrics with
 * (see the README's Metrics section). Default: the global one of `@opentelemetry/api`, as it
 * is when the migration is created; without an SDK installed it is a no-op and the migration
 * records nothing.
 *
 * @example
 * ```ts
 * const options: PersonsMigrationOptions = {
 *   db: await openDatabase(process.env.DATABASE_URL),
 *   oldTable: 'posthog_person',
 *   newTable: 'posthog_person_new',
 * };
 * ```
 *
 * @useDeclaredType
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
 *
 * @useDeclaredType
 */
export type ShadowReadsOptions = z.input<typeof shadowReadsSchema>;

/** Options after validation and defaults, frozen. @internal */
export type ResolvedMigrationOptions = Readonly<z.output<typeof migrationOptionsSchema>>;

/** @internal */
export function resolveMigrationOptions(input: unknown): ResolvedMigrationOptions {
  return parseOptions(migrationOptionsSchema, input, 'createPersonsMigration()');
}

/**
 * Checks every option of {@link createPersonsMigration} but `db`, with the same schema and
 * messages, without a database: the CLI refuses a bad flag before it connects. @internal
 *
 * @example
 * ```ts
 * checkMigrationOptionsWithoutDb({ newTable: 'x'.repeat(64) }); // throws InvalidOptionsError
 * ```
 */
export function checkMigrationOptionsWithoutDb(input: unknown): void {
  parseOptions(migrationOptionsWithoutDbSchema, input, 'createPersonsMigration()');
}

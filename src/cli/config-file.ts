/**
 * The CLI's `--config <file>`: the tables, schema, migration name and command defaults an
 * operator would otherwise repeat on every command line. Validated in full before anything
 * runs; an error names the field, never its value. A database URL is refused in the file (files
 * get committed and copied): the file names the environment variable that holds it.
 * @internal
 */
import { z } from 'zod';
import { InvalidOptionsError } from '../errors.js';
import { resolveBackfillOptions } from '../options/backfill-options.js';
import { resolveFinalizeOptions } from '../options/cutover-options.js';
import { checkMigrationOptionsWithoutDb } from '../options/migration-options.js';
import { resolveVerifyOptions } from '../options/verify-options.js';
import { UsageError } from './usage.js';

const section = <T extends z.ZodRawShape>(shape: T) => z.object(shape).strict().optional();
const text = z.string().min(1);
const count = z.number();

const configSchema = z
  .object({
    /** Editors' JSON schema pointer: allowed, ignored. */
    $schema: z.string().optional(),
    /** The environment variable that holds the database URL (never the URL itself). */
    databaseUrlEnv: z
      .string()
      .regex(
        /^[A-Za-z_][A-Za-z0-9_]*$/,
        'must be an environment variable name, e.g. PERSONS_DATABASE_URL',
      )
      .optional(),
    migration: section({
      name: text.optional(),
      schema: text.optional(),
      controlSchema: text.optional(),
      oldTable: text.optional(),
      newTable: text.optional(),
      distinctIdsTable: text.optional(),
    }),
    backfill: section({
      workers: count.optional(),
      batchSize: count.optional(),
      maxBatchSize: count.optional(),
      targetBatchMs: count.optional(),
      maxRowsPerSecond: count.optional(),
      ranges: count.optional(),
      leaseMs: count.optional(),
      maxReplicationLagMs: count.optional(),
      lockMode: z.enum(['ranges', 'rows']).optional(),
      workerId: text.optional(),
    }),
    verify: section({
      method: z.enum(['join', 'checksum']).optional(),
      columns: z.array(text).optional(),
      maxKeys: count.optional(),
      distinctIds: z.boolean().optional(),
    }),
    /** Defaults of cutover, rollback and finalize. */
    lifecycle: section({
      actor: text.optional(),
      lockTimeoutMs: count.optional(),
      timeoutMs: count.optional(),
    }),
  })
  .strict();

/**
 * A validated config file (see `pg-dual-read.example.json` in the README's CLI section).
 *
 * @example
 * ```ts
 * const config = parseCliConfig('pg-dual-read.json', readFileSync('pg-dual-read.json', 'utf8'));
 * config.migration?.oldTable; // 'posthog_person'
 * ```
 * @internal
 */
export type CliConfig = Readonly<Omit<z.output<typeof configSchema>, '$schema'>>;

/**
 * Parses and validates a config file's text. Throws {@link UsageError} (exit 2) naming the file
 * and the field: not JSON, an unknown field, a wrong type, a value the library refuses, or a
 * database URL anywhere in it (its value is never echoed: it may hold a password).
 *
 * @example
 * ```ts
 * parseCliConfig('pg-dual-read.json', '{"backfill": {"workers": "4"}}');
 * // UsageError: pg-dual-read.json: backfill.workers: expected number, received string
 * ```
 * @internal
 */
export function parseCliConfig(file: string, content: string): CliConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(content);
  } catch {
    throw new UsageError(`${file}: not valid JSON`);
  }
  const url = findUrl(raw, '');
  if (url !== undefined) {
    throw new UsageError(
      `${file}: ${url || '(top level)'}: holds a database URL; config files get committed and copied. ` +
        'Put the URL in an environment variable and name it in "databaseUrlEnv".',
    );
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const keys = issue && 'keys' in issue ? (issue.keys as string[]) : [];
    const path = [...(issue?.path ?? []), ...keys.slice(0, 1)].join('.') || '(top level)';
    const message =
      issue?.code === 'unrecognized_keys'
        ? 'unknown field (see pg-dual-read help for the fields a config file takes)'
        : (issue?.message ?? 'invalid');
    throw new UsageError(`${file}: ${path}: ${message}`);
  }
  const { $schema: _ignored, ...config } = parsed.data;
  checkWithLibrary(file, config);
  return config;
}

/** The library's own checks of each section (ranges, lengths), reported against the file. */
function checkWithLibrary(file: string, config: CliConfig): void {
  const checks: [string, () => unknown][] = [
    ['migration', () => checkMigrationOptionsWithoutDb(config.migration ?? {})],
    ['backfill', () => resolveBackfillOptions(config.backfill ?? {})],
    ['verify', () => resolveVerifyOptions(config.verify ?? {})],
    ['lifecycle', () => resolveFinalizeOptions(config.lifecycle ?? {})],
  ];
  for (const [name, check] of checks) {
    try {
      check();
    } catch (error) {
      if (!(error instanceof InvalidOptionsError)) throw error;
      const issue = error.issues[0];
      throw new UsageError(
        `${file}: ${name}.${issue?.path ?? ''}: ${issue?.message ?? error.message}`,
      );
    }
  }
}

/** The path of the first string that looks like a URL with a scheme, or of a `*url` key. */
function findUrl(value: unknown, path: string): string | undefined {
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? path : undefined;
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const found = findUrl(item, `${path}[${i}]`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      const at = path ? `${path}.${key}` : key;
      if (/url$/i.test(key) && key !== 'databaseUrlEnv') return at;
      const found = findUrl(item, at);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/**
 * The database URL: `--database-url`, else the variable the config file names (which must be
 * set), else `DATABASE_URL`.
 *
 * @example
 * ```ts
 * databaseUrlOf(undefined, { databaseUrlEnv: 'PERSONS_DB' }, process.env, 'pg-dual-read.json');
 * ```
 * @internal
 */
export function databaseUrlOf(
  flag: string | undefined,
  config: CliConfig | undefined,
  env: Readonly<Record<string, string | undefined>>,
  file: string | undefined,
): string | undefined {
  if (flag !== undefined) return flag;
  const name = config?.databaseUrlEnv;
  if (name !== undefined) {
    const value = env[name];
    if (value === undefined || value.trim() === '') {
      throw new UsageError(
        `${file}: databaseUrlEnv: the environment variable ${name} is not set; set it to the database URL`,
      );
    }
    return value;
  }
  const fallback = env.DATABASE_URL;
  return fallback === undefined || fallback.trim() === '' ? undefined : fallback;
}

/** The option groups of a parsed command line a config file gives defaults to. @internal */
export interface ConfigurableOptions {
  readonly migration: object;
  readonly backfill: object;
  readonly verify: object;
  readonly lifecycle: object;
}

/**
 * `flags` with the config file's values under them: a flag always wins. Each command takes the
 * sections it uses (`backfill` its defaults, `verify` its own, the lifecycle commands the
 * `actor`, `finalize` its timeouts), so a config file never hands a command an option it
 * refuses.
 *
 * @example
 * ```ts
 * withConfigDefaults('backfill', { migration: {}, backfill: { workers: 8 }, verify: {}, lifecycle: {} }, config);
 * // backfill: { ...config.backfill, workers: 8 }
 * ```
 * @internal
 */
export function withConfigDefaults<T extends ConfigurableOptions>(
  command: string,
  flags: T,
  config: CliConfig | undefined,
): T {
  if (!config) return flags;
  const { actor, lockTimeoutMs, timeoutMs } = config.lifecycle ?? {};
  const lifecycle = {
    ...(['cutover', 'rollback', 'finalize'].includes(command) && actor !== undefined
      ? { actor }
      : {}),
    ...(command === 'finalize' ? definedOnly({ lockTimeoutMs, timeoutMs }) : {}),
  };
  return {
    ...flags,
    migration: { ...definedOnly(config.migration ?? {}), ...flags.migration },
    backfill:
      command === 'backfill'
        ? { ...definedOnly(config.backfill ?? {}), ...flags.backfill }
        : flags.backfill,
    verify:
      command === 'verify'
        ? { ...definedOnly(config.verify ?? {}), ...flags.verify }
        : flags.verify,
    lifecycle: { ...lifecycle, ...flags.lifecycle },
  } as T;
}

function definedOnly(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
}

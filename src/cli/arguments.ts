/**
 * Turns the command line into a {@link CliInvocation}: which command, which database, which
 * migration options. Only the shape of the command line is checked here; the values
 * themselves (identifier lengths, the partition range) are validated by the library, whose
 * messages name the option.
 * @internal
 */
import { parseArgs } from 'node:util';
import type { PersonsMigrationOptions } from '../migration/options.js';
import { UsageError } from './usage.js';

/** The commands the CLI knows. @internal */
export const commandNames = ['install', 'prepare', 'start-dual-read', 'status', 'help'] as const;

/** One of {@link commandNames}. @internal */
export type CommandName = (typeof commandNames)[number];

/** The migration options the command line can set (everything but `db`). @internal */
export type CliMigrationOptions = Omit<PersonsMigrationOptions, 'db'>;

/**
 * A parsed command line.
 *
 * @example
 * ```ts
 * const invocation = parseCliArguments(['status', '--json'], { DATABASE_URL: 'pglite://./data' });
 * // { command: 'status', databaseUrl: 'pglite://./data', json: true, migration: {}, ... }
 * ```
 * @internal
 */
export interface CliInvocation {
  readonly command: CommandName;
  /** From `--database-url`, else `DATABASE_URL`; undefined only for `help`. */
  readonly databaseUrl: string | undefined;
  readonly migration: CliMigrationOptions;
  /** `prepare --partitions N`. */
  readonly partitions: number | undefined;
  /** `status --json`. */
  readonly json: boolean;
}

// Flag -> option of createPersonsMigration().
const migrationFlags = {
  name: 'name',
  schema: 'schema',
  'control-schema': 'controlSchema',
  'old-table': 'oldTable',
  'new-table': 'newTable',
  'distinct-ids-table': 'distinctIdsTable',
} as const satisfies Record<string, keyof CliMigrationOptions>;

/**
 * The command-line flag that sets a library option, e.g. `controlSchema` -> `--control-schema`,
 * for pointing at the flag when the library rejects a value.
 *
 * @example
 * ```ts
 * flagFor('partitions'); // '--partitions'
 * ```
 * @internal
 */
export function flagFor(optionPath: string): string | undefined {
  if (optionPath === 'partitions') return '--partitions';
  const entry = Object.entries(migrationFlags).find(([, option]) => option === optionPath);
  return entry ? `--${entry[0]}` : undefined;
}

const parseOptions = {
  'database-url': { type: 'string' },
  partitions: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  name: { type: 'string' },
  schema: { type: 'string' },
  'control-schema': { type: 'string' },
  'old-table': { type: 'string' },
  'new-table': { type: 'string' },
  'distinct-ids-table': { type: 'string' },
} as const satisfies Record<string, { type: 'string' | 'boolean'; short?: string }>;

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    options: parseOptions,
    allowPositionals: true,
    strict: true,
  });
}

/**
 * Parses `argv` (without the `node` and script entries). Throws {@link UsageError} for an
 * unknown command or option, a missing value, an option the command does not take, or no
 * database to connect to.
 *
 * @example
 * ```ts
 * parseCliArguments(['prepare', '--partitions', '8', '--database-url', url], process.env);
 * ```
 * @internal
 */
export function parseCliArguments(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): CliInvocation {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    // node's messages name the option ("Unknown option '--foo'"); drop its long advice.
    throw new UsageError((error as Error).message.split('. To specify')[0] ?? 'invalid arguments');
  }
  const { values, positionals } = parsed;
  const [first, ...rest] = positionals;
  if (values.help || first === 'help') return helpInvocation();
  if (first === undefined) throw new UsageError('no command given', true);
  if (!isCommand(first)) {
    // The argument itself is not echoed: it may be a mistyped URL with a password.
    throw new UsageError(`unknown command (expected one of: ${commandNames.join(', ')})`, true);
  }
  if (rest.length > 0) {
    throw new UsageError(`${first} takes no positional arguments, only --options`);
  }
  if (values.partitions !== undefined && first !== 'prepare') {
    throw new UsageError('--partitions only applies to the prepare command');
  }
  if (values.json && first !== 'status') {
    throw new UsageError('--json only applies to the status command');
  }

  let partitions: number | undefined;
  if (values.partitions !== undefined) {
    if (!/^\d+$/.test(values.partitions.trim())) {
      throw new UsageError('--partitions must be a whole number (partitions of the new table)');
    }
    partitions = Number(values.partitions);
  }

  const migration: Record<string, string> = {};
  for (const [flag, option] of Object.entries(migrationFlags)) {
    const value = values[flag as keyof typeof migrationFlags];
    if (value !== undefined) migration[option] = value;
  }

  const databaseUrl = values['database-url'] ?? nonEmpty(env.DATABASE_URL);
  if (databaseUrl === undefined) {
    throw new UsageError('no database: pass --database-url or set DATABASE_URL');
  }
  return {
    command: first,
    databaseUrl,
    migration: migration as CliMigrationOptions,
    partitions,
    json: values.json ?? false,
  };
}

function helpInvocation(): CliInvocation {
  return {
    command: 'help',
    databaseUrl: undefined,
    migration: {},
    partitions: undefined,
    json: false,
  };
}

function isCommand(value: string): value is CommandName {
  return (commandNames as readonly string[]).includes(value);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

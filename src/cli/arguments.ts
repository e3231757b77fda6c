/**
 * Turns the command line into a {@link CliInvocation}: which command, which database, which
 * migration, backfill and verify options. Only the shape of the command line is checked here; the
 * values themselves (identifier lengths, the partition range, the backfill's ranges) are
 * validated by the library's own schemas before the CLI connects (`runCli`), whose messages
 * name the option ({@link flagFor} points back at the flag).
 * @internal
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { BackfillOptions } from '../options/backfill-options.js';
import type { PersonsMigrationOptions } from '../options/migration-options.js';
import type { VerifyOptions } from '../options/verify-options.js';
import {
  type CliConfig,
  databaseUrlOf,
  parseCliConfig,
  withConfigDefaults,
} from './config-file.js';
import { UsageError } from './usage.js';

/** The commands the CLI knows. @internal */
export const commandNames = [
  'install',
  'prepare',
  'start-dual-read',
  'backfill',
  'backfill-pause',
  'backfill-resume',
  'backfill-rate',
  'verify',
  'status',
  'grants',
  'cutover',
  'rollback',
  'finalize',
  'drop-retired',
  'clients',
  'help',
] as const;

/** One of {@link commandNames}. @internal */
export type CommandName = (typeof commandNames)[number];

/** The migration options the command line can set (everything but `db`). @internal */
export type CliMigrationOptions = Omit<PersonsMigrationOptions, 'db'>;

/** The `backfill()` options the command line can set (everything but `signal`). @internal */
export type CliBackfillOptions = Omit<BackfillOptions, 'signal'>;

/**
 * The `verify()` options the command line can set: `method`, `columns`, `ranges`, `repair`,
 * `maxKeys`, `distinctIds`. @internal
 */
export type CliVerifyOptions = Pick<
  VerifyOptions,
  'method' | 'columns' | 'ranges' | 'repair' | 'maxKeys' | 'distinctIds'
>;

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
  /** `prepare --dry-run`. */
  readonly dryRun: boolean;
  /** `status --json`, `verify --json`, `backfill --json`. */
  readonly json: boolean;
  /** `status --watch`: redraw the status until Ctrl-C. */
  readonly watch: boolean;
  /** `status --watch --interval-ms N`; undefined: the default (the CLI checks the value). */
  readonly intervalMs: number | undefined;
  /** `backfill --workers N ...`: only the flags given (the library applies its defaults). */
  readonly backfill: CliBackfillOptions;
  /** `backfill-rate <N|none>`: rows per second, `null` for none; undefined for other commands. */
  readonly rate: number | null | undefined;
  /** `verify --method M --columns a,b ...`: only the flags given (the library's defaults apply). */
  readonly verify: CliVerifyOptions;
  /** `grants --role NAME`: the runtime role; undefined for other commands. */
  readonly role: string | undefined;
  /**
   * `cutover`, `rollback`, `finalize`, `drop-retired`: only the flags given (`--force`,
   * `--actor`, `--waive-index a,b`, `--lock-timeout-ms`, `--timeout-ms`, `--confirm`).
   */
  readonly lifecycle: CliLifecycleOptions;
}

/** The options of the lifecycle commands the command line can set. @internal */
export interface CliLifecycleOptions {
  readonly force?: boolean;
  readonly actor?: string;
  readonly waiveIndexes?: string[];
  readonly lockTimeoutMs?: number;
  readonly timeoutMs?: number;
  readonly confirm?: string;
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

// Numeric flag -> option of migration.backfill().
const backfillNumberFlags = {
  workers: 'workers',
  'batch-size': 'batchSize',
  'max-batch-size': 'maxBatchSize',
  'target-batch-ms': 'targetBatchMs',
  'max-rows-per-second': 'maxRowsPerSecond',
  ranges: 'ranges',
  'lease-ms': 'leaseMs',
  'max-replication-lag-ms': 'maxReplicationLagMs',
} as const satisfies Record<string, keyof CliBackfillOptions>;

type BackfillNumberFlag = keyof typeof backfillNumberFlags;

// Flag -> option of migration.verify(). `--ranges` is shared with backfill, where it is a
// count; for verify it lists backfill range ids.
const verifyFlags = {
  method: 'method',
  columns: 'columns',
  ranges: 'ranges',
  repair: 'repair',
  'max-keys': 'maxKeys',
  'no-distinct-ids': 'distinctIds',
} as const satisfies Record<string, keyof CliVerifyOptions>;

/**
 * The command-line flag that sets a library option, e.g. `controlSchema` -> `--control-schema`,
 * `batchSize` -> `--batch-size`, for pointing at the flag when the library rejects a value.
 * For `backfill-rate`, whose value is an argument, `maxRowsPerSecond` points at that argument.
 *
 * @example
 * ```ts
 * flagFor('partitions'); // '--partitions'
 * flagFor('batchSize'); // '--batch-size'
 * flagFor('maxRowsPerSecond', 'backfill-rate'); // 'the argument of backfill-rate'
 * flagFor('ranges.0', 'verify'); // '--ranges'
 * ```
 * @internal
 */
export function flagFor(optionPath: string, command?: CommandName): string | undefined {
  if (optionPath === 'partitions') return '--partitions';
  if (optionPath === 'workerId') return '--worker-id';
  if (optionPath === 'lockMode') return '--lock-mode';
  if (optionPath === 'intervalMs') return '--interval-ms';
  if (command === 'backfill-rate' && optionPath === 'maxRowsPerSecond') {
    return 'the argument of backfill-rate';
  }
  if (command === 'verify') {
    // An element of a list option comes as `ranges.0`: the flag is that of the list.
    const option = optionPath.split('.')[0];
    const entry = Object.entries(verifyFlags).find(([, o]) => o === option);
    if (entry) return `--${entry[0]}`;
  }
  const flags: Record<string, string> = { ...migrationFlags, ...backfillNumberFlags };
  const entry = Object.entries(flags).find(([, option]) => option === optionPath);
  return entry ? `--${entry[0]}` : undefined;
}

const parseOptions = {
  'database-url': { type: 'string' },
  config: { type: 'string' },
  partitions: { type: 'string' },
  'dry-run': { type: 'boolean' },
  json: { type: 'boolean' },
  watch: { type: 'boolean' },
  'interval-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  name: { type: 'string' },
  schema: { type: 'string' },
  'control-schema': { type: 'string' },
  'old-table': { type: 'string' },
  'new-table': { type: 'string' },
  'distinct-ids-table': { type: 'string' },
  workers: { type: 'string' },
  'batch-size': { type: 'string' },
  'max-batch-size': { type: 'string' },
  'target-batch-ms': { type: 'string' },
  'max-rows-per-second': { type: 'string' },
  ranges: { type: 'string' },
  'lease-ms': { type: 'string' },
  'max-replication-lag-ms': { type: 'string' },
  'lock-mode': { type: 'string' },
  'worker-id': { type: 'string' },
  method: { type: 'string' },
  columns: { type: 'string' },
  repair: { type: 'boolean' },
  'max-keys': { type: 'string' },
  'no-distinct-ids': { type: 'boolean' },
  role: { type: 'string' },
  force: { type: 'boolean' },
  actor: { type: 'string' },
  'waive-index': { type: 'string' },
  'lock-timeout-ms': { type: 'string' },
  'timeout-ms': { type: 'string' },
  confirm: { type: 'string' },
} as const satisfies Record<string, { type: 'string' | 'boolean'; short?: string }>;

// Flags that only some commands take.
const commandsOfFlag: Partial<Record<keyof typeof parseOptions, readonly CommandName[]>> = {
  partitions: ['prepare'],
  'dry-run': ['prepare'],
  json: ['status', 'verify', 'clients', 'backfill'],
  watch: ['status'],
  'interval-ms': ['status'],
  'worker-id': ['backfill'],
  'lock-mode': ['backfill'],
  ...Object.fromEntries(Object.keys(backfillNumberFlags).map((flag) => [flag, ['backfill']])),
  ...Object.fromEntries(Object.keys(verifyFlags).map((flag) => [flag, ['verify']])),
  ranges: ['backfill', 'verify'],
  role: ['grants'],
  force: ['cutover', 'finalize'],
  actor: ['cutover', 'rollback', 'finalize'],
  'waive-index': ['cutover'],
  'lock-timeout-ms': ['finalize'],
  'timeout-ms': ['finalize'],
  confirm: ['drop-retired'],
};

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
 * unknown command or option, a missing or non-numeric value, an option the command does not
 * take, or no database to connect to.
 *
 * @example
 * ```ts
 * parseCliArguments(['prepare', '--partitions', '8', '--database-url', url], process.env);
 * parseCliArguments(['backfill', '--workers', '4'], process.env).backfill; // { workers: 4 }
 * parseCliArguments(['backfill-rate', 'none'], process.env).rate; // null
 * parseCliArguments(['verify', '--ranges', '1,2', '--repair'], process.env).verify;
 * // { ranges: [1, 2], repair: true }
 * ```
 * @internal
 */
export function parseCliArguments(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): CliInvocation {
  let parsed: ParsedArgs;
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
  refuseFlagsOfOtherCommands(values, first);
  const rate = rateArgument(first, rest);
  if (first === 'grants' && values.role === undefined) {
    throw new UsageError('grants needs --role NAME: the role services and workers run as');
  }
  if (first === 'drop-retired' && values.confirm === undefined) {
    throw new UsageError('drop-retired needs --confirm NAME: the retired table status shows');
  }
  const configFile = values.config;
  const config = configFile === undefined ? undefined : readConfig(configFile, readFile);
  const databaseUrl = databaseUrlOf(values['database-url'], config, env, configFile);
  if (databaseUrl === undefined) {
    throw new UsageError(
      'no database: pass --database-url or set DATABASE_URL (or name a variable in --config: databaseUrlEnv)',
    );
  }
  const configurable = withConfigDefaults(
    first,
    {
      migration: migrationOptionsOf(values),
      backfill: first === 'backfill' ? backfillOptionsOf(values) : {},
      verify: first === 'verify' ? verifyOptionsOf(values) : {},
      lifecycle: lifecycleOptionsOf(values),
    },
    config,
  );
  return {
    command: first,
    databaseUrl,
    ...configurable,
    partitions: partitionsOf(values),
    dryRun: values['dry-run'] ?? false,
    json: values.json ?? false,
    watch: values.watch ?? false,
    intervalMs: intervalOf(values),
    rate,
    role: values.role,
  };
}

/** Reads and validates `--config FILE` (exit 2 naming the file, and the field, when it is bad). */
function readConfig(file: string, readFile: (path: string) => string): CliConfig {
  let content: string;
  try {
    content = readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new UsageError(`${file}: cannot read the config file (${code})`);
  }
  return parseCliConfig(file, content);
}

/** `--interval-ms N` (only with `--watch`); its range is checked before connecting. */
function intervalOf(values: FlagValues): number | undefined {
  if (values['interval-ms'] === undefined) return undefined;
  if (!values.watch) throw new UsageError('--interval-ms only applies to status --watch');
  return parseNumber('--interval-ms', values['interval-ms']);
}

function lifecycleOptionsOf(values: FlagValues): CliLifecycleOptions {
  // The library checks the values, naming the option.
  const options: Record<string, unknown> = {};
  if (values.force) options.force = true;
  if (values.actor !== undefined) options.actor = values.actor;
  if (values['waive-index'] !== undefined) options.waiveIndexes = parseList(values['waive-index']);
  if (values['lock-timeout-ms'] !== undefined) {
    options.lockTimeoutMs = parseNumber('--lock-timeout-ms', values['lock-timeout-ms']);
  }
  if (values['timeout-ms'] !== undefined) {
    options.timeoutMs = parseNumber('--timeout-ms', values['timeout-ms']);
  }
  if (values.confirm !== undefined) options.confirm = values.confirm;
  return options as CliLifecycleOptions;
}

type ParsedArgs = ReturnType<typeof parse>;
type FlagValues = ParsedArgs['values'];

function refuseFlagsOfOtherCommands(values: FlagValues, command: CommandName): void {
  for (const [flag, commands] of Object.entries(commandsOfFlag)) {
    if (values[flag as keyof typeof values] !== undefined && !commands.includes(command)) {
      const which = commands.map((c) => `the ${c} command`).join(' and ');
      throw new UsageError(`--${flag} only applies to ${which}`);
    }
  }
}

/** `backfill-rate <N|none>`'s argument; any other command takes no positional argument. */
function rateArgument(command: CommandName, rest: readonly string[]): number | null | undefined {
  if (command !== 'backfill-rate') {
    if (rest.length > 0) {
      throw new UsageError(`${command} takes no positional arguments, only --options`);
    }
    return undefined;
  }
  if (rest.length !== 1 || rest[0] === undefined) {
    throw new UsageError(
      'backfill-rate takes one argument: the rows-per-second ceiling, or none to remove it',
    );
  }
  return parseRate(rest[0]);
}

function partitionsOf(values: FlagValues): number | undefined {
  if (values.partitions === undefined) return undefined;
  if (!/^\d+$/.test(values.partitions.trim())) {
    throw new UsageError('--partitions must be a whole number (partitions of the new table)');
  }
  return Number(values.partitions);
}

function migrationOptionsOf(values: FlagValues): CliMigrationOptions {
  const migration: Record<string, string> = {};
  for (const [flag, option] of Object.entries(migrationFlags)) {
    const value = values[flag as keyof typeof migrationFlags];
    if (value !== undefined) migration[option] = value;
  }
  return migration as CliMigrationOptions;
}

function backfillOptionsOf(values: FlagValues): CliBackfillOptions {
  const backfill: Record<string, string | number> = {};
  for (const [flag, option] of Object.entries(backfillNumberFlags)) {
    const value = values[flag as BackfillNumberFlag];
    if (value !== undefined) backfill[option] = parseNumber(`--${flag}`, value);
  }
  if (values['worker-id'] !== undefined) backfill.workerId = values['worker-id'];
  // The library checks the value ('ranges' or 'rows'), naming the option.
  if (values['lock-mode'] !== undefined) backfill.lockMode = values['lock-mode'];
  return backfill as CliBackfillOptions;
}

function verifyOptionsOf(values: FlagValues): CliVerifyOptions {
  // The library checks the values (method name, column names, range ids, maxKeys range).
  const verify: Record<string, unknown> = {};
  if (values.method !== undefined) verify.method = values.method;
  if (values.columns !== undefined) verify.columns = parseList(values.columns);
  if (values.ranges !== undefined) verify.ranges = parseRangeIds(values.ranges);
  if (values.repair) verify.repair = true;
  if (values['max-keys'] !== undefined) {
    verify.maxKeys = parseNumber('--max-keys', values['max-keys']);
  }
  if (values['no-distinct-ids']) verify.distinctIds = false;
  return verify as CliVerifyOptions;
}

// A number as written; its range (and being whole) is the library's to check, so that the
// message is the library's, naming the option.
const decimal = /^[+-]?\d+(\.\d+)?$/;

function parseNumber(flag: string, value: string): number {
  if (!decimal.test(value.trim())) throw new UsageError(`${flag} must be a number`);
  return Number(value);
}

// `a,b` -> ['a', 'b']; spaces around names are dropped, and so are empty entries, so that
// `--columns ''` reaches the library as an empty list (which it refuses, naming columns).
function parseList(value: string): string[] {
  return value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

function parseRangeIds(value: string): number[] {
  const parts = parseList(value);
  if (parts.some((part) => !decimal.test(part))) {
    throw new UsageError('--ranges must list backfill range ids separated by commas, e.g. 1,2');
  }
  return parts.map(Number);
}

function parseRate(value: string): number | null {
  if (value.trim().toLowerCase() === 'none') return null;
  if (!decimal.test(value.trim())) {
    // Not echoed, like an unknown command.
    throw new UsageError(
      'backfill-rate takes a whole number of rows per second, or none to remove the ceiling',
    );
  }
  return Number(value);
}

function helpInvocation(): CliInvocation {
  return {
    command: 'help',
    databaseUrl: undefined,
    migration: {},
    partitions: undefined,
    dryRun: false,
    json: false,
    watch: false,
    intervalMs: undefined,
    backfill: {},
    rate: undefined,
    verify: {},
    role: undefined,
    lifecycle: {},
  };
}

function isCommand(value: string): value is CommandName {
  return (commandNames as readonly string[]).includes(value);
}

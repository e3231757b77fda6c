/**
 * Bad CLI flags (issue 13, item 7, and the CLI part of "bad input fuzzed"): every flag is
 * checked with the library's own schemas before the CLI connects, so a bad one exits 2 at
 * once, naming the flag, even when the database cannot be reached; and hostile names that
 * are valid reach the database only quoted, ending in a typed error that changes nothing.
 * The fuzzing runs in-process (runCli) with fixed seeds and run counts.
 */
import { createServer, type Server, type Socket } from 'node:net';
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { createPersonsMigration } from '../../src/index.js';
import { catalogSnapshot } from '../support/catalog-snapshot.js';
import { runCliInProcess } from '../support/cli.js';
import {
  describeOnRealServer,
  dropSchemas,
  openDatabaseForTest,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

const cli = runCliInProcess;

/**
 * A TCP server that accepts connections and never answers: a client connecting to it waits
 * for its whole connect timeout (10 s). `connections` counts who tried.
 */
async function blackHole(): Promise<{
  url: string;
  connections(): number;
  close(): Promise<void>;
}> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    connections: () => connections,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const hostileStart = fc.constantFrom(
  '"',
  "'",
  '.',
  ';',
  ' ',
  'é',
  '✓',
  '🦔',
  'DROP TABLE x;--',
  '',
);

/** A name over 63 bytes: up to 10,000 characters, any Unicode, hostile characters first. */
const tooLongName = fc
  .tuple(hostileStart, fc.string({ unit: 'binary', minLength: 64, maxLength: 10_000 }))
  .map(([start, rest]) => start + rest);

/** A name no table flag accepts: empty, over 63 bytes, with NUL, or a reserved pg_ schema. */
const badName = fc.oneof(
  tooLongName,
  fc.constant(''),
  fc.string({ maxLength: 20 }).map((s) => `${s}\u0000${s}`),
);

/**
 * A numeric flag's value that no numeric flag accepts: not a decimal number, negative, not
 * whole, or above 2^53 (and so above every flag's maximum).
 */
const badNumber = fc.oneof(
  fc.constantFrom('', ' ', 'many', '1e400', '-1', '0.5', 'NaN', 'Infinity', '0x10', '1_000'),
  fc.bigInt({ min: 10n ** 17n, max: 10n ** 400n }).map(String),
  fc.bigInt({ min: -(10n ** 30n), max: -1n }).map(String),
  fc.string({ minLength: 1, maxLength: 10_000 }).filter((s) => !/^\s*[+-]?\d+(\.\d+)?\s*$/.test(s)),
  fc.integer({ min: 17, max: 10_000 }).map((n) => '9'.repeat(n)),
);

type Case = { readonly argv: readonly string[]; readonly names: string };

const tableFlag = fc.constantFrom(
  '--name',
  '--schema',
  '--control-schema',
  '--old-table',
  '--new-table',
  '--distinct-ids-table',
);
const anyCommand = fc.constantFrom(
  'install',
  'prepare',
  'start-dual-read',
  'backfill',
  'backfill-pause',
  'backfill-resume',
  'status',
  'verify',
);

/** One command line with one bad flag value, and what the message must name. */
const badInvocation: fc.Arbitrary<Case> = fc.oneof(
  fc
    .tuple(anyCommand, tableFlag, badName)
    .map(([command, flag, value]) => ({ argv: [command, flag, value], names: flag })),
  fc
    .tuple(fc.constantFrom('--schema', '--control-schema'), fc.string({ maxLength: 20 }))
    .map(([flag, rest]) => ({ argv: ['status', flag, `pg_${rest}`], names: flag })),
  fc
    .tuple(fc.oneof(badNumber, fc.constantFrom('0', '1', '1025', '100000')), fc.boolean())
    .map(([value, dryRun]) => ({
      argv: ['prepare', '--partitions', value, ...(dryRun ? ['--dry-run'] : [])],
      names: '--partitions',
    })),
  fc
    .tuple(
      fc.constantFrom('--workers', '--batch-size', '--ranges', '--lease-ms', '--max-keys'),
      badNumber,
    )
    .map(([flag, value]) => ({
      argv: [flag === '--max-keys' ? 'verify' : 'backfill', flag, value],
      names: flag,
    })),
  fc
    .constantFrom('0', '65', '-3', '2.5')
    .map((value) => ({ argv: ['backfill', '--workers', value], names: '--workers' })),
  fc.constantFrom('--lock-mode', '--worker-id').chain((flag) =>
    fc
      .oneof(
        flag === '--worker-id' ? fc.constant('') : fc.string({ maxLength: 30 }),
        fc.string({ minLength: 201, maxLength: 10_000 }),
      )
      .filter((v) => v !== 'ranges' && v !== 'rows')
      .map((value) => ({ argv: ['backfill', flag, value], names: flag })),
  ),
  fc
    .oneof(
      fc.constantFrom('', 'joins', 'CHECKSUM', 'join;'),
      fc.string({ minLength: 1, maxLength: 10_000 }),
    )
    .filter((v) => v !== 'join' && v !== 'checksum')
    .map((value) => ({ argv: ['verify', '--method', value], names: '--method' })),
  tooLongName
    .filter((name) => !name.includes(',') && Buffer.byteLength(name.trim(), 'utf8') > 63)
    .map((name) => ({ argv: ['verify', '--columns', `plan,${name}`], names: '--columns' })),
  fc
    .constantFrom('0', '-1', '1.5', '1000000001')
    .map((value) => ({ argv: ['verify', '--ranges', `1,${value}`], names: '--ranges' })),
  fc
    .oneof(fc.constantFrom('0', '-5', '2.5', '1e9', 'fast', ''), badNumber)
    .filter((v) => v.trim().toLowerCase() !== 'none')
    // After `--`, a value starting with a dash is the argument, not an option.
    .map((value) => ({ argv: ['backfill-rate', '--', value], names: 'backfill-rate' })),
);

/** `[command, --flag, value]` as `[command, --flag=value]`: a value may start with a dash. */
function joined(argv: readonly string[]): string[] {
  const [command, flag, value, ...rest] = argv;
  if (command === undefined || flag === undefined || !flag.startsWith('--') || flag === '--') {
    return [...argv];
  }
  return [command, `${flag}=${value ?? ''}`, ...rest];
}

describe('bad CLI flags, before any connection', () => {
  let hole: Awaited<ReturnType<typeof blackHole>>;

  beforeAll(async () => {
    hole = await blackHole();
  });
  afterAll(async () => {
    await hole.close();
  });

  it('exit 2 at once, naming the flag, when the server is unreachable', async () => {
    const unreachable = 'postgres://postgres@127.0.0.1:1/postgres';
    const cases = [
      [['prepare', '--partitions', '1'], '--partitions'],
      [['prepare', '--partitions', '5000', '--dry-run'], '--partitions'],
      [['status', '--new-table', 'x'.repeat(64)], '--new-table'],
      [['prepare', '--old-table', 'é'.repeat(32)], '--old-table'],
      [['install', '--control-schema', 'pg_dual_read'], '--control-schema'],
      [['start-dual-read', '--name', ''], '--name'],
      [['status', '--old-table', 'same', '--new-table', 'same'], '--new-table'],
      [['backfill-rate', '0'], 'backfill-rate'],
      [['verify', '--columns', `plan,${'c'.repeat(64)}`], '--columns'],
    ] as const;
    for (const [argv, flag] of cases) {
      const result = await cli(argv, unreachable);
      expect(result.code, argv.join(' ')).toBe(2);
      expect(result.stderr).toContain(flag);
      expect(result.stderr).not.toContain('CONFIGURATION');
      expect(result.ms).toBeLessThan(2_000);
    }
    // The same flags, well formed, do try to connect (and fail with exit 1).
    expect((await cli(['prepare', '--partitions', '8'], unreachable)).code).toBe(1);
  });

  it('fuzzed: every bad flag value exits 2 naming it, never opens a connection, never crashes', {
    timeout: 120_000,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(badInvocation, async ({ argv, names }) => {
        const result = await cli(joined(argv), hole.url);
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(/^error \[(USAGE|INVALID_OPTIONS)\]/);
        expect(result.stderr).toContain(names);
        expect(result.stdout).toBe('');
      }),
      { numRuns: 100, seed: 1313, endOnFailure: true },
    );
    // A connection would have waited for the whole connect timeout; none was even tried.
    expect(hole.connections()).toBe(0);
  });
});

/** A name Postgres accepts (at most 63 bytes) made of the characters that break naive SQL. */
const hostileValidName = fc
  .array(
    fc.oneof(
      fc.constantFrom('"', "'", '.', ';', ' ', '--', '/*', 'é', '✓', '🦔', 'A', 'DROP TABLE x;'),
      fc.string({ unit: 'grapheme', minLength: 1, maxLength: 4 }),
    ),
    { minLength: 1, maxLength: 12 },
  )
  .map((parts) => parts.join(''))
  .filter(
    (name) =>
      Buffer.byteLength(name, 'utf8') <= 63 &&
      !name.includes('\u0000') &&
      !/\p{Cs}/u.test(name) &&
      !name.toLowerCase().startsWith('pg_'),
  );

describeOnRealServer('hostile but valid names from the CLI (real server)', () => {
  let handle: DatabaseHandle;
  const schema = uniqueSchemaName('cliflags');
  const controlSchema = `${schema}_ctl`;

  beforeAll(async () => {
    handle = await openDatabaseForTest(2);
    await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(handle.db);
    const migration = createPersonsMigration({ db: handle, schema, controlSchema });
    await migration.install();
    await migration.close();
  });
  afterAll(async () => {
    await dropSchemas(handle, schema, controlSchema);
    await handle.close();
  });

  it('fuzzed: quoted end to end, they end in a typed error (exit 1 or 2) and change nothing', {
    timeout: 300_000,
  }, async () => {
    const url = realServerUrl() ?? '';
    const before = await catalogSnapshot(handle, schema, controlSchema);
    let reachedDatabase = 0;
    const command = fc.constantFrom(
      'prepare',
      'start-dual-read',
      'backfill-pause',
      'backfill-resume',
      'status',
      'verify',
    );
    await fc.assert(
      fc.asyncProperty(
        command,
        fc.record({
          '--name': hostileValidName,
          '--old-table': hostileValidName,
          '--new-table': hostileValidName,
          '--distinct-ids-table': hostileValidName,
        }),
        fc.boolean(),
        async (cmd, names, inTestSchema) => {
          const flags = Object.entries(names).map(([flag, value]) => `${flag}=${value}`);
          // The control schema is the installed one; the tables are in the test's schema (empty)
          // or in a hostile schema that does not exist.
          const where = inTestSchema ? schema : `${schema}."; DROP SCHEMA x`;
          const argv = [cmd, ...flags, '--schema', where, '--control-schema', controlSchema];
          const result = await cli(argv, url);
          expect(result.stderr).toMatch(/^error \[[A-Z_]+\]/);
          expect(result.stderr).not.toMatch(/UNEXPECTED|QUERY_FAILED/);
          expect([1, 2]).toContain(result.code);
          if (result.code === 1) reachedDatabase++;
        },
      ),
      { numRuns: 100, seed: 1313, endOnFailure: true },
    );
    // Most names are valid: they reached the database, quoted, and were refused there.
    expect(reachedDatabase).toBeGreaterThan(50);
    expect(await catalogSnapshot(handle, schema, controlSchema)).toEqual(before);
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE ${`${schema}.%`}`.execute(
      handle.db,
    );
    expect(rows[0]?.n).toBe(0);
  });
});

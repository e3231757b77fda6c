import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase, parseDatabaseUrl } from '../../src/db/open-database.js';
import { isSqlState, toQueryFailedError } from '../../src/db/query-failed.js';
import { ConfigurationError, QueryFailedError } from '../../src/errors.js';

const execFileAsync = promisify(execFile);
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const waitFor = (received: string[], count: number) =>
  expect.poll(() => received.length, { timeout: 5000 }).toBe(count);

describe('database URLs', () => {
  it('accepts postgres://, postgresql://, pglite://memory and pglite:// directories', () => {
    expect(parseDatabaseUrl('postgres://u@h/db')).toEqual({
      kind: 'postgres',
      url: 'postgres://u@h/db',
    });
    expect(parseDatabaseUrl('postgresql://h/db').kind).toBe('postgres');
    expect(parseDatabaseUrl('pglite://memory')).toEqual({ kind: 'pglite', dataDir: undefined });
    expect(parseDatabaseUrl('pglite:///var/data/pg')).toEqual({
      kind: 'pglite',
      dataDir: '/var/data/pg',
    });
    expect(parseDatabaseUrl('pglite://./data')).toEqual({
      kind: 'pglite',
      dataDir: join(process.cwd(), 'data'),
    });
  });

  it('refuses a mysql:// URL with a ConfigurationError that does not echo the password', async () => {
    const err: unknown = await openDatabase('mysql://user:secret@h/db').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigurationError);
    const message = (err as Error).message;
    expect(message).toContain('"mysql:"');
    expect(message).toContain('postgres://');
    expect(message).not.toContain('secret');
    expect(message).not.toContain('user');
  });

  it('refuses a string that is not a URL and a pglite:// URL without a memory or path part', async () => {
    await expect(openDatabase('localhost:5432')).rejects.toThrow(ConfigurationError);
    await expect(openDatabase('pglite://somewhere')).rejects.toThrow(ConfigurationError);
    await expect(openDatabase('')).rejects.toThrow(ConfigurationError);
  });

  it('refuses a maxConnections that is not a positive integer', async () => {
    await expect(openDatabase(DATABASE_URL, { maxConnections: 0 })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
    });
  });

  it('refuses each bad option with an InvalidOptionsError naming it, before connecting', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ maxConnections: 1.5 }, 'maxConnections must be an integer from 1 to 10000'],
      [{ connectTimeoutMs: 0 }, 'connectTimeoutMs must be an integer from 1 to 3600000'],
      [{ preparedStatements: 'yes' }, 'preparedStatements must be true or false'],
      [{ poolSize: 3 }, 'unknown option(s) poolSize'],
    ];
    for (const [options, message] of cases) {
      // An unreachable port: a check made after connecting would fail differently.
      const error = await openDatabase('postgres://nobody@127.0.0.1:1/none', options).catch(
        (e: unknown) => e,
      );
      expect(error, message).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect((error as Error).message, message).toContain(message);
    }
  });
});

describe('openDatabase on PGlite', () => {
  let handle: DatabaseHandle;
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'pg-dual-read-pglite-'));
    handle = await openDatabase(`pglite://${dataDir}`);
  }, 60_000);
  afterAll(async () => {
    await handle?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('opens a pglite:// data directory as the pglite backend with exact int8', async () => {
    expect(handle.backend).toBe('pglite');
    const { rows } = await sql<{ v: unknown }>`select 9007199254740993::int8 as v`.execute(
      handle.db,
    );
    expect(rows[0]?.v).toBe('9007199254740993');
  });

  it('delivers pg_notify payloads to a listener on a mixed-case channel until it stops', async () => {
    const received: string[] = [];
    const stop = await handle.listen?.('PgDualRead_Test', (payload) => received.push(payload));
    await sql`select pg_notify('PgDualRead_Test', 'one')`.execute(handle.db);
    await waitFor(received, 1);
    await stop?.();
    await sql`select pg_notify('PgDualRead_Test', 'two')`.execute(handle.db);
    await new Promise((r) => setTimeout(r, 100));
    expect(received).toEqual(['one']);
  });

  it('does not let LISTEN join an open transaction', async () => {
    const trx = await handle.db.startTransaction().execute();
    const received: string[] = [];
    const listening = handle.listen?.('in_trx_test', (payload) => received.push(payload));
    await new Promise((r) => setTimeout(r, 50)); // time enough for an unguarded LISTEN to run
    await trx.rollback().execute(); // would undo a LISTEN that had run inside the transaction
    const stop = await listening;
    await sql`select pg_notify('in_trx_test', 'after')`.execute(handle.db);
    await waitFor(received, 1);
    await stop?.();
  });
});

describe('openDatabase on PGlite in memory', () => {
  it('opens pglite://memory, and close() ends it', async () => {
    const handle = await openDatabase('pglite://memory');
    expect(handle.backend).toBe('pglite');
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(handle.db);
    expect(rows).toEqual([{ one: 1 }]);
    await handle.close();
    await expect(sql`select 1`.execute(handle.db)).rejects.toThrow();
  }, 60_000);
});

describe('openDatabase on a real Postgres server', () => {
  it('opens a postgres:// URL with exact int8 and string numeric', async () => {
    const handle = await openDatabase(DATABASE_URL, { maxConnections: 2 });
    try {
      expect(handle.backend).toBe('postgres');
      const { rows } = await sql<{ big: unknown; num: unknown }>`
        select 9007199254740993::int8 as big, 12345678901234567890.5::numeric as num`.execute(
        handle.db,
      );
      expect(rows[0]).toEqual({ big: '9007199254740993', num: '12345678901234567890.5' });
    } finally {
      await handle.close();
    }
  });

  it("keeps int8 exact in a pool it creates even after pg's global int8 parser was made lossy", async () => {
    // In a child process, so this file never changes pg's global parsers.
    const script = `
      import pg from 'pg';
      import { sql } from 'kysely';
      pg.types.setTypeParser(20, Number);
      const { openDatabase } = await import('./src/db/open-database.ts');
      const handle = await openDatabase(process.env.DATABASE_URL);
      const { rows } = await sql\`select 9007199254740993::int8 as v\`.execute(handle.db);
      await handle.close();
      process.stdout.write(JSON.stringify(rows[0].v));`;
    const { stdout } = await execFileAsync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, DATABASE_URL } },
    );
    expect(stdout).toBe('"9007199254740993"');
  }, 30_000);

  it('delivers a NOTIFY sent from another connection to every listener of the channel', async () => {
    const handle = await openDatabase(DATABASE_URL);
    const other = new pg.Client({ connectionString: DATABASE_URL });
    await other.connect();
    try {
      const a: string[] = [];
      const b: string[] = [];
      const stopA = await handle.listen?.('PgDualRead_Test', (p) => a.push(p));
      const stopB = await handle.listen?.('PgDualRead_Test', (p) => b.push(p));
      const throwing = await handle.listen?.('PgDualRead_Test', () => {
        throw new Error('a listener that throws must not crash anything');
      });
      await other.query(`NOTIFY "PgDualRead_Test", 'first'`);
      await waitFor(a, 1);
      await waitFor(b, 1);
      await stopA?.();
      await throwing?.();
      await other.query(`select pg_notify('PgDualRead_Test', 'second')`);
      await waitFor(b, 2);
      expect(a).toEqual(['first']);
      expect(b).toEqual(['first', 'second']);
      await stopB?.();
    } finally {
      await other.end();
      await handle.close();
    }
  });

  it("leaves a user's pg.Pool open after close() and returns its listening client", async () => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
    try {
      const handle = await openDatabase(pool);
      const received: string[] = [];
      await handle.listen?.('pool_listen_test', (p) => received.push(p));
      await pool.query(`NOTIFY pool_listen_test, 'hi'`);
      await waitFor(received, 1);
      await handle.close();
      expect(pool.totalCount - pool.idleCount).toBe(0); // no client left checked out
      const { rows } = await pool.query<{ one: number }>('select 1 as one');
      expect(rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  it('refuses a user pool whose own types parse int8 into numbers', async () => {
    const pool = new pg.Pool({
      connectionString: DATABASE_URL,
      types: {
        getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
          oid === 20
            ? Number
            : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
      },
    });
    try {
      const err: unknown = await openDatabase(pool).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigurationError);
      expect((err as Error).message).toContain('pg.types.setTypeParser(20');
      expect((await pool.query('select 1 as one')).rows).toEqual([{ one: 1 }]); // still open
    } finally {
      await pool.end();
    }
  });

  it("uses a user's Kysely as is, without listen, and leaves it open after close()", async () => {
    const db = new Kysely<unknown>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: DATABASE_URL }) }),
    });
    try {
      const handle = await openDatabase(db);
      expect(handle.backend).toBe('postgres');
      expect(handle.db).toBe(db);
      expect(handle.listen).toBeUndefined();
      await handle.close();
      expect((await sql<{ one: number }>`select 1 as one`.execute(db)).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.destroy();
    }
  });

  it('reports an unreachable server as a ConfigurationError', async () => {
    const err: unknown = await openDatabase(
      'postgres://postgres:hunter2@127.0.0.1:1/postgres',
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigurationError);
    expect((err as Error).message).not.toContain('hunter2');
  });
});

describe('toQueryFailedError', () => {
  it('keeps SQLSTATE 23505 and no row value in message or cause for a real unique violation', async () => {
    const handle = await openDatabase(DATABASE_URL);
    try {
      const failure = await handle.db.connection().execute(async (conn) => {
        await sql`create temp table persons_qf (team_id int, distinct_id text, unique (team_id, distinct_id))`.execute(
          conn,
        );
        const insert = sql`insert into persons_qf values (${1}, ${'alice-7f3c'})`.compile(conn);
        await conn.executeQuery(insert);
        const raw = await conn.executeQuery(insert).catch((e: unknown) => e);
        await sql`drop table persons_qf`.execute(conn);
        return { raw, insert };
      });
      expect(JSON.stringify(failure.raw, Object.getOwnPropertyNames(failure.raw))).toContain(
        'alice-7f3c', // the driver error does carry it (in `detail`): this is what we remove
      );
      const err = toQueryFailedError(
        failure.raw,
        failure.insert.sql,
        failure.insert.parameters.length,
      );
      expect(err).toBeInstanceOf(QueryFailedError);
      expect(err.sqlState).toBe('23505');
      expect(err.message).toBe(
        'Query failed (SQLSTATE 23505: duplicate key value violates unique constraint ' +
          '"persons_qf_team_id_distinct_id_key"): insert into persons_qf values ($1, $2) [2 parameters]',
      );
      const cause = err.cause as Record<string, unknown>;
      expect(cause).toMatchObject({
        code: '23505',
        constraint: 'persons_qf_team_id_distinct_id_key',
        table: 'persons_qf',
        severity: 'ERROR',
      });
      expect(cause.detail).toBeUndefined();
      for (const text of [
        err.message,
        String(cause),
        JSON.stringify(cause),
        JSON.stringify(cause, Object.getOwnPropertyNames(cause)),
      ]) {
        expect(text).not.toContain('alice');
      }
      expect(isSqlState(failure.raw, '23505')).toBe(true);
      expect(isSqlState(err, '23505')).toBe(true);
      expect(isSqlState(err, '23503')).toBe(false);
    } finally {
      await handle.close();
    }
  });

  it('redacts the quoted input of a data exception such as invalid integer syntax', async () => {
    const handle = await openDatabase(DATABASE_URL);
    try {
      const query = sql`select ${'zz-secret'}::int`.compile(handle.db);
      const raw = await handle.db.executeQuery(query).catch((e: unknown) => e);
      const err = toQueryFailedError(raw, query.sql, query.parameters.length);
      expect(err.sqlState).toBe('22P02');
      expect(err.message).toContain('invalid input syntax for type integer: "<redacted>"');
      expect(err.message).toContain('[1 parameter]');
      expect(JSON.stringify(err.cause, Object.getOwnPropertyNames(err.cause))).not.toContain(
        'zz-secret',
      );
    } finally {
      await handle.close();
    }
  });

  it('cuts the SQL at 500 characters and handles errors without a SQLSTATE', () => {
    const err = toQueryFailedError(
      new Error('Connection terminated'),
      `select ${'x'.repeat(600)}`,
      0,
    );
    expect(err.sqlState).toBeUndefined();
    expect(err.message).toMatch(
      /^Query failed \(Connection terminated\): select x+\.\.\. \[0 parameters\]$/,
    );
    expect(err.message.length).toBeLessThan(600);
    expect(err.sql).toHaveLength(607);
  });
});

describe('openDatabase connect timeout', () => {
  it('fails within connectTimeoutMs when the server never answers, without printing the password', async () => {
    // A listening socket that accepts and never speaks: the pg handshake waits for it.
    const { createServer } = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as import('node:net').AddressInfo).port;
    const started = Date.now();
    try {
      const error = await openDatabase(`postgres://u:s3cret@127.0.0.1:${port}/db`, {
        connectTimeoutMs: 300,
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'CONFIGURATION' });
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(JSON.stringify(error) + String((error as Error).message)).not.toContain('s3cret');
    } finally {
      for (const socket of sockets) socket.destroy();
      server.close();
    }
  });
});

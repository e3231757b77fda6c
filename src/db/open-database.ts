import { resolve } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import createDebug from 'debug';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { z } from 'zod';
import { ConfigurationError } from '../errors.js';
import { integerIn, parseOptions } from '../util/parse-options.js';
import type { AnyDb } from './any-db.js';
import type { DatabaseHandle, ListenConnectionEvent, StopListening } from './database-handle.js';
import { ListenConnection } from './listen-connection.js';
import { PGliteDialect, registerPGliteSession } from './pglite-dialect.js';
import { withPreparedStatements } from './prepared-statements.js';
import { describeError, toQueryFailedError } from './query-failed.js';
import { assertExactBigints, pgliteParsers, pgTypeOverrides } from './type-parsers.js';

const log = createDebug('pg-dual-read:db');

/**
 * Options of {@link openDatabase}.
 *
 * @example
 * ```ts
 * const options: OpenDatabaseOptions = { maxConnections: 5, connectTimeoutMs: 3_000 };
 * const handle = await openDatabase(process.env.DATABASE_URL, options);
 * ```
 */
export interface OpenDatabaseOptions {
  /** Size of the pool opened for a `postgres://` URL. Default 10. Ignored otherwise. */
  readonly maxConnections?: number;
  /**
   * How long to wait for a connection to a `postgres://` server before failing, in ms.
   * Default 10000. (pg ignores `connect_timeout` in the URL.)
   */
  readonly connectTimeoutMs?: number;
  /**
   * Run the repository's reads as named prepared statements (parsed and planned once per
   * connection). Default `true` for a pool opened from a URL, `false` for your own `pg.Pool`.
   * Turn it off behind a PgBouncer in transaction mode older than 1.21 (or without
   * `max_prepared_statements`).
   */
  readonly preparedStatements?: boolean;
}

const openDatabaseOptionsSchema = z
  .object({
    maxConnections: integerIn('maxConnections', 1, 10_000).default(10),
    connectTimeoutMs: integerIn('connectTimeoutMs', 1, 3_600_000).default(10_000),
    preparedStatements: z.boolean({ error: 'preparedStatements must be true or false' }).optional(),
  })
  .strict();

const ACCEPTED_FORMS =
  'postgres://..., postgresql://..., pglite://memory, pglite:///absolute/dir, ' +
  'pglite://./relative/dir, a pg.Pool, a Kysely instance, or nothing (in-memory PGlite)';

/** @internal Where a source string points. */
export type ParsedSource =
  | { readonly kind: 'postgres'; readonly url: string }
  | { readonly kind: 'pglite'; readonly dataDir: string | undefined };

/**
 * @internal Classify a database URL. Errors name the scheme only, never the rest of the URL
 * (it may hold a password).
 *
 * @example
 * ```ts
 * parseDatabaseUrl('pglite://./data'); // { kind: 'pglite', dataDir: '/cwd/data' }
 * ```
 */
export function parseDatabaseUrl(source: string): ParsedSource {
  if (/^postgres(ql)?:\/\//i.test(source)) return { kind: 'postgres', url: source };
  if (source.startsWith('pglite://')) {
    const rest = source.slice('pglite://'.length);
    if (rest === 'memory') return { kind: 'pglite', dataDir: undefined };
    if (rest.startsWith('/') || rest.startsWith('./') || rest.startsWith('../')) {
      return { kind: 'pglite', dataDir: resolve(rest) };
    }
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(source)?.[1];
  throw new ConfigurationError(
    `Unsupported database source (${scheme ? `scheme "${scheme}:"` : 'not a URL'}). ` +
      `Use one of: ${ACCEPTED_FORMS}.`,
  );
}

/**
 * Open the database pg-dual-read works on and check that int8 values above 2^53 come back
 * exactly (as decimal strings). Accepts a `postgres://` URL, a `pglite://` URL, nothing (an
 * in-memory PGlite), or your own `pg.Pool` or `Kysely`, which `close()` then leaves open.
 *
 * @example
 * ```ts
 * const handle = await openDatabase(process.env.DATABASE_URL, { maxConnections: 5 });
 * const stop = await handle.listen?.('pg_dual_read', (payload) => console.log(payload));
 * await stop?.();
 * await handle.close();
 * ```
 */
export async function openDatabase(
  source?: string | AnyDb | pg.Pool,
  options: OpenDatabaseOptions = {},
): Promise<DatabaseHandle> {
  const {
    maxConnections: max,
    connectTimeoutMs,
    preparedStatements,
  } = parseOptions(openDatabaseOptionsSchema, options, 'openDatabase()');
  let handle: DatabaseHandle;
  if (source instanceof Kysely) {
    handle = { db: source, backend: 'postgres', close: async () => {} };
  } else if (source instanceof pg.Pool) {
    guardCheckedOutClients(source);
    handle = poolHandle(source, false, undefined, undefined, preparedStatements ?? false);
  } else if (source !== undefined && typeof source !== 'string') {
    // e.g. a Pool or Kysely from a second copy of pg / kysely in node_modules
    throw new ConfigurationError(
      `Unsupported database source (an object that is not this package's pg.Pool or Kysely). ` +
        `Use one of: ${ACCEPTED_FORMS}.`,
    );
  } else {
    const parsed = parseDatabaseUrl(source ?? 'pglite://memory');
    if (parsed.kind === 'postgres') {
      const pool = new pg.Pool({
        connectionString: parsed.url,
        max,
        types: pgTypeOverrides,
        connectionTimeoutMillis: connectTimeoutMs,
        // Dead peers (a failed-over server, a dropped NAT entry) are noticed by the kernel.
        keepAlive: true,
      });
      // An idle client's error (server restart) must not crash the process.
      pool.on('error', (err) => log('idle pool client error: %s', describeError(err)));
      // pg-pool listens for a client's errors only while it is idle: a connection dropped
      // while checked out (a terminated backend) would otherwise crash the process. The
      // failed query still rejects, and the pool discards the client.
      pool.on('connect', (client) =>
        client.on('error', (err) => log('pooled connection error: %s', describeError(err))),
      );
      handle = poolHandle(pool, true, parsed.url, connectTimeoutMs, preparedStatements ?? true);
    } else {
      handle = await pgliteHandle(parsed.dataDir);
    }
  }
  try {
    await assertExactBigints(handle.db);
  } catch (err) {
    await handle.close().catch(() => {});
    if (err instanceof ConfigurationError) throw err;
    // The sanitised copy: a raw connection error may carry the URL (e.g. TypeError `input`).
    const cause = toQueryFailedError(err, 'select 9007199254740993::int8 as probe', 0).cause;
    const reason = cause instanceof Error ? cause.message : 'unknown error';
    throw new ConfigurationError(`Could not query the database: ${reason}`, { cause });
  }
  return handle;
}

const guardedPools = new WeakSet<pg.Pool>();

/**
 * pg-pool listens for a client's errors only while the client is idle in the pool. The library
 * checks clients out of a caller's pool too, for transactions of several statements: a
 * connection lost between two of them (a terminated backend, a server restart) would be an
 * unhandled 'error' event that ends the caller's process (found by the soak). Each client gets a
 * listener of its own the first time it is checked out; the lost connection still fails the
 * client's next query, and the pool discards it.
 */
function guardCheckedOutClients(pool: pg.Pool): void {
  if (guardedPools.has(pool)) return;
  guardedPools.add(pool);
  const guarded = new WeakSet<pg.PoolClient>();
  pool.on('acquire', (client) => {
    if (guarded.has(client)) return;
    guarded.add(client);
    client.on('error', (err) => log('pooled connection error: %s', describeError(err)));
  });
}

// LISTEN gets a connection of its own, never a pool slot (a caller's pool of one would lose
// its only connection for good), reopened when it breaks: see ListenConnection.
function poolHandle(
  pool: pg.Pool,
  ownsPool: boolean,
  connectionString?: string,
  connectTimeoutMs?: number,
  preparedStatements = false,
): DatabaseHandle {
  const db: AnyDb = new Kysely({
    dialect: new PostgresDialect({
      pool: preparedStatements ? withPreparedStatements(pool) : pool,
    }),
  });
  const openListenClient = async (): Promise<pg.Client> => {
    const client =
      connectionString !== undefined
        ? new pg.Client({
            connectionString,
            connectionTimeoutMillis: connectTimeoutMs ?? 0,
            keepAlive: true,
          })
        : listenClientLike(pool);
    try {
      await client.connect();
    } catch (error) {
      client.end().catch(() => undefined);
      throw error;
    }
    return client;
  };
  const listener = new ListenConnection(openListenClient, quoteChannel);
  const listen = (
    channel: string,
    onNotify: (payload: string) => void,
    onConnection?: (event: ListenConnectionEvent) => void,
  ) => listener.listen(channel, guarded(channel, onNotify), onConnection);

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await listener.close();
      if (ownsPool) await db.destroy(); // ends the pool; a user's pool stays open
    })());

  return { db, backend: 'postgres', listen, close };
}

// A client with the settings of a caller's pool (its own Client class, host, credentials,
// TLS), but outside the pool.
function listenClientLike(pool: pg.Pool): pg.Client {
  const { Client = pg.Client } = pool as unknown as { Client?: typeof pg.Client };
  const options = (pool as unknown as { options: pg.ClientConfig }).options;
  return new Client({ ...options, keepAlive: options.keepAlive ?? true });
}

async function pgliteHandle(dataDir: string | undefined): Promise<DatabaseHandle> {
  const pglite = await PGlite.create({ parsers: pgliteParsers, ...(dataDir ? { dataDir } : {}) });
  const db = new Kysely<unknown>({ dialect: new PGliteDialect({ pglite }) });
  registerPGliteSession(db, pglite);
  // Take the dialect's session lock, so LISTEN never lands inside someone's open transaction.
  const exclusive = <T>(fn: () => Promise<T>) => db.connection().execute(fn);

  const listen = async (channel: string, onNotify: (payload: string) => void) => {
    // PGlite lower-cases unquoted names; quoting keeps the channel exact, as on Postgres.
    const ident = quoteChannel(channel);
    const callback = guarded(channel, onNotify);
    await exclusive(() => pglite.listen(ident, callback));
    // Not the function listen() returns: it drops the quotes and so misses mixed-case names.
    const stop: StopListening = () => exclusive(() => pglite.unlisten(ident, callback));
    return stop;
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await db.destroy();
      await pglite.close();
    })());

  return { db, backend: 'pglite', listen, close };
}

// A throwing callback must not break delivery to the others nor crash the process.
function guarded(channel: string, onNotify: (payload: string) => void) {
  return (payload: string) => {
    try {
      onNotify(payload);
    } catch (err) {
      log('notification callback for %s threw: %s', channel, describeError(err));
    }
  };
}

// LISTEN takes an identifier, not a parameter. A `"` is refused because PGlite matches
// notifications on the quoted name without un-doubling it.
function quoteChannel(channel: string): string {
  if (channel.length === 0 || channel.length > 63 || channel.includes('"')) {
    throw new ConfigurationError(
      'A notification channel name must be 1 to 63 characters without a double quote (").',
    );
  }
  return `"${channel}"`;
}

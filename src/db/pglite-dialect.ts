import { AsyncLocalStorage } from 'node:async_hooks';
import type { PGliteInterface } from '@electric-sql/pglite';
import {
  AbortedTransactionError,
  type CompiledQuery,
  createQueryId,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  IdentifierNode,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
  type QueryResult,
  RawNode,
  type TransactionSettings,
} from 'kysely';
import { ConfigurationError, InvalidOptionsError } from '../errors.js';
import type { AnyDb } from './any-db.js';

/**
 * Options of {@link PGliteDialect}.
 *
 * @example
 * ```ts
 * const dialect = new PGliteDialect({ pglite: new PGlite() });
 * ```
 */
export interface PGliteDialectConfig {
  /** The instance to query. The dialect never closes it: whoever created it does. */
  readonly pglite: PGliteInterface;
}

/**
 * A Kysely dialect for an embedded PGlite database.
 *
 * PGlite is ONE Postgres session, so the driver hands it out to one Kysely connection at a
 * time (a transaction holds it until commit or rollback; the next waits). Consequence: inside
 * `db.transaction().execute(trx => ...)` query through `trx`, never `db`, or it waits forever.
 *
 * @example
 * ```ts
 * const pglite = await PGlite.create();
 * const db = new Kysely<any>({ dialect: new PGliteDialect({ pglite }) });
 * await db.transaction().setIsolationLevel('serializable').execute(async (trx) => {
 *   await trx.insertInto('t').values({ id: 1 }).execute();
 * });
 * ```
 */
export class PGliteDialect implements Dialect {
  constructor(private readonly config: PGliteDialectConfig) {}
  /** Kysely calls it: the driver that runs one transaction at a time on PGlite's session. */
  createDriver(): Driver {
    return new PGliteDriver(this.config.pglite);
  }
  /** Kysely calls it: PGlite speaks PostgreSQL's SQL, so Kysely's Postgres compiler. */
  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }
  /**
   * Kysely calls it: Kysely's Postgres adapter (transactional DDL, `RETURNING`, advisory locks).
   */
  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }
  /** Kysely calls it: Kysely's Postgres introspector, over this dialect's own Kysely instance. */
  createIntrospector(db: AnyDb): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
}

// One queue per PGlite instance, so two Kysely instances over the same PGlite still take turns.
const sessionQueues = new WeakMap<PGliteInterface, { tail: Promise<void> }>();

// The PGlite sessions the current async call chain holds in an open transaction of this
// library, and the PGlite behind each Kysely instance openDatabase() made.
const heldSessions = new AsyncLocalStorage<ReadonlySet<PGliteInterface>>();
const sessionOfDb = new WeakMap<AnyDb, PGliteInterface>();

/**
 * Records that `db` queries `pglite`, so {@link holdingSession} can tell a call made inside an
 * open transaction on that session. @internal
 *
 * @example
 * ```ts
 * const db = new Kysely<unknown>({ dialect: new PGliteDialect({ pglite }) });
 * registerPGliteSession(db, pglite);
 * ```
 */
export function registerPGliteSession(db: AnyDb, pglite: PGliteInterface): void {
  sessionOfDb.set(db, pglite);
}

/**
 * Runs `fn` (the body of a transaction on `db`) marked as holding `db`'s PGlite session: any
 * other query on that session started from inside `fn` throws at once instead of waiting for
 * the transaction forever (PGlite is one session). A no-op on other backends. @internal
 *
 * @example
 * ```ts
 * await holdingSession(db, () => body(connection));
 * ```
 */
export function holdingSession<T>(db: AnyDb, fn: () => Promise<T>): Promise<T> {
  const pglite = sessionOfDb.get(db);
  if (!pglite) return fn();
  const held = new Set(heldSessions.getStore());
  held.add(pglite);
  return heldSessions.run(held, fn);
}

/**
 * Throws what a query on `db` would throw from here: for work that will query `db` from
 * outside this call's scope (and so would wait for the transaction this call is in). @internal
 *
 * @example
 * ```ts
 * assertSessionFree(handle.db); // before awaiting a listener started outside the scope
 * ```
 */
export function assertSessionFree(db: AnyDb): void {
  const pglite = sessionOfDb.get(db);
  if (pglite && heldSessions.getStore()?.has(pglite)) throw sessionHeldError();
}

function sessionHeldError(): ConfigurationError {
  return new ConfigurationError(
    'This call runs inside an open transaction on the same PGlite database ' +
      '(repository.inTransaction): PGlite is one session, so it would wait for that ' +
      'transaction forever. Use the repository passed to inTransaction, or make the call ' +
      'after the transaction.',
  );
}

/**
 * Runs `fn` outside any transaction scope of {@link holdingSession}: for timers and listeners
 * that outlive the call that started them. @internal
 *
 * @example
 * ```ts
 * this.timer = outsideSessionScope(() => setInterval(refresh, 1_000));
 * ```
 */
export function outsideSessionScope<T>(fn: () => T): T {
  return heldSessions.exit(fn);
}

const AFFECTS_ROWS = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

// As in Kysely's PostgresDriver: the compiler quotes the savepoint name.
const savepointCommand =
  (command: string) =>
  async (conn: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']) => {
    const node = RawNode.createWithChildren([
      RawNode.createWithSql(`${command} `),
      IdentifierNode.create(name),
    ]);
    await conn.executeQuery(compile(node, createQueryId()));
  };

class PGliteDriver implements Driver {
  readonly #connection: PGliteConnection;
  readonly #queue: { tail: Promise<void> };
  #release: (() => void) | undefined;
  #destroyed = false;

  constructor(private readonly pglite: PGliteInterface) {
    this.#connection = new PGliteConnection(pglite);
    const queue = sessionQueues.get(pglite) ?? { tail: Promise.resolve() };
    sessionQueues.set(pglite, queue);
    this.#queue = queue;
  }

  async init(): Promise<void> {
    await this.pglite.waitReady;
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    if (this.#destroyed) {
      throw new ConfigurationError(
        'This PGlite database was closed (its Kysely driver is destroyed): open it again to query it.',
      );
    }
    if (heldSessions.getStore()?.has(this.pglite)) throw sessionHeldError();
    const previous = this.#queue.tail;
    let release!: () => void;
    this.#queue.tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous; // never rejects: it is a release signal
    this.#release = release;
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async beginTransaction(_conn: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    // Kysely validated both settings against its fixed lists, so they are safe to inline.
    let begin = 'begin';
    if (settings.isolationLevel) begin += ` isolation level ${settings.isolationLevel}`;
    if (settings.accessMode) begin += ` ${settings.accessMode}`;
    await this.pglite.query(begin);
  }

  async commitTransaction(): Promise<void> {
    // Postgres answers COMMIT of an aborted transaction with a ROLLBACK tag, not an error.
    const { command } = await this.pglite.query('commit');
    if (command === 'ROLLBACK') throw new AbortedTransactionError();
  }

  async rollbackTransaction(): Promise<void> {
    await this.pglite.query('rollback');
  }

  readonly savepoint = savepointCommand('savepoint');
  readonly rollbackToSavepoint = savepointCommand('rollback to');
  readonly releaseSavepoint = savepointCommand('release');

  async destroy(): Promise<void> {
    this.#destroyed = true; // the PGlite instance belongs to whoever created it
  }
}

class PGliteConnection implements DatabaseConnection {
  constructor(private readonly pglite: PGliteInterface) {}

  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    try {
      const result = await this.pglite.query<R>(query.sql, [...query.parameters]);
      return {
        rows: result.rows,
        ...(result.command && AFFECTS_ROWS.has(result.command)
          ? { numAffectedRows: BigInt(result.affectedRows ?? 0) }
          : {}),
      };
    } catch (err) {
      // PGlite attaches the bound parameters (row values) to its errors; pg does not.
      if (err && typeof err === 'object') {
        delete (err as { params?: unknown }).params;
        delete (err as { queryOptions?: unknown }).queryOptions;
      }
      throw err;
    }
  }

  // PGlite has no cursors over this API: emulate by slicing the full result.
  async *streamQuery<R>(
    query: CompiledQuery,
    chunkSize = 1000,
  ): AsyncIterableIterator<QueryResult<R>> {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0) {
      throw new InvalidOptionsError('chunkSize must be a positive integer', [
        { path: 'chunkSize', message: 'must be a positive integer' },
      ]);
    }
    const { rows } = await this.executeQuery<R>(query);
    for (let i = 0; i < rows.length; i += chunkSize) yield { rows: rows.slice(i, i + chunkSize) };
  }
}

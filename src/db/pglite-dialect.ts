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
  createDriver(): Driver {
    return new PGliteDriver(this.config.pglite);
  }
  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }
  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }
  createIntrospector(db: AnyDb): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
}

// One queue per PGlite instance, so two Kysely instances over the same PGlite still take turns.
const sessionQueues = new WeakMap<PGliteInterface, { tail: Promise<void> }>();

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

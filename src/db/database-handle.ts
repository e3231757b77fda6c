import type { AnyDb } from './any-db.js';

/**
 * Which engine a {@link DatabaseHandle} talks to.
 *
 * @example
 * ```ts
 * if (handle.backend === 'pglite') console.log('embedded: one session, no concurrency tests');
 * ```
 */
export type DatabaseBackend = 'postgres' | 'pglite';

/**
 * A notification listener returned by {@link DatabaseHandle.listen}; call it to stop listening.
 *
 * @example
 * ```ts
 * const stop = await handle.listen?.('my_channel', (payload) => console.log(payload));
 * await stop?.();
 * ```
 */
export type StopListening = () => Promise<void>;

/**
 * What happened to the connection that LISTENs: `lost` when it broke (notifications are
 * missed until it is back), `restored` when it listens again (anything may have happened in
 * between: re-read what the notifications were about).
 *
 * @example
 * ```ts
 * const onConnection = (event: ListenConnectionEvent) => {
 *   if (event.state === 'restored') void refresh();
 * };
 * ```
 */
export type ListenConnectionEvent =
  | {
      /** The connection broke. */
      readonly state: 'lost';
      /** Why, as the driver said it. */
      readonly reason: string;
    }
  | {
      /** The connection listens again. */
      readonly state: 'restored';
      /** Connection attempts it took, the successful one included. */
      readonly attempts: number;
    };

/**
 * An open database: a Kysely instance plus what the library needs beyond queries.
 *
 * Created by {@link openDatabase}. Every `bigint` (int8) column comes back as a decimal
 * `string`, exact above 2^53, on every backend.
 *
 * @example
 * ```ts
 * import { openDatabase } from 'pg-dual-read';
 * const handle = await openDatabase(process.env.DATABASE_URL); // embedded PGlite when unset
 * try {
 *   const { rows } = await sql`select 1 as one`.execute(handle.db);
 * } finally {
 *   await handle.close();
 * }
 * ```
 */
export interface DatabaseHandle {
  /**
   * The Kysely instance (`Kysely<any>`: the tables are named by configuration at run time),
   * for your own queries, e.g. with Kysely's `sql` template.
   */
  readonly db: AnyDb;
  /** Whether it is a PostgreSQL server (a pool) or an embedded PGlite (one session). */
  readonly backend: DatabaseBackend;
  /**
   * Subscribe to `LISTEN channel`, on a connection of its own (never a slot of the pool),
   * reopened with backoff when it breaks; `onConnection` hears of each loss and restoration.
   * Undefined when the handle cannot hold a dedicated listening session (a user-supplied
   * `Kysely`): callers then rely on polling.
   */
  readonly listen?: (
    channel: string,
    onNotify: (payload: string) => void,
    onConnection?: (event: ListenConnectionEvent) => void,
  ) => Promise<StopListening>;
  /**
   * Close what the handle opened. A handle wrapping a user's pool or Kysely leaves it open.
   *
   * @example
   * ```ts
   * await migration.close(); // the migration first: it stops LISTEN and its timers
   * await handle.close();
   * ```
   */
  close(): Promise<void>;
}

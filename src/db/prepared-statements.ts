import { createHash } from 'node:crypto';
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import type pg from 'pg';

/**
 * Marks a statement to run as a named prepared statement, so each connection parses and plans
 * it once. Only the library's own hot reads carry it: their texts form a small fixed set, so
 * the statements kept per connection stay bounded (an arbitrary user query never gets a name).
 * @internal
 */
export const preparedStatementMarker = '/* pg-dual-read:prepared */ ';

/**
 * Wraps a pg pool for Kysely's `PostgresDialect` so statements starting with
 * {@link preparedStatementMarker} are sent with a name derived from their text. Everything
 * else passes through unchanged. @internal
 *
 * @example
 * ```ts
 * const db = new Kysely({ dialect: new PostgresDialect({ pool: withPreparedStatements(pool) }) });
 * ```
 */
export function withPreparedStatements(pool: pg.Pool): PostgresPool {
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      return {
        query: ((text: string | object, values?: readonly unknown[]) => {
          if (typeof text === 'string' && text.startsWith(preparedStatementMarker)) {
            // The same text always gets the same name, so pg never sees one name twice.
            const name = `pgdr_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`;
            return client.query({ name, text, values: values ? [...values] : [] });
          }
          return client.query(text as string, values ? [...values] : undefined);
        }) as unknown as PostgresPoolClient['query'],
        release: () => client.release(),
      };
    },
    end: () => pool.end(),
  };
}

import type { ParserOptions } from '@electric-sql/pglite';
import { sql } from 'kysely';
import pg from 'pg';
import { ConfigurationError } from '../errors.js';
import type { AnyDb } from './any-db.js';

/** @internal Postgres type OID of `int8` / `bigint`. */
export const INT8_OID = 20;
/** @internal Postgres type OID of `numeric`. */
export const NUMERIC_OID = 1700;

const keepText = (value: string): string => value;

/**
 * @internal Parsers for `PGlite.create({ parsers })`: int8 and numeric stay decimal strings.
 * PGlite's default turns int8 into a `number` when it fits and a `bigint` otherwise, so the
 * same column would change JS type with its value; pg returns a string, and we match pg.
 *
 * @example
 * ```ts
 * const pglite = await PGlite.create({ parsers: pgliteParsers });
 * ```
 */
export const pgliteParsers: ParserOptions = Object.freeze({
  [INT8_OID]: keepText,
  [NUMERIC_OID]: keepText,
});

/**
 * @internal Per-pool type parsers for the pools this library creates: int8 and numeric are
 * returned as text even if another module changed pg's global parsers with
 * `pg.types.setTypeParser(20, ...)`. Every other type uses pg's (global) parser.
 *
 * @example
 * ```ts
 * const pool = new pg.Pool({ connectionString, types: pgTypeOverrides });
 * ```
 */
export const pgTypeOverrides: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    (oid === INT8_OID || oid === NUMERIC_OID) && format !== 'binary'
      ? keepText
      : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

const PROBE = 9007199254740993n; // 2^53 + 1: the first integer a JS number cannot hold

/**
 * @internal Refuse a database whose driver parses int8 into lossy JS numbers: person ids
 * above 2^53 would silently change. Accepts the decimal string (pg's default) or a `bigint`.
 *
 * @example
 * ```ts
 * await assertExactBigints(db); // throws ConfigurationError when int8 comes back as a number
 * ```
 */
export async function assertExactBigints(db: AnyDb): Promise<void> {
  const { rows } = await sql<{ probe: unknown }>`select 9007199254740993::int8 as probe`.execute(
    db,
  );
  const probe = rows[0]?.probe;
  if (probe === PROBE.toString() || probe === PROBE) return;
  throw new ConfigurationError(
    `The database driver parses int8 (bigint) into lossy JS numbers: ` +
      `select 9007199254740993::int8 returned ${typeof probe} ${String(probe)}. ` +
      'Remove the custom int8 type parser (e.g. pg.types.setTypeParser(20, ...) or a ' +
      "pool's `types` option) so int8 comes back as a decimal string.",
  );
}

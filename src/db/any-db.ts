import type { Kysely } from 'kysely';

/**
 * A Kysely instance, transaction or connection over tables the compiler does not know: every
 * table this library touches is named by configuration at run time, so its queries are raw
 * `sql` templates and this is the one place the untyped database is spelled. @internal
 *
 * @example
 * ```ts
 * async function countRows(db: AnyDb, table: RawBuilder<unknown>) {
 *   return (await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${table}`.execute(db)).rows;
 * }
 * ```
 */
// biome-ignore lint/suspicious/noExplicitAny: tables are named by configuration.
export type AnyDb = Kysely<any>;

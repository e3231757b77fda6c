/**
 * Identifiers from configuration in the three places they appear outside `sql.id()`: inside a
 * regclass string, in SQL shown to an operator as a fix, and in messages. Never row values.
 */

/**
 * Double-quotes an identifier (doubling any `"` in it), for a regclass string or SQL shown to
 * an operator. Queries use `sql.id()` instead. @internal
 *
 * @example
 * ```ts
 * quoteIdent('my "odd" table'); // '"my ""odd"" table"'
 * ```
 */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * The regclass text for `schema.table`, both parts quoted, for `to_regclass()` and
 * `::regclass` parameters. @internal
 *
 * @example
 * ```ts
 * sql`SELECT to_regclass(${regclassText('public', 'posthog_person')})`;
 * ```
 */
export function regclassText(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

/**
 * `schema.table` for messages (names from configuration, never row values). @internal
 *
 * @example
 * ```ts
 * `The old persons table ${displayName('public', 'posthog_person')} does not exist.`;
 * ```
 */
export function displayName(schema: string, table: string): string {
  return `${schema}.${table}`;
}

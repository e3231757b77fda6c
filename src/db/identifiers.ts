import { type RawBuilder, sql } from 'kysely';

/**
 * A schema-qualified table reference, quoted. Identifiers from configuration always go
 * through here: never paste a configured name into SQL text. @internal
 */
export function qualified(schema: string, table: string): RawBuilder<unknown> {
  return sql.id(schema, table);
}

/** A string as an SQL literal, for the few statements that cannot take parameters. @internal */
export function literal(value: string): RawBuilder<unknown> {
  return sql.lit(value);
}

/** `schema.table` for messages (names from configuration, never row values). @internal */
export function displayName(schema: string, table: string): string {
  return `${schema}.${table}`;
}

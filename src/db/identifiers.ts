/** `schema.table` for messages (names from configuration, never row values). @internal */
export function displayName(schema: string, table: string): string {
  return `${schema}.${table}`;
}

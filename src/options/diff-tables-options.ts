import { z } from 'zod';
import type { MismatchClass } from '../model/mismatch-class.js';
import { identifier, integerIn, parseOptions } from '../util/parse-options.js';
import { databaseHandle } from './database-handle-option.js';

const side = (name: string) =>
  z
    .object({
      db: databaseHandle,
      // Names over 63 bytes are refused: Postgres would compare the truncated name's table.
      schema: identifier(`${name}.schema`).default('public'),
      table: identifier(`${name}.table`),
    })
    .strict();

const diffTablesSchema = z
  .object({
    old: side('old'),
    new: side('new'),
    columns: z
      .array(identifier('columns[]'), { error: 'columns must be an array of column names' })
      .min(1, { error: 'columns must name at least one column' })
      .optional(),
    chunkRows: integerIn('chunkRows', 1_000, 100_000_000).default(1_000_000),
    leafRows: integerIn('leafRows', 1, 1_000_000).default(2_000),
    fanout: integerIn('fanout', 2, 1_024).default(16),
    maxKeys: integerIn('maxKeys', 0, 1_000_000).default(1_000),
    onMismatch: z
      .custom<(key: DiffedKey) => void | Promise<void>>((v) => typeof v === 'function', {
        error: 'onMismatch must be a function',
      })
      .optional(),
  })
  .strict();

/**
 * Options of `diffTables()`.
 *
 * @example
 * ```ts
 * const options: DiffTablesOptions = {
 *   old: { db: primary, table: 'posthog_person' },
 *   new: { db: archive, schema: 'persons', table: 'posthog_person' },
 *   onMismatch: (key) => console.log(key.class, key.teamId, key.personId),
 * };
 * ```
 */
export type DiffTablesOptions = z.input<typeof diffTablesSchema>;

/**
 * One key that differs between the two tables of `diffTables()`.
 *
 * @example
 * ```ts
 * const onMismatch = (key: DiffedKey) => console.log(key.class, key.teamId, key.personId);
 * ```
 */
export interface DiffedKey {
  readonly teamId: number;
  readonly personId: string;
  readonly class: Extract<MismatchClass, 'missing_in_new' | 'older_in_new' | 'content_differs'>;
}

/** Options of `diffTables()` after validation. @internal */
export type ResolvedDiffTablesOptions = Readonly<z.output<typeof diffTablesSchema>>;

/** @internal */
export function resolveDiffTablesOptions(input: unknown): ResolvedDiffTablesOptions {
  return parseOptions(diffTablesSchema, input, 'diffTables()');
}

import { z } from 'zod';
import type { MismatchClass } from '../model/mismatch-class.js';
import { identifier, integerIn, parseOptions } from '../util/parse-options.js';
import { databaseHandle } from './database-handle-option.js';

const side = (name: string) =>
  z
    .object({
      /** The database the table is in (a handle from `openDatabase()`). */
      db: databaseHandle,
      // Names over 63 bytes are refused: Postgres would compare the truncated name's table.
      /** The table's schema (default `public`). */
      schema: identifier(`${name}.schema`).default('public'),
      /** The persons table. */
      table: identifier(`${name}.table`),
    })
    .strict();

const diffTablesSchema = z
  .object({
    /** The table taken as the truth. */
    old: side('old'),
    /** The table checked against it. */
    new: side('new'),
    /** Columns whose content is compared (default: every column but the key and `version`). */
    columns: z
      .array(identifier('columns[]'), { error: 'columns must be an array of column names' })
      .min(1, { error: 'columns must name at least one column' })
      .optional(),
    /** Keys per checksum chunk (default 1000000). */
    chunkRows: integerIn('chunkRows', 1_000, 100_000_000).default(1_000_000),
    /** Rows below which a differing part is compared key by key (default 2000). */
    leafRows: integerIn('leafRows', 1, 1_000_000).default(2_000),
    /** Parts a differing chunk is cut into at each step (default 16). */
    fanout: integerIn('fanout', 2, 1_024).default(16),
    /** Differing keys kept in `result.keys` (default 1000); `onMismatch` gets every one. */
    maxKeys: integerIn('maxKeys', 0, 1_000_000).default(1_000),
    /** Called with each differing key, awaited before the next (never row values). */
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
 *
 * @useDeclaredType
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
  /** The person's team. */
  readonly teamId: number;
  /** The person's id, an exact decimal string. */
  readonly personId: string;
  /** How the new table differs at this key. */
  readonly class: Extract<MismatchClass, 'missing_in_new' | 'older_in_new' | 'content_differs'>;
}

/** Options of `diffTables()` after validation. @internal */
export type ResolvedDiffTablesOptions = Readonly<z.output<typeof diffTablesSchema>>;

/** @internal */
export function resolveDiffTablesOptions(input: unknown): ResolvedDiffTablesOptions {
  return parseOptions(diffTablesSchema, input, 'diffTables()');
}

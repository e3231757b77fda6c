/**
 * A person's key, `(team_id, id)`, as exact decimal strings (ids go beyond 2^53). Backfill
 * ranges, verification chunks and checkpoints are all made of these. @internal
 *
 * @example
 * ```ts
 * const checkpoint: Key = { team: '2', id: '9007199254740993' };
 * ```
 */
export interface Key {
  readonly team: string;
  readonly id: string;
}

/**
 * A range of `(team_id, id)` keys: greater than `after` (from the first key when undefined)
 * and up to and including `upTo` (to the last key when undefined). Backfill ranges and
 * verification chunks follow the same convention, so consecutive ranges cover every key
 * exactly once. @internal
 *
 * @example
 * ```ts
 * const secondHalf: KeyRange = { after: { team: '1', id: '500' }, upTo: undefined };
 * ```
 */
export interface KeyRange {
  readonly after: Key | undefined;
  readonly upTo: Key | undefined;
}

/**
 * The whole key space. @internal
 *
 * @example
 * ```ts
 * await splitRange(db, table, everyKey, rows, 16);
 * ```
 */
export const everyKey: KeyRange = { after: undefined, upTo: undefined };

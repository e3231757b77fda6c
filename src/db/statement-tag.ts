import { type RawBuilder, sql } from 'kysely';

/**
 * The statements that tests (and an operator reading `pg_stat_activity`) need to recognise,
 * each tagged with a leading comment `/* pg-dual-read:<tag> *\/`, so a race test waits for "the
 * backfill batch" by its tag, never by matching the statement's SQL text.
 *
 * @example
 * ```ts
 * const waiting = `${statementTagText('backfill-batch')}%`; // a LIKE pattern on pg_stat_activity.query
 * ```
 * @internal
 */
export type StatementTag =
  /** The one statement of a backfill batch (src/backfill/batch-statement.ts). */
  | 'backfill-batch'
  /** A batch's lock of its range row, before its batch statement (`lockMode: 'ranges'`). */
  | 'backfill-range-fence'
  /** A plan or a split taking the delete fence `SHARE`. */
  | 'delete-fence-lock'
  /** A delete's statement that removes the old row (with its fences in `dual_read`). */
  | 'delete-old-row'
  /** A delete's later statement that removes the new row. */
  | 'delete-new-row'
  /** Copy-on-write: a write copying its person from the old table first. */
  | 'copy-on-write'
  /** `addDistinctId` (under `FOR KEY SHARE` of the person). */
  | 'add-distinct-id'
  /** The repair's copy of missing old rows. */
  | 'repair-copy'
  /** A write transaction's read of the phase under `FOR KEY SHARE`. */
  | 'phase-fence'
  /** A phase change's lock of the control table (it waits for the writes in flight). */
  | 'phase-change'
  /** `finalize()`'s lock of both persons tables, before it renames them. */
  | 'finalize-swap'
  /** A shadow read of the new table alone. */
  | 'shadow-read'
  /** A shadow read's transaction setting its `statement_timeout`, before the read. */
  | 'shadow-read-timeout';

/**
 * The comment that starts a tagged statement, e.g. `/* pg-dual-read:backfill-batch *\/ `.
 *
 * @example
 * ```ts
 * statementTagText('delete-old-row'); // '/* pg-dual-read:delete-old-row *\/ '
 * ```
 * @internal
 */
export function statementTagText(tag: StatementTag): string {
  return `/* pg-dual-read:${tag} */ `;
}

/**
 * `statement` with its tag in front. @internal
 *
 * @example
 * ```ts
 * await tagged('backfill-range-fence', sql`SELECT 1 FROM ${ranges} ... FOR UPDATE`).execute(trx);
 * ```
 */
export function tagged<R>(tag: StatementTag, statement: RawBuilder<R>): RawBuilder<R> {
  return sql<R>`${sql.raw(statementTagText(tag))}${statement}`;
}

import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { MismatchClass } from '../model/mismatch-class.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import type { MigrationTables } from '../persons/tables.js';
import { type ComparedColumn, contentDiffers } from './compared-columns.js';

/** What every step of one verification run shares. @internal */
export interface VerifyContext {
  readonly db: AnyDb;
  readonly options: ResolvedMigrationOptions;
  readonly tables: MigrationTables;
  readonly mismatchTable: RawBuilder<unknown>;
  readonly columns: readonly ComparedColumn[];
  /** Ids at or below this were issued before `dual_read` (null: unknown, see migration 3). */
  readonly highWater: string | null;
  readonly verificationId: string;
}

/** SQL text array of class names, for `= ANY(...)`. @internal */
export function classArray(classes: readonly string[]): RawBuilder<unknown> {
  return sql`${[...classes]}::text[]`;
}

/**
 * The class of one key from its old row `o` and new row `n` (either may be missing), in SQL.
 * The one definition used by the one-pass check and by every re-check.
 * @internal
 */
export function classOf(context: VerifyContext): RawBuilder<MismatchClass | string> {
  const highWater = context.highWater;
  return sql`CASE
    WHEN o.id IS NULL AND n.id IS NULL THEN 'gone'
    WHEN n.id IS NULL THEN 'missing_in_new'
    WHEN o.id IS NULL THEN
      CASE WHEN ${highWater}::bigint IS NOT NULL AND n.id <= ${highWater}::bigint
        THEN 'resurrected' ELSE 'created_in_new' END
    WHEN coalesce(n.version, 0) < coalesce(o.version, 0) THEN 'older_in_new'
    WHEN coalesce(n.version, 0) > coalesce(o.version, 0) THEN 'newer_in_new'
    WHEN ${contentDiffers(context.columns, 'o', 'n')} THEN 'content_differs'
    ELSE 'same' END`;
}

/** The columns a check reads from a persons table: key, version and compared columns. @internal */
export function checkedColumns(context: VerifyContext, alias: string): RawBuilder<unknown> {
  const names = ['team_id', 'id', 'version', ...context.columns.map((c) => c.name)];
  return sql.join(names.map((c) => sql.id(alias, c)));
}

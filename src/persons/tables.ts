import { type RawBuilder, sql } from 'kysely';
import type { Phase } from '../model/phase.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/**
 * The quoted tables one migration works on: the persons tables and the control tables its
 * statements name. @internal
 *
 * @example
 * ```ts
 * const tables = migrationTables(options);
 * await sql`SELECT count(*) FROM ${tables.new}`.execute(db);
 * ```
 */
export interface MigrationTables {
  readonly old: RawBuilder<unknown>;
  readonly new: RawBuilder<unknown>;
  readonly distinctIds: RawBuilder<unknown>;
  readonly control: RawBuilder<unknown>;
  /** The phase fence function (control migration 6): `phaseFence(name, lock_timeout_ms)`. */
  readonly phaseFence: RawBuilder<unknown>;
  /** The control schema's delete fence (rule `delete-fence` in docs/correctness.md). */
  readonly deleteFence: RawBuilder<unknown>;
  /** The backfill's plan: one row per migration (pause flag, rate ceiling, status). */
  readonly backfill: RawBuilder<unknown>;
  /** The backfill's ranges, which deletes lock (rule `range-fence` in docs/correctness.md). */
  readonly backfillRange: RawBuilder<unknown>;
  /** The backfill's workers and their smoothed rates. */
  readonly backfillWorker: RawBuilder<unknown>;
  /** The migration's name: its key in the control tables. */
  readonly migration: string;
  /** The control schema's name, for messages. */
  readonly controlSchema: string;
}

/**
 * The {@link MigrationTables} of a migration's options. @internal
 *
 * @example
 * ```ts
 * const { old, new: fresh } = migrationTables(options);
 * ```
 */
export function migrationTables(options: ResolvedMigrationOptions): MigrationTables {
  return {
    old: sql.id(options.schema, options.oldTable),
    new: sql.id(options.schema, options.newTable),
    distinctIds: sql.id(options.schema, options.distinctIdsTable),
    control: sql.id(options.controlSchema, 'migration'),
    phaseFence: sql.id(options.controlSchema, 'phase_fence'),
    deleteFence: sql.id(options.controlSchema, 'delete_fence'),
    backfill: sql.id(options.controlSchema, 'backfill'),
    backfillRange: sql.id(options.controlSchema, 'backfill_range'),
    backfillWorker: sql.id(options.controlSchema, 'backfill_worker'),
    migration: options.name,
    controlSchema: options.controlSchema,
  };
}

/**
 * The one table a phase other than `dual_read` reads and writes: the old table in `old`, the
 * new table in `new`, and in `finalized` the consolidated table, which is the new table renamed
 * to the old table's name (so the old table's name addresses it). @internal
 *
 * @example
 * ```ts
 * sql`SELECT * FROM ${singleTableOf(tables, phase)} WHERE team_id = ${teamId}`;
 * ```
 */
export function singleTableOf(
  tables: MigrationTables,
  phase: Exclude<Phase, 'dual_read'>,
): RawBuilder<unknown> {
  return phase === 'new' ? tables.new : tables.old;
}

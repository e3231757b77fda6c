import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { Key, KeyRange } from '../model/key.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { type MigrationTables, migrationTables } from '../persons/tables.js';

/**
 * The advisory lock key a migration's plan changes take turns on (planning, splits; rule
 * `plan-from-keys`). @internal
 *
 * @example
 * ```ts
 * await sql`SELECT pg_advisory_xact_lock(${planLockKey(options)})`.execute(trx);
 * ```
 */
export function planLockKey(options: ResolvedMigrationOptions): RawBuilder<unknown> {
  return sql`hashtextextended(${`pg-dual-read:backfill:${options.controlSchema}.${options.name}`}, 0)`;
}

/**
 * A stored plan's head. @internal
 *
 * @example
 * ```ts
 * const plan = await plans.read(db); // { plannedRanges: 16, rowsEstimated: 800000 }
 * ```
 */
export interface StoredPlan {
  /** Ranges asked for (or chosen) when the plan was written; splits add ranges, not this. */
  readonly plannedRanges: number;
  readonly rowsEstimated: number;
}

/**
 * A range of the plan with its bounds as planned (before any checkpoint). @internal
 *
 * @example
 * ```ts
 * const [range] = await plans.rangesById(db, [3]);
 * ```
 */
export interface PlannedRange extends KeyRange {
  readonly rangeId: number;
}

/**
 * The backfill's plan in the control schema: the `backfill` row (pause flag, rate ceiling,
 * status) and the ranges as a whole (written at once, counted, discarded). A range's leases,
 * batches and splits are the {@link RangeStore}'s. The database is passed per call.
 * @internal
 */
export class PlanStore {
  private readonly tables: MigrationTables;

  constructor(private readonly options: ResolvedMigrationOptions) {
    this.tables = migrationTables(options);
  }

  /**
   * Takes the plan lock until the transaction ends: plans and splits of one migration take
   * turns (rule `plan-from-keys`).
   */
  async lock(trx: AnyDb): Promise<void> {
    await sql`SELECT pg_advisory_xact_lock(${planLockKey(this.options)})`.execute(trx);
  }

  /** The plan's head, or undefined when there is no plan. */
  async read(db: AnyDb): Promise<StoredPlan | undefined> {
    const { rows } = await sql<{ planned_ranges: number; rows_estimated: string }>`
      SELECT planned_ranges, rows_estimated::text FROM ${this.tables.backfill}
      WHERE migration = ${this.tables.migration}`.execute(db);
    const row = rows[0];
    return row
      ? { plannedRanges: row.planned_ranges, rowsEstimated: Number(row.rows_estimated) }
      : undefined;
  }

  /**
   * Writes a plan: its head and one range per end key (each from the previous end, the first
   * from the first key), the rows spread evenly; a plan without ranges is done at once.
   * Run it under the plan lock and the delete fence (rule `delete-fence`).
   */
  async write(
    db: AnyDb,
    plan: {
      readonly ends: readonly Key[];
      readonly plannedRanges: number;
      readonly rowsEstimated: number;
      readonly maxRowsPerSecond: number | undefined;
    },
  ): Promise<void> {
    const { tables } = this;
    const { ends, rowsEstimated } = plan;
    await sql`INSERT INTO ${tables.backfill}
      (migration, range_count, planned_ranges, rows_estimated, max_rows_per_second, status, finished_at)
      VALUES (${tables.migration}, ${ends.length}, ${plan.plannedRanges}, ${rowsEstimated},
        ${plan.maxRowsPerSecond ?? null}, ${ends.length === 0 ? 'done' : 'running'},
        ${ends.length === 0 ? sql`now()` : null})`.execute(db);
    let start: Key | undefined;
    for (const [index, end] of ends.entries()) {
      await sql`INSERT INTO ${tables.backfillRange}
        (migration, range_id, start_team, start_id, end_team, end_id, rows_estimated)
        VALUES (${tables.migration}, ${index + 1}, ${start?.team ?? null}, ${start?.id ?? null},
          ${end.team}, ${end.id}, ${Math.ceil(rowsEstimated / ends.length)})`.execute(db);
      start = end;
    }
  }

  /** Stores the rows-per-second ceiling that every worker reads with its next batch. */
  async setRate(db: AnyDb, maxRowsPerSecond: number | null): Promise<void> {
    await sql`UPDATE ${this.tables.backfill} SET max_rows_per_second = ${maxRowsPerSecond}
      WHERE migration = ${this.tables.migration}`.execute(db);
  }

  /** Sets the pause flag every worker reads with its next batch. */
  async setPaused(db: AnyDb, paused: boolean): Promise<void> {
    await sql`UPDATE ${this.tables.backfill} SET paused = ${paused}
      WHERE migration = ${this.tables.migration}`.execute(db);
  }

  /**
   * Discards the plan and its ranges (rows copied stay copied), unless a worker holds a live
   * lease on one of them. True when it did.
   */
  async discardUnlessLeased(db: AnyDb): Promise<boolean> {
    const { tables } = this;
    const result = await sql`DELETE FROM ${tables.backfill} AS b
      WHERE b.migration = ${tables.migration}
        AND NOT EXISTS (SELECT 1 FROM ${tables.backfillRange} AS r
          WHERE r.migration = b.migration AND r.lease_owner IS NOT NULL
            AND r.lease_expires_at > clock_timestamp())`.execute(db);
    return (result.numAffectedRows ?? 0n) > 0n;
  }

  /** Ranges not done yet, and whether the plan still exists (resetBackfill() removes it). */
  async remaining(db: AnyDb): Promise<{ notDone: number; planExists: boolean }> {
    const { tables } = this;
    const { rows } = await sql<{ not_done: number; plan_exists: boolean }>`
      SELECT (SELECT count(*)::int FROM ${tables.backfillRange}
          WHERE migration = ${tables.migration} AND status <> 'done') AS not_done,
        EXISTS (SELECT 1 FROM ${tables.backfill}
          WHERE migration = ${tables.migration}) AS plan_exists`.execute(db);
    return { notDone: rows[0]?.not_done ?? 0, planExists: rows[0]?.plan_exists ?? false };
  }

  /** Marks the backfill done once every range is; true when this call did it. */
  async finish(db: AnyDb): Promise<boolean> {
    const { tables } = this;
    const result = await sql`UPDATE ${tables.backfill}
      SET status = 'done', finished_at = clock_timestamp()
      WHERE migration = ${tables.migration} AND status <> 'done'
        AND NOT EXISTS (SELECT 1 FROM ${tables.backfillRange}
          WHERE migration = ${tables.migration} AND status <> 'done')`.execute(db);
    return (result.numAffectedRows ?? 0n) > 0n;
  }

  /** The ranges with these ids, in id order, with their planned bounds (missing ids left out). */
  async rangesById(db: AnyDb, rangeIds: readonly number[]): Promise<PlannedRange[]> {
    const { rows } = await sql<{
      range_id: number;
      start_team: string | null;
      start_id: string | null;
      end_team: string;
      end_id: string;
    }>`SELECT range_id, start_team::text AS start_team, start_id::text AS start_id,
        end_team::text AS end_team, end_id::text AS end_id
      FROM ${this.tables.backfillRange}
      WHERE migration = ${this.tables.migration} AND range_id = ANY(${[...rangeIds]}::int[])
      ORDER BY range_id`.execute(db);
    return rows.map((r) => ({
      rangeId: r.range_id,
      after:
        r.start_team === null || r.start_id === null
          ? undefined
          : { team: r.start_team, id: r.start_id },
      upTo: { team: r.end_team, id: r.end_id },
    }));
  }

  /** How many ranges the plan has, and the largest range id. */
  async rangeCount(db: AnyDb): Promise<{ count: number; maxRangeId: number | undefined }> {
    const { rows } = await sql<{ n: number; max: number | null }>`
      SELECT count(*)::int AS n, max(range_id) AS max FROM ${this.tables.backfillRange}
      WHERE migration = ${this.tables.migration}`.execute(db);
    return { count: rows[0]?.n ?? 0, maxRangeId: rows[0]?.max ?? undefined };
  }
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { UnexpectedResultError } from '../errors.js';
import type { Key } from '../model/key.js';
import { failingClasses, type MismatchClass, repairableClasses } from '../model/mismatch-class.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { keyAfter } from '../persons/key-range.js';
import { classArray } from './verify-context.js';

/**
 * Outcome of a stored verification run: `running` until it ends, then `clean`, `mismatched`,
 * `failed` (an error stopped it) or `aborted` (its signal stopped it).
 *
 * @example
 * ```ts
 * const latest = await migration.verification();
 * if (latest?.status === 'mismatched') console.error(`${latest.mismatches} keys differ`);
 * ```
 */
export type VerificationOutcome = 'running' | 'clean' | 'mismatched' | 'failed' | 'aborted';

/**
 * A verification run as stored in the control schema, readable from any process.
 *
 * @example
 * ```ts
 * const latest = (await migration.status()).verification;
 * if (latest?.status === 'clean' && latest.full && latest.newerThanBackfill) console.log('ready');
 * ```
 */
export interface VerificationSummary {
  /** The run's id in the control schema. */
  readonly id: string;
  /** The option `method` it ran with. */
  readonly method: 'join' | 'checksum';
  /** How it ended, or `running`. */
  readonly status: VerificationOutcome;
  /** True when the run covered every key (not only some backfill ranges). */
  readonly full: boolean;
  /** What it covered, in words: `every key` or `backfill ranges 3, 4`. */
  readonly range: string;
  /** The columns whose content it compared. */
  readonly columns: readonly string[];
  /** When it started. */
  readonly startedAt: Date;
  /** When it ended; undefined while it runs. */
  readonly finishedAt: Date | undefined;
  /** Rows of the old table it looked at. */
  readonly oldRows: number;
  /** Rows of the new table it looked at. */
  readonly newRows: number;
  /** Keys per class, agreeing classes included. */
  readonly counts: Readonly<Record<string, number>>;
  /** Keys in classes that make a run unclean, after re-checks and repair. */
  readonly mismatches: number;
  /** Started after the backfill finished (what cutover asks of a clean run). */
  readonly newerThanBackfill: boolean;
}

/**
 * One mismatched key: the person's key and its class. Never a row value.
 *
 * @example
 * ```ts
 * for await (const { teamId, personId, class: kind } of migration.mismatches(result.id)) {
 *   console.log(kind, teamId, personId);
 * }
 * ```
 */
export interface MismatchedKey {
  /** The person's team. */
  readonly teamId: number;
  /** The person's id, an exact decimal string. */
  readonly personId: string;
  /** What is wrong at this key: see {@link MismatchClass}. */
  readonly class: MismatchClass;
  /** True when `verify({ repair: true })` repaired the key (it agrees now). */
  readonly repaired: boolean;
}

interface VerificationRow {
  id: string;
  method: 'join' | 'checksum';
  status: VerificationOutcome;
  full_range: boolean;
  range_description: string;
  columns: string[];
  started_at: Date;
  finished_at: Date | null;
  old_rows: string;
  new_rows: string;
  counts: Record<string, number> | string;
  mismatches: string;
  newer_than_backfill: boolean;
}

/**
 * The control tables of verification runs: runs and their mismatched keys. The database is
 * passed per call. @internal
 */
export class VerificationStore {
  constructor(private readonly options: ResolvedMigrationOptions) {}

  private table(name: string) {
    return sql.id(this.options.controlSchema, name);
  }

  get mismatchTable() {
    return this.table('verification_mismatch');
  }

  async create(
    db: AnyDb,
    run: {
      method: 'join' | 'checksum';
      full: boolean;
      range: string;
      columns: readonly string[];
      epoch: string;
    },
  ): Promise<string> {
    const { rows } = await sql<{ id: string }>`
      INSERT INTO ${this.table('verification')}
        (migration, method, full_range, range_description, columns, epoch)
      VALUES (${this.options.name}, ${run.method}, ${run.full}, ${run.range},
        ${[...run.columns]}::text[], ${run.epoch}::bigint)
      RETURNING id::text AS id`.execute(db);
    const id = rows[0]?.id;
    if (id === undefined) {
      throw new UnexpectedResultError('Storing a verification run returned no run id.');
    }
    return id;
  }

  /** Stores mismatched keys (never values), given as parallel arrays; a key stored twice once. */
  async recordMismatches(
    db: AnyDb,
    id: string,
    keys: { readonly teams: string[]; readonly ids: string[]; readonly classes: string[] },
  ): Promise<void> {
    await sql`INSERT INTO ${this.mismatchTable} (verification_id, team_id, person_id, class)
      SELECT ${id}::bigint, k.team_id, k.person_id, k.class
      FROM unnest(${keys.teams}::bigint[], ${keys.ids}::bigint[], ${keys.classes}::text[])
        AS k(team_id, person_id, class)
      ON CONFLICT DO NOTHING`.execute(db);
  }

  /** Open mismatches per class (repaired keys excluded). */
  async openCounts(db: AnyDb, id: string): Promise<Record<string, number>> {
    const { rows } = await sql<{ class: string; keys: string }>`
      SELECT class, count(*)::text AS keys FROM ${this.mismatchTable}
      WHERE verification_id = ${id}::bigint AND repaired_at IS NULL
      GROUP BY class`.execute(db);
    return Object.fromEntries(rows.map((r) => [r.class, Number(r.keys)]));
  }

  async finish(
    db: AnyDb,
    id: string,
    outcome: {
      status: VerificationOutcome;
      oldRows: number;
      newRows: number;
      counts: Record<string, number>;
      mismatches: number;
      repaired?: Record<string, number>;
    },
  ): Promise<void> {
    await sql`UPDATE ${this.table('verification')} SET status = ${outcome.status},
        finished_at = clock_timestamp(), old_rows = ${outcome.oldRows}, new_rows = ${outcome.newRows},
        counts = ${JSON.stringify(outcome.counts)}::jsonb, mismatches = ${outcome.mismatches},
        repaired = ${outcome.repaired ? JSON.stringify(outcome.repaired) : null}::jsonb
      WHERE id = ${id}::bigint`.execute(db);
  }

  async markEnded(db: AnyDb, id: string, status: 'failed' | 'aborted'): Promise<void> {
    await sql`UPDATE ${this.table('verification')} SET status = ${status}, finished_at = clock_timestamp()
      WHERE id = ${id}::bigint AND status = 'running'`.execute(db);
  }

  /** The latest run of the migration, or one run by id. */
  async read(db: AnyDb, id?: string): Promise<VerificationSummary | undefined> {
    const { rows } = await sql<VerificationRow>`
      SELECT v.id::text AS id, v.method, v.status, v.full_range, v.range_description, v.columns,
        v.started_at, v.finished_at, v.old_rows::text AS old_rows, v.new_rows::text AS new_rows,
        v.counts, v.mismatches::text AS mismatches,
        coalesce(v.started_at > (SELECT b.finished_at FROM ${this.table('backfill')} AS b
          WHERE b.migration = v.migration AND b.status = 'done'), false) AS newer_than_backfill
      FROM ${this.table('verification')} AS v
      WHERE v.migration = ${this.options.name} AND (${id ?? null}::bigint IS NULL OR v.id = ${id ?? null}::bigint)
      ORDER BY v.id DESC LIMIT 1`.execute(db);
    const row = rows[0];
    if (!row) return undefined;
    return {
      id: row.id,
      method: row.method,
      status: row.status,
      full: row.full_range,
      range: row.range_description,
      columns: row.columns,
      startedAt: row.started_at,
      finishedAt: row.finished_at ?? undefined,
      oldRows: Number(row.old_rows),
      newRows: Number(row.new_rows),
      counts: typeof row.counts === 'string' ? JSON.parse(row.counts) : row.counts,
      mismatches: Number(row.mismatches),
      newerThanBackfill: row.newer_than_backfill,
    };
  }

  /** One page of a run's mismatched keys, in key order after `after`. */
  async page(
    db: AnyDb,
    id: string,
    after: { team: string; id: string; class: string } | undefined,
    limit: number,
    includeRepaired: boolean,
  ): Promise<MismatchedKey[]> {
    const { rows } = await sql<{
      team_id: string;
      person_id: string;
      class: string;
      repaired: boolean;
    }>`
      SELECT m.team_id::text AS team_id, m.person_id::text AS person_id, m.class,
        m.repaired_at IS NOT NULL AS repaired
      FROM ${this.mismatchTable} AS m
      JOIN ${this.table('verification')} AS v ON v.id = m.verification_id
      WHERE m.verification_id = ${id}::bigint AND v.migration = ${this.options.name}
        AND (${includeRepaired} OR m.repaired_at IS NULL)
        AND ${after === undefined ? sql`true` : sql`(m.team_id, m.person_id, m.class) > (${after.team}::int8, ${after.id}::int8, ${after.class}::text)`}
      ORDER BY m.team_id, m.person_id, m.class
      LIMIT ${limit}`.execute(db);
    return rows.map((r) => ({
      teamId: Number(r.team_id),
      personId: r.person_id,
      class: r.class as MismatchClass,
      repaired: r.repaired,
    }));
  }

  /**
   * A page of the run's open keys in classes a repair copies (`missing_in_new`,
   * `older_in_new`), each key once, in key order after `after`.
   */
  async openRepairableKeys(
    db: AnyDb,
    id: string,
    after: Key | undefined,
    limit: number,
  ): Promise<Key[]> {
    const { rows } = await sql<{ team: string; id: string }>`
      SELECT m.team_id::text AS team, m.person_id::text AS id
      FROM ${this.mismatchTable} AS m
      WHERE m.verification_id = ${id}::bigint AND m.repaired_at IS NULL
        AND m.class = ANY(${classArray(repairableClasses)})
        AND ${keyAfter('m', after, 'person_id')}
      GROUP BY m.team_id, m.person_id
      ORDER BY m.team_id, m.person_id -- qualified: the text aliases would sort as text
      LIMIT ${limit}`.execute(db);
    return rows.map((r) => ({ team: r.team, id: r.id }));
  }

  /** Marks the run's open repairable keys among `keys` as repaired. */
  async markRepaired(db: AnyDb, id: string, keys: readonly Key[]): Promise<void> {
    await sql`UPDATE ${this.mismatchTable} AS m SET repaired_at = clock_timestamp()
      WHERE m.verification_id = ${id}::bigint AND m.repaired_at IS NULL
        AND m.class = ANY(${classArray(repairableClasses)})
        AND (m.team_id, m.person_id) IN (
          SELECT k.team_id, k.person_id
          FROM unnest(${keys.map((k) => k.team)}::bigint[], ${keys.map((k) => k.id)}::bigint[])
            AS k(team_id, person_id))`.execute(db);
  }

  /** Number of open keys in classes that make a run unclean. */
  async failing(db: AnyDb, id: string): Promise<number> {
    const { rows } = await sql<{ n: string }>`
      SELECT count(*)::text AS n FROM ${this.mismatchTable}
      WHERE verification_id = ${id}::bigint AND repaired_at IS NULL
        AND class = ANY(${classArray(failingClasses)})`.execute(db);
    return Number(rows[0]?.n ?? 0);
  }
}

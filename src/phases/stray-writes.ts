import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { regclassText } from '../db/identifiers.js';
import { setLocal } from '../db/local-settings.js';
import { isSqlState } from '../db/query-failed.js';
import { TransitionRefusedError } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/** The start of the stray-write trigger's name (the library's own trigger on the old table). */
export const strayTriggerPrefix = 'pg_dual_read_stray_';

/**
 * One key of the old table written by something other than the library since `dual_read`
 * began (never a row value).
 *
 * @example
 * ```ts
 * for (const { teamId, personId, operation } of (await migration.status()).strayWrites.keys) {
 *   console.log(operation, teamId, personId);
 * }
 * ```
 */
export interface StrayWrite {
  /** The written person's team. */
  readonly teamId: number;
  /** The written person's id, an exact decimal string. */
  readonly personId: string;
  /** `truncate` has the key (0, 0): the whole table. */
  readonly operation: 'insert' | 'update' | 'delete' | 'truncate';
  /** How many writes of this `operation` the key had. */
  readonly writes: number;
  /** When the latest of them happened. */
  readonly lastAt: Date;
}

/**
 * The stray-write detector of a migration (control migration 7): the row trigger that
 * `startDualRead()` puts on the old table, and the keys it recorded. A write to the old table
 * in `dual_read` or `new` that does not come from the library (a service still on an old
 * repository, a script, someone in psql) is one the merged read and the cutover would not
 * expect; `cutover()` refuses while there is any. @internal
 *
 * @example
 * ```ts
 * await strayWrites.installTrigger(trx, 200);
 * const { count } = await strayWrites.read(db, 20);
 * ```
 */
export class StrayWrites {
  constructor(private readonly options: ResolvedMigrationOptions) {}

  /** The trigger's name on the old table: one per migration, within 63 bytes. */
  get triggerName(): string {
    const hash = createHash('sha1').update(this.options.name).digest('hex').slice(0, 12);
    return `${strayTriggerPrefix}${hash}`;
  }

  /**
   * Puts the trigger on the old table unless it is there, inside the phase change into
   * `dual_read` (after its lock: no write of the library is in flight then). `CREATE TRIGGER`
   * takes `SHARE ROW EXCLUSIVE` on the table, so it waits for any other session writing or
   * vacuuming it while the library's writes queue behind the phase change: the wait is bounded
   * by `lockTimeoutMs`, and a timeout is thrown as a {@link TransitionRefusedError} with the
   * guard `old_table_busy`, which `startDualRead()` retries. The caller's `lock_timeout` is
   * restored after.
   */
  async installTrigger(trx: AnyDb, lockTimeoutMs: number): Promise<void> {
    if (await this.hasTrigger(trx)) return;
    const { rows } = await sql<{ previous: string }>`
      SELECT current_setting('lock_timeout') AS previous,
        set_config('lock_timeout', ${lockTimeoutMs}::int || 'ms', true)`.execute(trx);
    try {
      await this.createTrigger(trx);
    } catch (error) {
      if (!isSqlState(error, '55P03')) throw error;
      throw new TransitionRefusedError('startDualRead', [
        {
          guard: 'old_table_busy',
          message: `another session held ${this.options.schema}.${this.options.oldTable} (a write outside the library, a VACUUM) for more than ${lockTimeoutMs} ms at every attempt.`,
          fix: 'find it in pg_stat_activity and retry, or raise phaseChangeLockTimeoutMs.',
          overridable: false,
        },
      ]);
    }
    await setLocal(trx, { lock_timeout: rows[0]?.previous ?? '0' });
  }

  /** Forgets what was recorded before now: the phase change into `dual_read` calls it. */
  async clear(trx: AnyDb): Promise<void> {
    await sql`DELETE FROM ${sql.id(this.options.controlSchema, 'stray_write')}
      WHERE migration = ${this.options.name}`.execute(trx);
  }

  private async hasTrigger(db: AnyDb): Promise<boolean> {
    const { schema, oldTable } = this.options;
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_trigger
      WHERE tgrelid = to_regclass(${regclassText(schema, oldTable)}) AND tgname = ${this.triggerName}`.execute(
      db,
    );
    return (rows[0]?.n ?? 0) > 0;
  }

  private async createTrigger(trx: AnyDb): Promise<void> {
    const { schema, oldTable, controlSchema, name } = this.options;
    const fn = sql.id(controlSchema, 'record_stray_write');
    await sql`CREATE TRIGGER ${sql.id(this.triggerName)}
      AFTER INSERT OR UPDATE OR DELETE ON ${sql.id(schema, oldTable)}
      FOR EACH ROW EXECUTE FUNCTION ${fn}(${sql.lit(name)})`.execute(trx);
    await sql`CREATE TRIGGER ${sql.id(this.truncateTriggerName)}
      AFTER TRUNCATE ON ${sql.id(schema, oldTable)}
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}(${sql.lit(name)})`.execute(trx);
  }

  /** The statement-level trigger's name: a TRUNCATE has no rows for the row trigger. */
  private get truncateTriggerName(): string {
    return `${this.triggerName}_t`;
  }

  /** Drops the trigger from `table` (the old table under its retired name, at finalize). */
  async dropTrigger(trx: AnyDb, table: string): Promise<void> {
    for (const trigger of [this.triggerName, this.truncateTriggerName]) {
      await sql`DROP TRIGGER IF EXISTS ${sql.id(trigger)}
        ON ${sql.id(this.options.schema, table)}`.execute(trx);
    }
  }

  /** How many keys were written astray, and the first `limit` of them (latest first). */
  async read(db: AnyDb, limit: number): Promise<{ count: number; keys: StrayWrite[] }> {
    const table = sql.id(this.options.controlSchema, 'stray_write');
    const { rows } = await sql<{
      team_id: string;
      person_id: string;
      operation: StrayWrite['operation'];
      writes: string;
      last_at: Date;
      total: string;
    }>`SELECT team_id::text, person_id::text, operation, writes::text, last_at,
        count(*) OVER ()::text AS total
      FROM ${table} WHERE migration = ${this.options.name}
      ORDER BY last_at DESC, team_id, person_id LIMIT ${limit}`.execute(db);
    const count = rows.length > 0 ? Number(rows[0]?.total) : 0;
    return {
      count: limit === 0 ? await this.count(db) : count,
      keys: rows.map((r) => ({
        teamId: Number(r.team_id),
        personId: r.person_id,
        operation: r.operation,
        writes: Number(r.writes),
        lastAt: r.last_at,
      })),
    };
  }

  private async count(db: AnyDb): Promise<number> {
    const { rows } = await sql<{ n: string }>`
      SELECT count(*)::text AS n FROM ${sql.id(this.options.controlSchema, 'stray_write')}
      WHERE migration = ${this.options.name}`.execute(db);
    return Number(rows[0]?.n ?? 0);
  }
}

import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/**
 * One live service instance of a migration, as its last heartbeat described it.
 *
 * @example
 * ```ts
 * for (const c of (await migration.status()).clients.live) console.log(c.service, c.host, c.epoch);
 * ```
 */
export interface ClientStatus {
  /** A random id of the repository instance, new at each start. */
  readonly instanceId: string;
  /** The migration option `serviceName` (the script's file name by default). */
  readonly service: string;
  /** The host name of its process. */
  readonly host: string;
  /** Its process id. */
  readonly pid: number;
  /** The pg-dual-read version it runs. */
  readonly libraryVersion: string;
  /** The repository protocol it speaks (which phases and rules it knows). */
  readonly protocol: number;
  /** The phase and epoch this instance had applied at its last heartbeat. */
  readonly phase: string;
  /** The epoch that goes with `phase` (a decimal string). */
  readonly epoch: string;
  /** Its read counters since it started: reads, rows returned, rows from the old table. */
  readonly reads: number;
  /** Persons its reads returned. */
  readonly rows: number;
  /** Of `rows`, persons that came from the old table. */
  readonly oldRows: number;
  /** When the instance first registered. */
  readonly startedAt: Date;
  /** When its last heartbeat was written. */
  readonly lastHeartbeat: Date;
}

/** What a heartbeat writes. @internal */
export type Heartbeat = Omit<ClientStatus, 'startedAt' | 'lastHeartbeat'> & {
  readonly intervalMs: number;
};

/**
 * The client registry of a migration (control migration 8): heartbeats, removal, and the live
 * instances (a heartbeat within three of its intervals). @internal
 *
 * @example
 * ```ts
 * await registry.heartbeat(db, beat, { prune: false });
 * const live = await registry.live(db);
 * ```
 */
export class ClientRegistry {
  constructor(private readonly options: ResolvedMigrationOptions) {}

  private get table() {
    return sql.id(this.options.controlSchema, 'client');
  }

  /**
   * Registers or refreshes this instance's row; with `prune` (an instance's first heartbeat,
   * not every one: a fleet heartbeats often) also forgets rows dead for a day.
   */
  async heartbeat(db: AnyDb, beat: Heartbeat, { prune }: { prune: boolean }): Promise<void> {
    await sql`INSERT INTO ${this.table} AS c (migration, instance_id, service, host, pid,
        library_version, protocol, phase, epoch, reads, rows_read, old_rows_read,
        heartbeat_interval_ms)
      VALUES (${this.options.name}, ${beat.instanceId}, ${beat.service}, ${beat.host}, ${beat.pid},
        ${beat.libraryVersion}, ${beat.protocol}, ${beat.phase}, ${beat.epoch}::bigint,
        ${beat.reads}, ${beat.rows}, ${beat.oldRows}, ${beat.intervalMs})
      ON CONFLICT (migration, instance_id) DO UPDATE SET phase = EXCLUDED.phase,
        epoch = EXCLUDED.epoch, reads = EXCLUDED.reads, rows_read = EXCLUDED.rows_read,
        old_rows_read = EXCLUDED.old_rows_read, last_heartbeat = clock_timestamp()`.execute(db);
    if (!prune) return;
    await sql`DELETE FROM ${this.table} WHERE migration = ${this.options.name}
      AND last_heartbeat < clock_timestamp() - interval '1 day'`.execute(db);
  }

  /** Removes this instance's row (a clean shutdown). */
  async remove(db: AnyDb, instanceId: string): Promise<void> {
    await sql`DELETE FROM ${this.table}
      WHERE migration = ${this.options.name} AND instance_id = ${instanceId}`.execute(db);
  }

  /** The instances whose last heartbeat is within three of their intervals, oldest first. */
  async live(db: AnyDb): Promise<ClientStatus[]> {
    const { rows } = await sql<{
      instance_id: string;
      service: string;
      host: string;
      pid: number;
      library_version: string;
      protocol: number;
      phase: string;
      epoch: string;
      reads: string;
      rows_read: string;
      old_rows_read: string;
      started_at: Date;
      last_heartbeat: Date;
    }>`SELECT instance_id, service, host, pid, library_version, protocol, phase,
        epoch::text AS epoch, reads::text AS reads, rows_read::text AS rows_read,
        old_rows_read::text AS old_rows_read, started_at, last_heartbeat
      FROM ${this.table} WHERE migration = ${this.options.name}
        AND last_heartbeat > clock_timestamp() - 3 * heartbeat_interval_ms * interval '1 millisecond'
      ORDER BY started_at, instance_id`.execute(db);
    return rows.map((r) => ({
      instanceId: r.instance_id,
      service: r.service,
      host: r.host,
      pid: Number(r.pid),
      libraryVersion: r.library_version,
      protocol: Number(r.protocol),
      phase: r.phase,
      epoch: r.epoch,
      reads: Number(r.reads),
      rows: Number(r.rows_read),
      oldRows: Number(r.old_rows_read),
      startedAt: r.started_at,
      lastHeartbeat: r.last_heartbeat,
    }));
  }
}

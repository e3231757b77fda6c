import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import createDebug from 'debug';
import type { DatabaseHandle } from '../db/database-handle.js';
import { outsideSessionScope } from '../db/pglite-dialect.js';
import { describeError } from '../db/query-failed.js';
import { clientProtocol, libraryVersion } from '../model/library-version.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { ClientRegistry } from '../phases/client-registry.js';
import type { PhaseWatcher } from '../phases/phase-watcher.js';
import type { ReadStats } from './read-stats.js';

const debug = createDebug('pg-dual-read:clients');

/**
 * This repository instance's row in the client registry: registered on the repository's first
 * read or write, refreshed every `heartbeatIntervalMs` with the epoch it applied and its read
 * counters, removed by `close()`. Never in the way: a failed heartbeat is logged and tried
 * again at the next tick. @internal
 *
 * @example
 * ```ts
 * heartbeat.start(); // idempotent
 * await heartbeat.stop();
 * ```
 */
export class ClientHeartbeat {
  readonly instanceId = randomUUID();
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private stopped = false;
  private registered = false;
  private readonly registry: ClientRegistry;

  constructor(
    private readonly handle: DatabaseHandle,
    private readonly options: ResolvedMigrationOptions,
    private readonly watcher: PhaseWatcher,
    private readonly stats: () => ReadStats,
  ) {
    this.registry = new ClientRegistry(options);
  }

  /** Starts the heartbeat (the first one at once); does nothing once started or stopped. */
  start(): void {
    if (this.timer || this.stopped) return;
    outsideSessionScope(() => {
      this.timer = setInterval(() => this.beat(), this.options.heartbeatIntervalMs);
      this.timer.unref();
      setImmediate(() => this.beat()).unref();
    });
  }

  /** Stops the heartbeat and removes this instance's row. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const started = this.timer !== undefined;
    this.timer = undefined;
    await this.beating;
    if (started) {
      await this.registry
        .remove(this.handle.db, this.instanceId)
        .catch((error: unknown) => debug('client removal failed: %s', describeError(error)));
    }
  }

  private beat(): void {
    if (this.beating || this.stopped) return;
    this.beating = this.send()
      .catch((error: unknown) => debug('heartbeat failed: %s', describeError(error)))
      .finally(() => {
        this.beating = undefined;
      });
  }

  private async send(): Promise<void> {
    const state = await this.watcher.current();
    const { totals } = this.stats();
    const prune = !this.registered;
    await this.registry.heartbeat(
      this.handle.db,
      {
        instanceId: this.instanceId,
        service: this.options.serviceName,
        host: hostname(),
        pid: process.pid,
        libraryVersion,
        protocol: clientProtocol,
        phase: state.phase,
        epoch: state.epoch,
        reads: totals.reads,
        rows: totals.rows,
        oldRows: totals.oldRows,
        intervalMs: this.options.heartbeatIntervalMs,
      },
      { prune },
    );
    this.registered = true;
  }
}

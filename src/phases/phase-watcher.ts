import createDebug from 'debug';
import type {
  DatabaseHandle,
  ListenConnectionEvent,
  StopListening,
} from '../db/database-handle.js';
import { assertSessionFree, outsideSessionScope } from '../db/pglite-dialect.js';
import { describeError } from '../db/query-failed.js';
import type { DualReadEmitter } from '../events.js';
import type { PhaseState } from '../model/phase.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { type PhaseNotification, phaseChannel } from './phase-channel.js';
import type { PhaseStore } from './phase-store.js';

const debug = createDebug('pg-dual-read:phase');

/**
 * How a service instance hears of phase changes (see `PhaseWatcher.listenerState`).
 *
 * @example
 * ```ts
 * if ((await migration.status()).phaseListener === 'reconnecting') log.warn('phase LISTEN down');
 * ```
 */
export type PhaseListenerState = 'not-started' | 'listening' | 'reconnecting' | 'polling';

/**
 * One service instance's cached view of the phase.
 *
 * The cache only chooses which SQL to send; it is never trusted for correctness. Reads carry
 * the control row's epoch in the same statement and are re-run when it differs from the
 * cache; writes re-read the phase under a lock (see {@link PhaseStore.fence}).
 *
 * **Bound**: an instance learns of a phase change (a) at once when it runs a read or a write
 * (the statement carries the epoch), (b) within a few milliseconds through LISTEN/NOTIFY when
 * the backend supports it, and (c) otherwise within `phaseRefreshIntervalMs` (default 1 s)
 * plus one query, through a periodic re-read.
 * @internal
 */
export class PhaseWatcher {
  private cached: PhaseState | undefined;
  private loading: Promise<PhaseState> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopListening: StopListening | undefined;
  private started: Promise<void> | undefined;
  private closed = false;
  private listening: PhaseListenerState = 'not-started';

  constructor(
    private readonly handle: DatabaseHandle,
    private readonly store: PhaseStore,
    private readonly options: ResolvedMigrationOptions,
    private readonly events: DualReadEmitter,
  ) {}

  /** The cached phase, loading it (and starting LISTEN and the refresh timer) on first use. */
  async current(): Promise<PhaseState> {
    // The listener and the timer outlive this call: they must not inherit its transaction
    // scope (on PGlite, queries from inside one throw), and this call must not wait for them
    // from inside one (they would wait for its transaction).
    assertSessionFree(this.handle.db);
    if (!this.started) this.started = outsideSessionScope(() => this.start());
    await this.started;
    if (this.cached) return this.cached;
    return this.refresh();
  }

  /** Re-reads the control row now and updates the cache. */
  async refresh(): Promise<PhaseState> {
    if (!this.loading) {
      this.loading = this.store
        .read(this.handle.db)
        .then((state) => {
          this.observe(state);
          return state;
        })
        .finally(() => {
          this.loading = undefined;
        });
    }
    return this.loading;
  }

  /** Records a phase seen by a statement, a NOTIFY or a transition; the newest epoch wins. */
  observe(state: PhaseState): void {
    const previous = this.cached;
    if (previous && BigInt(previous.epoch) >= BigInt(state.epoch)) return;
    this.cached = state;
    if (previous) debug('phase %s -> %s (epoch %s)', previous.phase, state.phase, state.epoch);
    this.events.emit('phase:changed', { ...state, previous: previous?.phase });
  }

  /** Stops listening and the refresh timer. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.started?.catch(() => undefined);
    const stop = this.stopListening;
    this.stopListening = undefined;
    await stop?.();
  }

  private async start(): Promise<void> {
    if (this.handle.listen) {
      try {
        const stop = await this.handle.listen(
          phaseChannel,
          (payload) => this.onNotify(payload),
          (event) => this.onListenConnection(event),
        );
        this.listening = 'listening';
        if (this.closed) await stop();
        else this.stopListening = stop;
      } catch (error) {
        debug('LISTEN failed, relying on periodic refresh: %s', describeError(error));
      }
    }
    if (this.listening === 'not-started') this.listening = 'polling';
    if (!this.closed) {
      this.timer = setInterval(() => {
        this.refresh().catch((error: unknown) =>
          this.events.emit('phase:refresh-failed', { error }),
        );
      }, this.options.phaseRefreshIntervalMs);
      this.timer.unref();
    }
  }

  /**
   * How this instance hears of phase changes: `listening` (NOTIFY, within milliseconds),
   * `reconnecting` (the LISTEN connection broke and is being reopened), `polling` (no LISTEN:
   * a user-supplied Kysely, or LISTEN failed), `not-started` (no read or write yet).
   */
  listenerState(): PhaseListenerState {
    return this.listening;
  }

  private onListenConnection(event: ListenConnectionEvent): void {
    if (this.closed) return;
    if (event.state === 'lost') {
      this.listening = 'reconnecting';
      debug('LISTEN connection lost: %s', event.reason);
      this.events.emit('phase:listen-lost', { reason: event.reason });
      return;
    }
    this.listening = 'listening';
    this.events.emit('phase:listen-restored', { attempts: event.attempts });
    // Notifications sent while the connection was down are lost: re-read the row.
    this.refresh().catch((error: unknown) => this.events.emit('phase:refresh-failed', { error }));
  }

  private onNotify(payload: string): void {
    let message: PhaseNotification;
    try {
      message = JSON.parse(payload) as PhaseNotification;
    } catch {
      return;
    }
    if (
      message.controlSchema !== this.options.controlSchema ||
      message.name !== this.options.name
    ) {
      return;
    }
    // Re-read rather than trust the payload: the row is the source of truth.
    this.refresh().catch((error: unknown) => this.events.emit('phase:refresh-failed', { error }));
  }
}

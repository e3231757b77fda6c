import { EventEmitter } from 'node:events';
import type { Phase, PhaseState } from './model/phase.js';

/**
 * Events a migration emits, named `noun:verb`, for logs and metrics.
 *
 * @example
 * ```ts
 * migration.events.on('phase:changed', ({ phase, epoch, previous }) => {
 *   log.info({ phase, epoch, previous }, 'persons migration phase changed');
 * });
 * ```
 */
export interface DualReadEvents {
  /** This instance learnt of a phase change (its own, a NOTIFY, or a periodic re-read). */
  'phase:changed': [PhaseState & { readonly previous: Phase | undefined }];
  /** The repository retried a read because the phase changed under it. */
  'read:phase-retry': [{ readonly method: string; readonly from: string; readonly to: string }];
  /** A background refresh of the phase failed (the cached phase stays in use). */
  'phase:refresh-failed': [{ readonly error: unknown }];
  /**
   * The connection that LISTENs for phase changes broke: until `phase:listen-restored`, this
   * instance learns of phase changes from its statements and the periodic re-read only.
   * `reason` is the driver's message (never row values).
   */
  'phase:listen-lost': [{ readonly reason: string }];
  /** The LISTEN connection is back (after `attempts` tries); the phase was re-read. */
  'phase:listen-restored': [{ readonly attempts: number }];
  /** A backfill batch committed: rows read from the old table and rows inserted into the new one. */
  'backfill:batch': [
    {
      readonly rangeId: number;
      readonly workerId: string;
      readonly scanned: number;
      readonly copied: number;
      readonly batchSize: number;
      readonly ms: number;
    },
  ];
  /** A range reached its end. */
  'backfill:range-done': [{ readonly rangeId: number; readonly workerId: string }];
  /** An idle worker split the busiest range and took the new range. */
  'backfill:range-split': [{ readonly rangeId: number; readonly workerId: string }];
  /** Every range of the backfill is done (emitted by the process that finished it). */
  'backfill:done': [{ readonly rowsCopied: number; readonly ms: number }];
  /** The backfill is paused (resumeBackfill() continues it); emitted while waiting. */
  'backfill:paused': [{ readonly workerId: string }];
  /**
   * A range's batches kept timing out on a lock (a live transaction holds its range row or one
   * of its rows) through `maxRetries` retries: the worker gave the range back and copies other
   * ranges for `retryInMs` before it tries this one again (`times` so far, up to `maxRetries`;
   * after that the lock timeout fails the backfill, which can be resumed).
   */
  'backfill:range-deferred': [
    {
      readonly rangeId: number;
      readonly workerId: string;
      readonly times: number;
      readonly retryInMs: number;
    },
  ];
  /** A worker's lease expired and another worker took its range. */
  'backfill:lease-lost': [{ readonly rangeId: number; readonly workerId: string }];
  /**
   * A batch (or a claim, split or renewal) failed with a lock timeout, deadlock, serialization
   * failure, dropped connection or unique violation and is retried; `sqlState` says which
   * (`'23505'`: a write raced into a batch's window, see the README's Backfill section).
   */
  'backfill:retry': [
    {
      readonly workerId: string;
      readonly attempt: number;
      readonly delayMs: number;
      readonly sqlState: string | undefined;
    },
  ];
  /**
   * Reads of the repository in `dual_read` answered (partly) from the old table, per call:
   * `rows` persons came from the old table out of `total`. A rate that reaches zero after the
   * backfill is a sign the migration is ready for cutover.
   */
  'read:fallback': [{ readonly method: string; readonly rows: number; readonly total: number }];
  /**
   * A sampled shadow comparison (option `shadowReads`) found the merged answer and the new
   * table's answer different for these keys. The caller got the merged answer; never row values.
   */
  'read:shadow-mismatch': [
    {
      readonly method: string;
      readonly keys: readonly { readonly teamId: number; readonly personId: string }[];
    },
  ];
  /** A sampled shadow read failed or timed out (the caller's read was not affected). */
  'read:shadow-failed': [{ readonly method: string; readonly error: unknown }];
  /** A verification finished a chunk of the key space. */
  'verify:chunk': [
    {
      readonly verificationId: string;
      readonly chunk: number;
      readonly chunks: number;
      readonly mismatches: number;
      readonly ms: number;
    },
  ];
  /** A verification finished (`clean`: no mismatch left after re-checks). */
  'verify:done': [
    {
      readonly verificationId: string;
      readonly clean: boolean;
      readonly mismatches: number;
      readonly ms: number;
    },
  ];
  /** A worker waits because a replica lags more than maxReplicationLagMs. */
  'backfill:throttled': [
    { readonly workerId: string; readonly reason: 'replication-lag'; readonly lagMs: number },
  ];
}

/**
 * A typed `EventEmitter` for {@link DualReadEvents}.
 *
 * @example
 * ```ts
 * const events = new DualReadEmitter();
 * events.on('phase:changed', (state) => console.log(state.phase));
 * ```
 */
export class DualReadEmitter {
  private readonly emitter = new EventEmitter();

  on<K extends keyof DualReadEvents>(
    event: K,
    listener: (...args: DualReadEvents[K]) => void,
  ): this {
    this.emitter.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof DualReadEvents>(
    event: K,
    listener: (...args: DualReadEvents[K]) => void,
  ): this {
    this.emitter.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof DualReadEvents>(
    event: K,
    listener: (...args: DualReadEvents[K]) => void,
  ): this {
    this.emitter.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** @internal */
  emit<K extends keyof DualReadEvents>(event: K, ...args: DualReadEvents[K]): void {
    // A throwing subscriber must not break a read or a write of the repository.
    try {
      this.emitter.emit(event, ...args);
    } catch {
      // ignored on purpose
    }
  }
}

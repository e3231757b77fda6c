import { EventEmitter } from 'node:events';
import type { MismatchClass } from './model/mismatch-class.js';
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
  'phase:changed': [
    PhaseState & {
      /** The phase this instance knew before, undefined on its first read of the phase. */
      readonly previous: Phase | undefined;
    },
  ];
  /** The repository retried a read because the phase changed under it. */
  'read:phase-retry': [
    {
      /** The repository method, e.g. `fetchPerson`. */
      readonly method: string;
      /** The phase the read started in. */
      readonly from: string;
      /** The phase it was retried in. */
      readonly to: string;
    },
  ];
  /** A background refresh of the phase failed (the cached phase stays in use). */
  'phase:refresh-failed': [
    {
      /** What the re-read threw. */
      readonly error: unknown;
    },
  ];
  /**
   * The connection that LISTENs for phase changes broke: until `phase:listen-restored`, this
   * instance learns of phase changes from its statements and the periodic re-read only.
   * `reason` is the driver's message (never row values).
   */
  'phase:listen-lost': [
    {
      /** Why the connection broke, as the driver said it. */
      readonly reason: string;
    },
  ];
  /** The LISTEN connection is back (after `attempts` tries); the phase was re-read. */
  'phase:listen-restored': [
    {
      /** Connection attempts it took, the successful one included. */
      readonly attempts: number;
    },
  ];
  /** A backfill batch committed: rows read from the old table and rows inserted into the new one. */
  'backfill:batch': [
    {
      /** The range the batch belongs to. */
      readonly rangeId: number;
      /** The worker that ran it (option `workerId`, or host, pid and a random suffix). */
      readonly workerId: string;
      /** Rows of the old table the batch read. */
      readonly scanned: number;
      /** Rows it inserted into the new table (fewer when the new table had some already). */
      readonly copied: number;
      /** The batch size asked for (adapted to `targetBatchMs`). */
      readonly batchSize: number;
      /** How long the batch's transaction took, in milliseconds. */
      readonly ms: number;
    },
  ];
  /** A range reached its end. */
  'backfill:range-done': [
    {
      /** The range that is done. */
      readonly rangeId: number;
      /** The worker that copied its last batch. */
      readonly workerId: string;
    },
  ];
  /** An idle worker split the busiest range and took the new range. */
  'backfill:range-split': [
    {
      /** The new range (the second half of the busiest one). */
      readonly rangeId: number;
      /** The worker that split it and took it. */
      readonly workerId: string;
    },
  ];
  /** Every range of the backfill is done (emitted by the process that finished it). */
  'backfill:done': [
    {
      /** Rows this process's `backfill()` call copied (other processes' rows not included). */
      readonly rowsCopied: number;
      /** How long that call took, in milliseconds. */
      readonly ms: number;
    },
  ];
  /** The backfill is paused (resumeBackfill() continues it); emitted while waiting. */
  'backfill:paused': [
    {
      /** The worker that is waiting. */
      readonly workerId: string;
    },
  ];
  /**
   * A range's batches kept timing out on a lock (a live transaction holds its range row or one
   * of its rows) through `maxRetries` retries: the worker gave the range back and copies other
   * ranges for `retryInMs` before it tries this one again (`times` so far, up to `maxRetries`;
   * after that the lock timeout fails the backfill, which can be resumed).
   */
  'backfill:range-deferred': [
    {
      /** The range put off. */
      readonly rangeId: number;
      /** The worker that gave it back. */
      readonly workerId: string;
      /** How many times this worker has put the range off so far. */
      readonly times: number;
      /** How long the worker leaves the range alone, in milliseconds. */
      readonly retryInMs: number;
    },
  ];
  /** A worker's lease expired and another worker took its range. */
  'backfill:lease-lost': [
    {
      /** The range whose lease expired. */
      readonly rangeId: number;
      /** The worker that lost it (it stops copying that range). */
      readonly workerId: string;
    },
  ];
  /**
   * A batch (or a claim, split or renewal) failed with a lock timeout, deadlock, serialization
   * failure, dropped connection or unique violation and is retried; `sqlState` says which
   * (`'23505'`: a write raced into a batch's window, see the README's Backfill section).
   */
  'backfill:retry': [
    {
      /** The worker that retries. */
      readonly workerId: string;
      /** The retry's number, from 1 to `maxRetries`. */
      readonly attempt: number;
      /** How long it waits before the retry (exponential backoff with jitter), in milliseconds. */
      readonly delayMs: number;
      /** Postgres's SQLSTATE of the failure, undefined for a dropped connection. */
      readonly sqlState: string | undefined;
    },
  ];
  /**
   * Reads of the repository in `dual_read` answered (partly) from the old table, per call:
   * `rows` persons came from the old table out of `total`. A rate that reaches zero after the
   * backfill is a sign the migration is ready for cutover.
   */
  'read:fallback': [
    {
      /** The repository read method, e.g. `fetchPersonsByDistinctIds`. */
      readonly method: string;
      /** Rows of the answer that came from the old table. */
      readonly rows: number;
      /** Rows of the whole answer. */
      readonly total: number;
    },
  ];
  /**
   * A read of the repository that returns persons (`fetchPerson`, `fetchPersonsByDistinctIds`,
   * `fetchPersonsByPersonIds`, `fetchPersonByUuid`, `listPersons`) answered, in any phase:
   * `fromNew` persons came from the new table and `fromOld` from the old one (in `old` all
   * from the old table, in `new` and `finalized` all from the new one). A read re-run after a
   * phase change is one event. Counts only, never keys or values.
   */
  'read:done': [
    {
      /** The repository read method. */
      readonly method: string;
      /** The phase the read ran in. */
      readonly phase: Phase;
      /** Persons returned from the new table. */
      readonly fromNew: number;
      /** Persons returned from the old table (in `dual_read`: the fallbacks). */
      readonly fromOld: number;
    },
  ];
  /**
   * A write call of the repository (`createPerson`, `updatePerson`, `updatePersonAssertVersion`,
   * `deletePerson`, `addDistinctId`, `moveDistinctIds`) returned (`ok`) or threw, after `ms`
   * milliseconds (its own transaction included; inside `inTransaction`, its statements only).
   */
  'write:done': [
    {
      /** The repository write method. */
      readonly method: string;
      /** How long the call took, in milliseconds. */
      readonly ms: number;
      /** False when it threw (a refused input, a conflict error, a failed statement). */
      readonly ok: boolean;
    },
  ];
  /**
   * A sampled shadow comparison (option `shadowReads`) found the merged answer and the new
   * table's answer different for these keys. The caller got the merged answer; never row values.
   */
  'read:shadow-mismatch': [
    {
      /** The repository read method that was sampled. */
      readonly method: string;
      /** The persons that differ, by key only. */
      readonly keys: readonly {
        /** The person's team. */
        readonly teamId: number;
        /** The person's id, an exact decimal string. */
        readonly personId: string;
      }[];
    },
  ];
  /** A sampled shadow read failed or timed out (the caller's read was not affected). */
  'read:shadow-failed': [
    {
      /** The repository read method that was sampled. */
      readonly method: string;
      /** What the shadow read threw (its timeout included). */
      readonly error: unknown;
    },
  ];
  /** A verification finished a chunk of the key space. */
  'verify:chunk': [
    {
      /** The stored run, as `migration.verification(id)` reads it. */
      readonly verificationId: string;
      /** This chunk's number, from 1 to `chunks`. */
      readonly chunk: number;
      /** How many chunks the run has. */
      readonly chunks: number;
      /** Mismatched keys found in this chunk (before re-checks). */
      readonly mismatches: number;
      /** How long the chunk took, in milliseconds. */
      readonly ms: number;
    },
  ];
  /**
   * A verification finished (`clean`: no mismatch left after re-checks). `counts`: the keys of
   * each mismatch class still open after re-checks (and repair), every class present (0 when
   * none).
   */
  'verify:done': [
    {
      /** The stored run, as `migration.verification(id)` reads it. */
      readonly verificationId: string;
      /** True when no key is left mismatched. */
      readonly clean: boolean;
      /** Keys left mismatched after re-checks (those that make the run unclean). */
      readonly mismatches: number;
      /** Keys per mismatch class still open (every class present, 0 when none). */
      readonly counts: Readonly<Record<MismatchClass, number>>;
      /** How long the run took, in milliseconds. */
      readonly ms: number;
    },
  ];
  /** A worker waits because a replica lags more than maxReplicationLagMs. */
  'backfill:throttled': [
    {
      /** The worker that waits. */
      readonly workerId: string;
      /** Why it waits. */
      readonly reason: 'replication-lag';
      /** The largest lag of a standby (write, flush or replay), in milliseconds. */
      readonly lagMs: number;
    },
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

  /**
   * Calls `listener` on every `event`. What a listener throws is swallowed (the listeners after
   * it miss that event): it never breaks the read, write or backfill that emitted it.
   *
   * @example
   * ```ts
   * migration.events.on('backfill:batch', ({ scanned, ms }) => histogram.record(ms, { scanned }));
   * ```
   */
  on<K extends keyof DualReadEvents>(
    event: K,
    listener: (...args: DualReadEvents[K]) => void,
  ): this {
    this.emitter.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /**
   * Removes a listener added with {@link DualReadEmitter.on} (the same function).
   *
   * @example
   * ```ts
   * const onBatch = () => batches++;
   * migration.events.on('backfill:batch', onBatch);
   * await migration.backfill();
   * migration.events.off('backfill:batch', onBatch);
   * ```
   */
  off<K extends keyof DualReadEvents>(
    event: K,
    listener: (...args: DualReadEvents[K]) => void,
  ): this {
    this.emitter.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /**
   * Calls `listener` on the next `event` only.
   *
   * @example
   * ```ts
   * migration.events.once('verify:done', ({ clean }) => console.log(clean ? 'clean' : 'mismatched'));
   * ```
   */
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

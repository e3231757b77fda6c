import { setTimeout as sleep } from 'node:timers/promises';
import createDebug from 'debug';
import type { AnyDb } from '../db/any-db.js';
import { isSqlState, sqlStateOf, toQueryFailedError } from '../db/query-failed.js';
import { replicationLag } from '../db/replication-lag.js';
import { BackfillRefusedError, BackfillStoppedError, DualReadError } from '../errors.js';
import type { DualReadEmitter } from '../events.js';
import type { ResolvedBackfillOptions } from '../options/backfill-options.js';
import { BatchPacer } from './batch-pacer.js';
import type { BatchArbiter, BatchOutcome, LeasedRange } from './batch-statement.js';
import type { PlanStore } from './plan-store.js';
import type { RangeStore } from './range-store.js';

const debug = createDebug('pg-dual-read:backfill');

/**
 * SQLSTATEs worth a retry after a pause: lock timeout, deadlock, serialization, cancel,
 * connection (and any error without a SQLSTATE: a connection lost before the server answered),
 * and a unique violation (a batch without an arbiter meeting a write that raced into
 * its window, or any batch meeting a copy-on-write of the same person on its uuid index: see
 * `RangeStore.batch`; one that persists is a real conflict, reported after `maxRetries`).
 */
const retryableStates = [
  '55P03',
  '40P01',
  '40001',
  '57014',
  '57P01',
  '08006',
  '08003',
  '08000',
  '23505',
];

/** What one worker did. @internal */
export interface WorkerTotals {
  rowsScanned: number;
  rowsCopied: number;
  batches: number;
  rangesDone: number;
}

/**
 * One worker of a backfill: leases a range, copies it batch by batch, and when no range is
 * free splits the busiest one; it returns when every range is done or the signal aborts.
 * While other workers (any process) hold the last ranges, it keeps polling, so it takes over
 * a range whose worker died as soon as the lease expires. @internal
 */
export class BackfillWorker {
  private readonly pacer: BatchPacer;
  readonly totals: WorkerTotals = { rowsScanned: 0, rowsCopied: 0, batches: 0, rangesDone: 0 };
  /** Ranges put off after their batches kept timing out on a lock: how often, and until when. */
  private readonly deferred = new Map<number, { times: number; until: number }>();

  constructor(
    private readonly db: AnyDb,
    private readonly store: RangeStore,
    private readonly plans: PlanStore,
    private readonly options: ResolvedBackfillOptions,
    private readonly workerId: string,
    private readonly events: DualReadEmitter,
  ) {
    this.pacer = new BatchPacer(options.batchSize, options.maxBatchSize, options.targetBatchMs);
  }

  async run(): Promise<void> {
    try {
      await this.work();
    } finally {
      await this.store.retire(this.db, this.workerId).catch(() => undefined);
    }
  }

  private async work(): Promise<void> {
    const { leaseMs } = this.options;
    while (!this.aborted()) {
      let range = await this.retrying(() =>
        this.store.claim(this.db, this.workerId, leaseMs, this.rangesPutOff()),
      );
      if (!range) {
        // No free range: take the second half of the busiest one (no long tail).
        range = await this.retrying(() =>
          this.store.split(this.db, this.workerId, leaseMs, Math.max(4 * this.pacer.batchSize, 2)),
        );
        if (range) {
          this.events.emit('backfill:range-split', {
            rangeId: range.rangeId,
            workerId: this.workerId,
          });
        }
      }
      if (range) {
        await this.copyRange(range);
        continue;
      }
      const { notDone, planExists } = await this.retrying(() => this.plans.remaining(this.db));
      if (!planExists) throw planGone();
      if (notDone === 0) return;
      // Others hold the last ranges: wait, to take one over if its worker dies; a range done
      // by a worker of this process ends the wait at once (the call returns with the last one).
      await this.idleWait(Math.min(250, Math.max(50, leaseMs / 4)));
    }
  }

  /** `pause(ms)`, cut short when a worker of this process finishes a range. */
  private async idleWait(ms: number): Promise<void> {
    if (this.aborted()) return;
    const cut = new AbortController();
    const cutShort = () => cut.abort();
    this.events.on('backfill:range-done', cutShort);
    this.options.signal?.addEventListener('abort', cutShort, { once: true });
    try {
      await sleep(ms, undefined, { signal: cut.signal }).catch(() => undefined);
    } finally {
      this.events.off('backfill:range-done', cutShort);
      this.options.signal?.removeEventListener('abort', cutShort);
    }
  }

  private async copyRange(leased: LeasedRange): Promise<void> {
    let range = leased;
    // A write that raced into a batch's window (23505) makes the rest of the range's batches
    // pre-check the key index: a range under live writes is not retried batch after batch.
    let arbiter: BatchArbiter = 'when-needed';
    try {
      while (!this.aborted()) {
        await this.waitForReplicas();
        const size = this.pacer.batchSize;
        const started = performance.now();
        const outcome = await this.retrying(() =>
          this.store
            .batch(this.db, this.workerId, range, {
              limit: size,
              leaseMs: this.options.leaseMs,
              lockTimeoutMs: this.options.batchLockTimeoutMs,
              lockMode: this.options.lockMode,
              arbiter,
            })
            .catch((error: unknown) => {
              if (isSqlState(error, '23505')) arbiter = 'always';
              throw error;
            }),
        );
        const next = await this.afterBatch(range, outcome, size, performance.now() - started);
        if (next === 'range-ended') return;
        range = next;
      }
      // Aborted: give the range back so a restart (or another worker) resumes at once.
      await this.store.release(this.db, this.workerId, range.rangeId).catch(() => undefined);
    } catch (error) {
      await this.store.release(this.db, this.workerId, range.rangeId).catch(() => undefined);
      if (this.putOff(range.rangeId, error)) return;
      throw error;
    }
  }

  /** Acts on a batch's outcome: the range to go on with, or `'range-ended'`. */
  private async afterBatch(
    range: LeasedRange,
    outcome: BatchOutcome,
    size: number,
    elapsed: number,
  ): Promise<LeasedRange | 'range-ended'> {
    const { rangeId } = range;
    switch (outcome.kind) {
      case 'copied':
        return this.afterCopied(range, outcome, size, elapsed);
      case 'moved':
        // An idle worker took the second half (continue up to the new end), or the last batch
        // committed although its reply was lost (continue after its checkpoint).
        return { ...range, after: outcome.after, end: outcome.end };
      case 'paused':
        // Paused workers keep their ranges: the lease is renewed while they wait.
        this.events.emit('backfill:paused', { workerId: this.workerId });
        await this.waitKeepingLease(rangeId, Math.min(1_000, this.options.leaseMs / 4));
        return range;
      case 'lease-lost':
        // Our lease expired and another worker took the range: its work, not ours.
        this.events.emit('backfill:lease-lost', { rangeId, workerId: this.workerId });
        return 'range-ended';
      case 'not-dual-read':
        throw new BackfillStoppedError(
          `The migration left phase dual_read (now ${outcome.phase}) while the backfill ran; ` +
            'it stopped after its last committed batch. Return to dual_read to resume it.',
        );
    }
  }

  /** Counts a committed batch, paces the next one, and says whether the range is done. */
  private async afterCopied(
    range: LeasedRange,
    outcome: Extract<BatchOutcome, { kind: 'copied' }>,
    size: number,
    elapsed: number,
  ): Promise<LeasedRange | 'range-ended'> {
    this.totals.rowsScanned += outcome.scanned;
    this.totals.rowsCopied += outcome.copied;
    this.totals.batches += 1;
    this.events.emit('backfill:batch', {
      rangeId: range.rangeId,
      workerId: this.workerId,
      scanned: outcome.scanned,
      copied: outcome.copied,
      batchSize: size,
      ms: elapsed,
    });
    const next = outcome.last ? { ...range, after: outcome.last } : range;
    // Paced before anything else: the last batch of a range counts toward the ceiling too.
    const wait = this.pacer.afterBatch(
      outcome.scanned,
      elapsed,
      outcome.maxRowsPerSecond,
      outcome.activeRanges,
    );
    if (wait > 0) await this.waitKeepingLease(range.rangeId, wait);
    if (!outcome.done) return next;
    this.totals.rangesDone += 1;
    this.events.emit('backfill:range-done', { rangeId: range.rangeId, workerId: this.workerId });
    return 'range-ended';
  }

  /**
   * A range whose batches kept timing out on a lock (a live transaction holds its range row or
   * one of its rows: a delete left open, say) is given back and put off while the worker copies
   * other ranges, up to `maxRetries` times per range; then the lock timeout fails the backfill
   * as before. True when put off.
   */
  private putOff(rangeId: number, error: unknown): boolean {
    if (sqlStateOf(error) !== '55P03' || this.aborted()) return false;
    const times = (this.deferred.get(rangeId)?.times ?? 0) + 1;
    if (times > this.options.maxRetries) return false;
    const retryInMs = this.options.retryBaseMs * 2 ** this.options.maxRetries;
    this.deferred.set(rangeId, { times, until: performance.now() + retryInMs });
    debug('range %d put off (%d), lock timeouts', rangeId, times);
    this.events.emit('backfill:range-deferred', {
      rangeId,
      workerId: this.workerId,
      times,
      retryInMs,
    });
    return true;
  }

  /** The ranges this worker put off whose pause has not run out. */
  private rangesPutOff(): number[] {
    const now = performance.now();
    return [...this.deferred].filter(([, d]) => d.until > now).map(([rangeId]) => rangeId);
  }

  /**
   * Waits `ms` (a pacing wait or a pause) without losing the range: the lease is renewed
   * every third of `leaseMs`, so a long wait under a low ceiling never hands the range over.
   */
  private async waitKeepingLease(rangeId: number, ms: number): Promise<void> {
    const step = Math.max(50, this.options.leaseMs / 3);
    let left = ms;
    while (left > 0 && !this.aborted()) {
      await this.pause(Math.min(step, left));
      left -= step;
      await this.retrying(() =>
        this.store.renew(this.db, this.workerId, rangeId, this.options.leaseMs),
      );
    }
  }

  /** Waits while a replica lags more than `maxReplicationLagMs` (pg_stat_replication). */
  private async waitForReplicas(): Promise<void> {
    const maxLag = this.options.maxReplicationLagMs;
    if (maxLag === undefined) return;
    while (!this.aborted()) {
      const { lagMs, hiddenStandbys } = await replicationLag(this.db);
      if (hiddenStandbys > 0) {
        throw new BackfillRefusedError(
          `maxReplicationLagMs is set, but ${hiddenStandbys} standby(s) in pg_stat_replication ` +
            'hide their lag from this role: grant it pg_read_all_stats (GRANT pg_read_all_stats ' +
            'TO <role>) or drop maxReplicationLagMs. The backfill stopped after its last batch.',
        );
      }
      if (lagMs <= maxLag) return;
      this.events.emit('backfill:throttled', {
        workerId: this.workerId,
        reason: 'replication-lag',
        lagMs,
      });
      await this.pause(Math.min(1_000, maxLag));
    }
  }

  /** Runs `fn`, retrying lock timeouts, deadlocks and serialization failures with backoff. */
  private async retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (error) {
        if (error instanceof DualReadError && !(error.code === 'QUERY_FAILED')) throw error;
        // No SQLSTATE: the server never answered (a connection lost at the socket, a pool
        // that could not connect); the batch is idempotent, so it is retried like 08006.
        const retryable =
          sqlStateOf(error) === undefined ||
          retryableStates.some((state) => isSqlState(error, state));
        if (!retryable || attempt >= this.options.maxRetries) {
          throw error instanceof DualReadError
            ? error
            : toQueryFailedError(error, 'backfill batch', 0);
        }
        const delay = this.options.retryBaseMs * 2 ** attempt * (0.5 + Math.random());
        debug(
          'retrying after %s (attempt %d, %d ms)',
          (error as { code?: string }).code,
          attempt + 1,
          delay,
        );
        this.events.emit('backfill:retry', {
          workerId: this.workerId,
          attempt: attempt + 1,
          delayMs: delay,
          sqlState: sqlStateOf(error),
        });
        await this.pause(delay);
      }
    }
  }

  private aborted(): boolean {
    return this.options.signal?.aborted ?? false;
  }

  private async pause(ms: number): Promise<void> {
    if (this.aborted()) return;
    await sleep(ms, undefined, this.options.signal ? { signal: this.options.signal } : {}).catch(
      () => undefined,
    );
  }
}

/**
 * The plan was discarded (resetBackfill()) under running workers. @internal
 *
 * @example
 * ```ts
 * if (!planExists) throw planGone();
 * ```
 */
export function planGone(): BackfillStoppedError {
  return new BackfillStoppedError(
    'The backfill plan was discarded (resetBackfill()) while this backfill ran: it stopped. ' +
      'Call backfill() again to plan anew; rows already copied stay copied.',
  );
}

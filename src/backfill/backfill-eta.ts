import { BatchCommitRates, type WorkerProgress } from './batch-commit-rates.js';
import { simulateRangeSchedule } from './range-schedule.js';

/**
 * When the backfill will end, and how sure that is.
 *
 * @example
 * ```ts
 * const { eta } = (await migration.backfillStatus()) ?? {};
 * if (eta?.seconds !== undefined) {
 *   console.log(`ETA ${Math.round(eta.seconds)} s (${eta.lowSeconds}-${eta.highSeconds} s)${eta.settling ? ', settling' : ''}`);
 * }
 * ```
 */
export interface BackfillEta {
  /** Seconds to go; undefined while paused or before any batch was seen. */
  readonly seconds: number | undefined;
  /** The soonest it may end, in seconds from now, given how steady the rate was. */
  readonly lowSeconds: number | undefined;
  /** The latest it may end, in seconds from now, given how steady the rate was. */
  readonly highSeconds: number | undefined;
  /** `now + seconds`. */
  readonly finishAt: Date | undefined;
  /**
   * True until this object has watched the backfill for a few seconds: the estimate then rests
   * on the workers' last batches only, and its range is wide. Polling `backfillStatus()` (as
   * `status --watch` does) settles it.
   */
  readonly settling: boolean;
  /** Rows per second the estimate assumes now, after the rate ceiling. */
  readonly ratePerSecond: number;
}

/** The part of the backfill's status the estimate is made from. @internal */
export interface BackfillProgressSnapshot {
  readonly state: 'running' | 'paused' | 'done';
  readonly plannedAt: Date;
  readonly rowsScanned: number;
  /** Smoothed rate of the workers' last batches (all processes). */
  readonly ratePerSecond: number;
  readonly maxRowsPerSecond: number | undefined;
  readonly activeWorkers: number;
  readonly ranges: readonly {
    readonly rangeId: number;
    readonly status: 'pending' | 'running' | 'done';
    readonly rowsEstimated: number;
    readonly rowsScanned: number;
    /** The worker holding the range. */
    readonly worker?: string | undefined;
  }[];
  /** The live workers and their batch commits; without them, rates are read to read. */
  readonly workers?: readonly WorkerProgress[];
}

interface Sample {
  /** Time the backfill was running (not paused) since this estimator first saw it. */
  readonly activeMs: number;
  readonly rowsScanned: number;
  /** Rows scanned of each running range. */
  readonly ranges: ReadonlyMap<number, number>;
}

/** Rates are measured over the last half of the time watched, within these bounds. */
const minWindowMs = 10_000;
const maxWindowMs = 120_000;
/** The window's own rate needs this much of it; before, the workers' smoothed rate is used. */
const minRateSpanMs = 1_000;
/** Watched for less than this, the estimate is "settling". */
const settleMs = 3_000;
/** A range's own rate needs this much of its progress watched. */
const minRangeSpanMs = 2_000;
/** As `backfill()` splits: a range is worth splitting above a few batches. */
const minRowsToSplit = 4_000;
/** A rate this close to the ceiling was held back by it (the unthrottled rate is unknown). */
const boundByCeiling = 0.9;

/**
 * Estimates the backfill's end from successive snapshots of its status: what is left in each
 * range, each range's own observed rate (a hot team's range is not a cold one), the workers
 * running, the rate ceiling, with the time spent paused left out. Rates are measured between
 * the workers' batch commits ({@link BatchCommitRates}) when the snapshots carry the workers,
 * else between snapshots. The schedule of the ranges is
 * replayed forward ({@link simulateRangeSchedule}), so the tail of the slowest ranges counts.
 * A change of the ceiling starts the measurement again (until then: the new ceiling when the
 * old one held the rate back, else the rate seen, under the new ceiling). One estimator per
 * watcher: the migration object keeps one, so every `backfillStatus()` call feeds it.
 * @internal
 *
 * @example
 * ```ts
 * const estimator = new BackfillEtaEstimator();
 * const eta = estimator.estimate(snapshot, Date.now());
 * ```
 */
export class BackfillEtaEstimator {
  private plannedAt: number | undefined;
  private ceiling: number | undefined;
  private samples: Sample[] = [];
  private activeMs = 0;
  private last: { wallMs: number; running: boolean } | undefined;
  /** Rows per second to assume right after a change of the ceiling, until measured again. */
  private afterCeilingChange: number | undefined;
  /** Rates between the workers' batch commits: preferred to the read-to-read ones. */
  private readonly commits = new BatchCommitRates();

  estimate(status: BackfillProgressSnapshot, nowMs: number = Date.now()): BackfillEta {
    this.follow(status, nowMs);
    if (status.state === 'done') {
      return {
        seconds: 0,
        lowSeconds: 0,
        highSeconds: 0,
        finishAt: new Date(nowMs),
        settling: false,
        ratePerSecond: 0,
      };
    }
    if (status.state === 'paused') return unknown(false);
    const first = this.windowStart();
    const current = this.samples.at(-1);
    const spanMs = first && current ? current.activeMs - first.activeMs : 0;
    const workers = Math.max(1, status.activeWorkers, current?.ranges.size ?? 0);
    const commitWindowMs = windowOf(this.commits.spanMs());
    // Only the workers still running: a stopped backfill is not given the pace of those gone.
    const live = new Set((status.workers ?? []).map((w) => w.workerId));
    const liveRates = [...this.commits.workerRates(commitWindowMs)]
      .filter(([workerId]) => live.has(workerId))
      .map(([, rate]) => rate);
    const perWorker =
      average(liveRates) ??
      (first && current && spanMs >= minRateSpanMs
        ? ((current.rowsScanned - first.rowsScanned) * 1_000) / spanMs
        : (this.afterCeilingChange ?? status.ratePerSecond)) / workers;
    if (!(perWorker > 0)) return unknown(true);
    const rangeRates = this.rangeRates(first, current);
    for (const r of status.ranges) {
      const rate =
        r.status === 'running' && r.worker && live.has(r.worker)
          ? this.commits.rangeRate(r.worker, r.rangeId, commitWindowMs)
          : undefined;
      if (rate !== undefined) rangeRates.set(r.rangeId, rate);
    }
    const rowsToGo = sum(status.ranges.map(rowsToGoOf));
    const seconds = simulateRangeSchedule(
      status.ranges
        .filter((r) => r.status !== 'done')
        .map((r) => ({
          rowsToGo: rowsToGoOf(r),
          running: r.status === 'running',
          ratePerSecond: rangeRates.get(r.rangeId),
        })),
      {
        workers,
        averageRatePerSecond: perWorker,
        maxRowsPerSecond: status.maxRowsPerSecond,
        minRowsToSplit,
      },
    );
    const settling = spanMs < settleMs;
    const spread = settling ? 0.5 : this.rateSpread(first, current);
    return {
      seconds,
      lowSeconds: seconds / (1 + spread),
      highSeconds: seconds / (1 - spread),
      finishAt: new Date(nowMs + seconds * 1_000),
      settling,
      ratePerSecond: seconds > 0 ? rowsToGo / seconds : 0,
    };
  }

  /** Records the snapshot on the active clock; a new plan or a new ceiling starts over. */
  private follow(status: BackfillProgressSnapshot, nowMs: number): void {
    const plannedAt = status.plannedAt.getTime();
    const workers = status.workers ?? [];
    if (plannedAt !== this.plannedAt) {
      this.plannedAt = plannedAt;
      this.samples = [];
      this.afterCeilingChange = undefined;
      this.commits.clear();
    } else if (status.maxRowsPerSecond !== this.ceiling) {
      this.afterCeilingChange = this.rateUnder(status.maxRowsPerSecond);
      // Rates seen under another ceiling say nothing about this one.
      this.samples = this.samples.slice(-1);
      this.commits.restart(workers);
    }
    // The batch in flight when a pause began or ended is not the pace: start over after it.
    if (this.last && !(this.last.running && status.state === 'running')) {
      this.commits.restart(workers);
    }
    this.ceiling = status.maxRowsPerSecond;
    const running = status.state === 'running';
    // Time between two paused snapshots is left out: a pause is not part of the rate. Half of
    // the poll interval in which a pause began or ended counts (when in it is unknown).
    if (this.last) {
      const share = (this.last.running ? 0.5 : 0) + (running ? 0.5 : 0);
      this.activeMs += share * Math.max(0, nowMs - this.last.wallMs);
    }
    this.last = { wallMs: nowMs, running };
    if (!running) return;
    this.commits.record(workers, status.ranges);
    this.commits.prune(maxWindowMs);
    const ranges = new Map<number, number>();
    for (const r of status.ranges) if (r.status === 'running') ranges.set(r.rangeId, r.rowsScanned);
    this.samples.push({ activeMs: this.activeMs, rowsScanned: status.rowsScanned, ranges });
    const keepFrom = this.activeMs - maxWindowMs;
    while ((this.samples[1]?.activeMs ?? Number.POSITIVE_INFINITY) <= keepFrom)
      this.samples.shift();
  }

  /**
   * The rate to assume under a new ceiling until it is measured: the new ceiling when the old
   * one held the rate back (how fast it can go unthrottled is not known yet), else the rate
   * seen, capped by the new ceiling.
   */
  private rateUnder(ceiling: number | undefined): number | undefined {
    const first = this.windowStart();
    const current = this.samples.at(-1);
    if (!first || !current || current.activeMs - first.activeMs < minRateSpanMs) return undefined;
    const seen =
      ((current.rowsScanned - first.rowsScanned) * 1_000) / (current.activeMs - first.activeMs);
    const held = this.ceiling !== undefined && seen >= boundByCeiling * this.ceiling;
    const rate = held && ceiling !== undefined ? Math.max(seen, ceiling) : seen;
    return ceiling === undefined ? rate : Math.min(rate, ceiling);
  }

  /** The oldest sample of the window the rates are measured over. */
  private windowStart(): Sample | undefined {
    const first = this.samples[0];
    if (!first) return undefined;
    const windowMs = windowOf(this.activeMs - first.activeMs);
    return this.samples.find((s) => s.activeMs >= this.activeMs - windowMs) ?? first;
  }

  /** Rows per second of each running range, over the part of the window it was running. */
  private rangeRates(first: Sample | undefined, current: Sample | undefined): Map<number, number> {
    const rates = new Map<number, number>();
    if (!first || !current) return rates;
    const from = this.samples.indexOf(first);
    for (const [rangeId, rowsNow] of current.ranges) {
      const since = this.samples.slice(from).find((s) => s.ranges.has(rangeId));
      if (!since) continue;
      const spanMs = current.activeMs - since.activeMs;
      if (spanMs < minRangeSpanMs) continue;
      rates.set(rangeId, ((rowsNow - (since.ranges.get(rangeId) ?? 0)) * 1_000) / spanMs);
    }
    return rates;
  }

  /** How much the rate of the window's two halves differ from the whole's (10% to 50%). */
  private rateSpread(first: Sample | undefined, current: Sample | undefined): number {
    if (!first || !current) return 0.5;
    const mid = this.samples.find((s) => s.activeMs >= (first.activeMs + current.activeMs) / 2);
    const rate = (a: Sample, b: Sample) =>
      b.activeMs > a.activeMs ? (b.rowsScanned - a.rowsScanned) / (b.activeMs - a.activeMs) : 0;
    const whole = rate(first, current);
    if (!mid || whole <= 0) return 0.5;
    const worst = Math.max(
      Math.abs(rate(first, mid) - whole),
      Math.abs(rate(mid, current) - whole),
    );
    // At least 10%: a backfill slows as the new table and its indexes grow.
    return Math.min(0.5, Math.max(0.1, worst / whole));
  }
}

/** Rates are measured over the last half of the time watched, within bounds. */
function windowOf(watchedMs: number): number {
  return Math.min(maxWindowMs, Math.max(minWindowMs, watchedMs / 2));
}

function average(values: number[]): number | undefined {
  return values.length ? sum(values) / values.length : undefined;
}

function rowsToGoOf(range: BackfillProgressSnapshot['ranges'][number]): number {
  return range.status === 'done' ? 0 : Math.max(0, range.rowsEstimated - range.rowsScanned);
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function unknown(settling: boolean): BackfillEta {
  return {
    seconds: undefined,
    lowSeconds: undefined,
    highSeconds: undefined,
    finishAt: undefined,
    settling,
    ratePerSecond: 0,
  };
}

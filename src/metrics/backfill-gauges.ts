import type { BatchObservableCallback, Meter, Observable } from '@opentelemetry/api';
import createDebug from 'debug';
import { describeError } from '../db/query-failed.js';
import { metricDefinitions as defs } from './metric-definitions.js';

const debug = createDebug('pg-dual-read:metrics');

/** How often a process running `backfill()` reads the backfill's status for the gauges. */
export const backfillGaugeRefreshMs = 5_000;

/** The part of `backfillStatus()` the gauges report (any process's status has it). @internal */
export interface BackfillGaugeSource {
  readonly percent: number;
  readonly ratePerSecond: number;
  readonly eta: { readonly seconds: number | undefined };
}

/** One `backfill()` call being tracked; `end()` reads the status a last time. @internal */
export interface BackfillTracking {
  end(): Promise<void>;
}

/**
 * The gauges `pg_dual_read.backfill.rate`, `.eta` and `.progress`. Only a process running
 * `backfill()` reports them: while at least one of its `backfill()` calls runs, it reads the
 * status every {@link backfillGaugeRefreshMs} (an unref'd timer), and once more when a call
 * returns; the gauges report the last status read (until the migration closes). Observing
 * them queries nothing. @internal
 *
 * @example
 * ```ts
 * const tracking = gauges.track(() => migration.backfillStatus());
 * try { await runTheBackfill(); } finally { await tracking.end(); }
 * ```
 */
export class BackfillGauges {
  private latest: BackfillGaugeSource | undefined;
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private readonly observe: BatchObservableCallback;
  private readonly observables: Observable[];

  constructor(
    private readonly meter: Meter,
    migration: string,
  ) {
    const gauge = (def: (typeof defs)['backfillRate' | 'backfillEta' | 'backfillProgress']) =>
      meter.createObservableGauge(def.name, { description: def.description, unit: def.unit });
    const rate = gauge(defs.backfillRate);
    const eta = gauge(defs.backfillEta);
    const progress = gauge(defs.backfillProgress);
    const attributes = Object.freeze({ migration });
    this.observe = (result) => {
      const latest = this.latest;
      if (!latest) return;
      result.observe(rate, latest.ratePerSecond, attributes);
      result.observe(progress, Math.min(1, Math.max(0, latest.percent / 100)), attributes);
      const { seconds } = latest.eta;
      if (seconds !== undefined) result.observe(eta, seconds, attributes);
    };
    this.observables = [rate, eta, progress];
    meter.addBatchObservableCallback(this.observe, this.observables);
  }

  /** Starts reading `read()` for the gauges while a `backfill()` call runs. */
  track(read: () => Promise<BackfillGaugeSource | undefined>): BackfillTracking {
    this.running += 1;
    this.timer ??= setInterval(() => void this.refresh(read), backfillGaugeRefreshMs).unref();
    let ended = false;
    return {
      end: async () => {
        if (ended) return;
        ended = true;
        this.running -= 1;
        if (this.running === 0) this.stopTimer();
        await this.refreshing;
        await this.refresh(read);
      },
    };
  }

  /** Stops reporting and reading (the migration closed). */
  close(): void {
    this.stopTimer();
    this.meter.removeBatchObservableCallback(this.observe, this.observables);
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One status read at a time; a failed read keeps the last values (never throws). */
  private refresh(read: () => Promise<BackfillGaugeSource | undefined>): Promise<void> {
    this.refreshing ??= read()
      .then((status) => {
        if (status) this.latest = status;
      })
      .catch((error: unknown) =>
        debug('backfill gauges: status read failed: %s', describeError(error)),
      )
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }
}

import { createNoopMeter, type Meter, type MeterProvider } from '@opentelemetry/api';
import type { DualReadEmitter } from '../events.js';
import { libraryVersion } from '../model/library-version.js';
import {
  type BackfillGaugeSource,
  BackfillGauges,
  type BackfillTracking,
} from './backfill-gauges.js';
import { subscribeEventMetrics } from './event-metrics.js';
import { meterName } from './metric-definitions.js';
import { PhaseGauges } from './phase-gauges.js';

const notTracked: BackfillTracking = { end: async () => undefined };

/**
 * The API's own no-op meter (what `metrics.getMeter()` returns before an SDK is installed):
 * nothing would be recorded, so nothing is subscribed at all. A meter of another copy of the
 * API is not recognised and merely records into a no-op.
 */
function isNoopMeter(meter: Meter): boolean {
  return meter.constructor === createNoopMeter().constructor;
}

/**
 * The OpenTelemetry metrics of one migration object: counters and histograms recorded from its
 * events, the phase and epoch gauges from its cached phase, and the backfill gauges while this
 * process runs `backfill()`. With the API's no-op meter (no SDK installed, no `meterProvider`)
 * it subscribes nothing and never reads the backfill's status. @internal
 *
 * @example
 * ```ts
 * const metrics = MigrationMetrics.attach(provider, 'persons', migration.events);
 * const tracking = metrics.trackBackfill(() => migration.backfillStatus());
 * await tracking.end();
 * metrics.close();
 * ```
 */
export class MigrationMetrics {
  private constructor(
    private readonly parts:
      | {
          readonly unsubscribe: () => void;
          readonly phase: PhaseGauges;
          readonly backfill: BackfillGauges;
        }
      | undefined,
  ) {}

  /** Creates the instruments on `provider`'s meter for `pg-dual-read` and subscribes them. */
  static attach(
    provider: MeterProvider,
    migration: string,
    events: DualReadEmitter,
  ): MigrationMetrics {
    const meter = provider.getMeter(meterName, libraryVersion);
    if (isNoopMeter(meter)) return new MigrationMetrics(undefined);
    return new MigrationMetrics({
      unsubscribe: subscribeEventMetrics(meter, migration, events),
      phase: new PhaseGauges(meter, migration, events),
      backfill: new BackfillGauges(meter, migration),
    });
  }

  /** True when instruments were created (an SDK is behind the meter). */
  get enabled(): boolean {
    return this.parts !== undefined;
  }

  /** Feeds the backfill gauges from `read` while one `backfill()` call runs. */
  trackBackfill(read: () => Promise<BackfillGaugeSource | undefined>): BackfillTracking {
    return this.parts ? this.parts.backfill.track(read) : notTracked;
  }

  /** Unsubscribes everything: a closed migration reports nothing more. */
  close(): void {
    if (!this.parts) return;
    this.parts.unsubscribe();
    this.parts.phase.close();
    this.parts.backfill.close();
  }
}

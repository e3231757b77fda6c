/**
 * An in-memory OpenTelemetry reader for the metrics suites: collect on demand, then look the
 * data points up by metric name and attributes.
 */
import type { Attributes } from '@opentelemetry/api';
import { type DataPoint, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';

/** A pull reader: `collect()` when the test wants a snapshot. */
class CollectingReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** One collected metric: its descriptor and its data points. */
export interface CollectedMetric {
  readonly unit: string;
  readonly points: readonly DataPoint<unknown>[];
}

/** What one collection saw, by metric name, for the scope `pg-dual-read`. */
export class MetricsSnapshot {
  constructor(readonly metrics: ReadonlyMap<string, CollectedMetric>) {}

  /** The points of `name` whose attributes include every attribute of `match`. */
  points(name: string, match: Attributes = {}): DataPoint<unknown>[] {
    return (this.metrics.get(name)?.points ?? []).filter((point) =>
      Object.entries(match).every(([key, value]) => point.attributes[key] === value),
    );
  }

  /** A counter's total over the matching points (0 when none). */
  sum(name: string, match: Attributes = {}): number {
    return this.points(name, match).reduce((n, p) => n + (p.value as number), 0);
  }

  /** A histogram's recordings (count, sum in its unit) over the matching points. */
  histogram(name: string, match: Attributes = {}): { count: number; sum: number } {
    return this.points(name, match).reduce(
      (total, p) => {
        const value = p.value as { count: number; sum?: number };
        return { count: total.count + value.count, sum: total.sum + (value.sum ?? 0) };
      },
      { count: 0, sum: 0 },
    );
  }

  /** A gauge's value for exactly one matching point (undefined when none). */
  gauge(name: string, match: Attributes = {}): number | undefined {
    const points = this.points(name, match);
    if (points.length > 1) throw new Error(`${points.length} points of ${name} match`);
    return points[0]?.value as number | undefined;
  }

  /** The attribute names each point of `name` carries, sorted and de-duplicated. */
  attributeNames(name: string): string[] {
    return [...new Set(this.points(name).flatMap((p) => Object.keys(p.attributes)))].sort();
  }
}

/** A MeterProvider (not registered globally) and a way to collect what it recorded. */
export function inMemoryMetrics(): {
  provider: MeterProvider;
  collect: () => Promise<MetricsSnapshot>;
  shutdown: () => Promise<void>;
} {
  const reader = new CollectingReader();
  const provider = new MeterProvider({ readers: [reader] });
  return {
    provider,
    async collect() {
      const { resourceMetrics, errors } = await reader.collect();
      if (errors.length > 0) throw new AggregateError(errors, 'metric collection failed');
      const metrics = new Map<string, CollectedMetric>();
      for (const scope of resourceMetrics.scopeMetrics) {
        if (scope.scope.name !== 'pg-dual-read') continue;
        for (const metric of scope.metrics) {
          metrics.set(metric.descriptor.name, {
            unit: metric.descriptor.unit,
            points: metric.dataPoints as DataPoint<unknown>[],
          });
        }
      }
      return new MetricsSnapshot(metrics);
    },
    shutdown: () => provider.shutdown(),
  };
}

import type { Attributes, Meter } from '@opentelemetry/api';
import type { DualReadEmitter, DualReadEvents } from '../events.js';
import { mismatchClasses } from '../model/mismatch-class.js';
import {
  batchDurationBuckets,
  metricDefinitions as defs,
  type MetricDefinition,
  writeDurationBuckets,
} from './metric-definitions.js';

/** Attribute sets made once per key: recording allocates nothing on the hot path. */
class AttributeCache<T extends Attributes> {
  private readonly sets = new Map<string, T>();
  constructor(private readonly make: (key: string) => T) {}
  get(key: string): T {
    let set = this.sets.get(key);
    if (!set) {
      set = Object.freeze(this.make(key));
      this.sets.set(key, set);
    }
    return set;
  }
}

const options = (def: MetricDefinition, buckets?: number[]) => ({
  description: def.description,
  unit: def.unit,
  ...(buckets ? { advice: { explicitBucketBoundaries: buckets } } : {}),
});

/** The listeners one subscription added, to remove them together. */
class Subscriptions {
  private readonly removers: (() => void)[] = [];
  constructor(private readonly events: DualReadEmitter) {}

  on<K extends keyof DualReadEvents>(
    event: K,
    listener: (...args: DualReadEvents[K]) => void,
  ): void {
    this.events.on(event, listener);
    this.removers.push(() => this.events.off(event, listener));
  }

  removeAll(): void {
    for (const remove of this.removers.splice(0)) remove();
  }
}

/**
 * Subscribes the counters and histograms of a migration to its events: persons per source of
 * each read, shadow-read mismatches, write durations, backfill rows and batch durations,
 * verification mismatches per class. Returns the function that unsubscribes them. @internal
 *
 * @example
 * ```ts
 * const unsubscribe = subscribeEventMetrics(meter, 'persons', migration.events);
 * ```
 */
export function subscribeEventMetrics(
  meter: Meter,
  migration: string,
  events: DualReadEmitter,
): () => void {
  const subscriptions = new Subscriptions(events);
  subscribeReads(meter, migration, subscriptions);
  subscribeWrites(meter, migration, subscriptions);
  subscribeBackfill(meter, migration, subscriptions);
  subscribeVerify(meter, migration, subscriptions);
  return () => subscriptions.removeAll();
}

function subscribeReads(meter: Meter, migration: string, subscriptions: Subscriptions): void {
  const persons = meter.createCounter(defs.readPersons.name, options(defs.readPersons));
  const shadow = meter.createCounter(
    defs.readShadowMismatches.name,
    options(defs.readShadowMismatches),
  );
  const fromNew = new AttributeCache((method) => ({ migration, method, source: 'new' }));
  const fromOld = new AttributeCache((method) => ({ migration, method, source: 'old' }));
  const byMethod = new AttributeCache((method) => ({ migration, method }));
  subscriptions.on('read:done', (read) => {
    if (read.fromNew > 0) persons.add(read.fromNew, fromNew.get(read.method));
    if (read.fromOld > 0) persons.add(read.fromOld, fromOld.get(read.method));
  });
  subscriptions.on('read:shadow-mismatch', ({ method, keys }) =>
    shadow.add(keys.length, byMethod.get(method)),
  );
}

function subscribeWrites(meter: Meter, migration: string, subscriptions: Subscriptions): void {
  const duration = meter.createHistogram(
    defs.writeDuration.name,
    options(defs.writeDuration, writeDurationBuckets),
  );
  const ok = new AttributeCache((method) => ({ migration, method, outcome: 'ok' }));
  const error = new AttributeCache((method) => ({ migration, method, outcome: 'error' }));
  subscriptions.on('write:done', (write) =>
    duration.record(write.ms / 1000, (write.ok ? ok : error).get(write.method)),
  );
}

function subscribeBackfill(meter: Meter, migration: string, subscriptions: Subscriptions): void {
  const rows = meter.createCounter(defs.backfillRows.name, options(defs.backfillRows));
  const duration = meter.createHistogram(
    defs.backfillBatchDuration.name,
    options(defs.backfillBatchDuration, batchDurationBuckets),
  );
  const scanned = Object.freeze({ migration, kind: 'scanned' });
  const copied = Object.freeze({ migration, kind: 'copied' });
  const plain = Object.freeze({ migration });
  subscriptions.on('backfill:batch', (batch) => {
    rows.add(batch.scanned, scanned);
    rows.add(batch.copied, copied);
    duration.record(batch.ms / 1000, plain);
  });
}

function subscribeVerify(meter: Meter, migration: string, subscriptions: Subscriptions): void {
  const mismatches = meter.createCounter(
    defs.verifyMismatches.name,
    options(defs.verifyMismatches),
  );
  const byClass = new AttributeCache((cls) => ({ migration, class: cls }));
  subscriptions.on('verify:done', ({ counts }) => {
    // Every class, 0 included: a dashboard's rate() starts from the first verification.
    for (const cls of mismatchClasses) mismatches.add(counts[cls], byClass.get(cls));
  });
}

/**
 * The instrumentation scope of the library's metrics: `getMeter(meterName, libraryVersion)`.
 *
 * @example
 * ```ts
 * const scopeMetrics = resourceMetrics.scopeMetrics.find((s) => s.scope.name === meterName);
 * ```
 */
export const meterName = 'pg-dual-read';

/**
 * What one metric of the library is: its stable name, its kind, its unit (UCUM, with
 * `{annotation}` units for counted things), and what it means. Every metric carries attribute
 * `migration` (the migration's name); the others are listed in `attributes`. Never row values
 * or keys.
 *
 * @example
 * ```ts
 * const { name, unit }: MetricDefinition = metricDefinitions.writeDuration;
 * console.log(name, unit); // pg_dual_read.write.duration s
 * ```
 */
export interface MetricDefinition {
  /** The stable metric name, e.g. `pg_dual_read.write.duration`. */
  readonly name: string;
  /** The OpenTelemetry instrument: a counter, a histogram or a gauge. */
  readonly kind: 'counter' | 'histogram' | 'gauge';
  /** UCUM unit (`s`, `1`) or a counted thing in braces (`{person}`, `{row}/s`). */
  readonly unit: string;
  /** The attribute keys every data point carries (`migration` first). */
  readonly attributes: readonly string[];
  /** What the metric means, as the exporter's help text. */
  readonly description: string;
}

/**
 * The short keys of {@link metricDefinitions}.
 *
 * @example
 * ```ts
 * const key: MetricKey = 'writeDuration';
 * ```
 */
export type MetricKey =
  | 'readPersons'
  | 'readShadowMismatches'
  | 'writeDuration'
  | 'backfillRows'
  | 'backfillBatchDuration'
  | 'backfillRate'
  | 'backfillEta'
  | 'backfillProgress'
  | 'verifyMismatches'
  | 'phase'
  | 'epoch';

/**
 * Every metric the library records, by a short key. Names follow OpenTelemetry's conventions
 * (dotted, lower case, the unit in `unit`, not in the name); a Prometheus exporter turns the
 * dots into underscores and adds `_total` to counters (`pg_dual_read_read_persons_total`).
 * The README's "Metrics (OpenTelemetry)" section lists them with the process that reports each.
 *
 * @example
 * ```ts
 * const dashboardQuery = `rate(${metricDefinitions.readPersons.name.replaceAll('.', '_')}_total[5m])`;
 * ```
 */
export const metricDefinitions: Readonly<Record<MetricKey, MetricDefinition>> = {
  readPersons: {
    name: 'pg_dual_read.read.persons',
    kind: 'counter',
    unit: '{person}',
    attributes: ['migration', 'method', 'source'],
    description:
      'Persons returned by reads of the repository, by the table they came from (source: new or old).',
  },
  readShadowMismatches: {
    name: 'pg_dual_read.read.shadow_mismatches',
    kind: 'counter',
    unit: '{key}',
    attributes: ['migration', 'method'],
    description:
      'Keys a sampled shadow read found missing or different in the new table (option shadowReads).',
  },
  writeDuration: {
    name: 'pg_dual_read.write.duration',
    kind: 'histogram',
    unit: 's',
    attributes: ['migration', 'method', 'outcome'],
    description: 'Duration of write calls of the repository (outcome: ok, or error when it threw).',
  },
  backfillRows: {
    name: 'pg_dual_read.backfill.rows',
    kind: 'counter',
    unit: '{row}',
    attributes: ['migration', 'kind'],
    description:
      'Rows of committed backfill batches of this process: read from the old table (scanned) and inserted into the new one (copied).',
  },
  backfillBatchDuration: {
    name: 'pg_dual_read.backfill.batch.duration',
    kind: 'histogram',
    unit: 's',
    attributes: ['migration'],
    description: 'Duration of committed backfill batches of this process.',
  },
  backfillRate: {
    name: 'pg_dual_read.backfill.rate',
    kind: 'gauge',
    unit: '{row}/s',
    attributes: ['migration'],
    description:
      'Rows per second of the whole backfill (every process), as last read by a process running backfill().',
  },
  backfillEta: {
    name: 'pg_dual_read.backfill.eta',
    kind: 'gauge',
    unit: 's',
    attributes: ['migration'],
    description:
      'Seconds until the backfill ends, as last read by a process running backfill() (absent while unknown).',
  },
  backfillProgress: {
    name: 'pg_dual_read.backfill.progress',
    kind: 'gauge',
    unit: '1',
    attributes: ['migration'],
    description:
      'Fraction of the old rows the backfill has read (0 to 1), as last read by a process running backfill().',
  },
  verifyMismatches: {
    name: 'pg_dual_read.verify.mismatches',
    kind: 'counter',
    unit: '{key}',
    attributes: ['migration', 'class'],
    description:
      'Mismatched keys per class found by finished verifications of this process (open after re-checks and repair).',
  },
  phase: {
    name: 'pg_dual_read.phase',
    kind: 'gauge',
    unit: '1',
    attributes: ['migration', 'phase'],
    description: '1 for the phase this instance has applied, 0 for the other phases.',
  },
  epoch: {
    name: 'pg_dual_read.epoch',
    kind: 'gauge',
    unit: '{epoch}',
    attributes: ['migration'],
    description: 'The epoch (phase change counter) this instance has applied.',
  },
};

/** Bucket bounds in seconds of the write duration: a write takes milliseconds. @internal */
export const writeDurationBuckets = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Bucket bounds in seconds of a backfill batch (`targetBatchMs` defaults to 250 ms). @internal */
export const batchDurationBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

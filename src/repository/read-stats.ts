/**
 * The live readiness signal of a repository: how many of its `dual_read` answers still came
 * from the old table (per read method), and what the optional shadow reads found.
 */

/**
 * The repository methods whose reads merge both tables in `dual_read` and return persons:
 * the ones {@link ReadStats} counts. (`fetchPerson(..., { forUpdate: true })` copies the
 * person first and reads the new table only, and `countPersons` returns no persons: neither is
 * counted.)
 *
 * @example
 * ```ts
 * const method: ReadStatsMethod = 'fetchPersonsByDistinctIds';
 * console.log(repo.readStats().methods[method].fallbackRate);
 * ```
 */
export type ReadStatsMethod =
  | 'fetchPerson'
  | 'fetchPersonsByDistinctIds'
  | 'fetchPersonsByPersonIds'
  | 'fetchPersonByUuid'
  | 'listPersons';

/** Every {@link ReadStatsMethod}, in a fixed order. @internal */
export const readStatsMethods: readonly ReadStatsMethod[] = [
  'fetchPerson',
  'fetchPersonsByDistinctIds',
  'fetchPersonsByPersonIds',
  'fetchPersonByUuid',
  'listPersons',
];

/**
 * What the shadow reads (migration option `shadowReads`) of a method found. Every sampled
 * read ends as exactly one of `matched`, `mismatched`, `failed` or `skipped` (or is still
 * running).
 *
 * @example
 * ```ts
 * const { sampled, mismatched, failed } = repo.readStats().totals.shadow;
 * metrics.gauge('persons.shadow.mismatch_ratio', sampled ? mismatched / sampled : 0);
 * ```
 */
export interface ShadowReadStats {
  /** Reads chosen by `shadowReads.sampleRate` (reads that returned at least one person). */
  readonly sampled: number;
  /** Shadow reads that found every key of the answer, unchanged, in the new table. */
  readonly matched: number;
  /** Shadow reads that found a key missing or different in the new table (one event each). */
  readonly mismatched: number;
  /** Keys reported by `read:shadow-mismatch` events. */
  readonly mismatchedKeys: number;
  /** Shadow reads that failed or timed out (one `read:shadow-failed` event each). */
  readonly failed: number;
  /** Sampled reads not compared: 4 shadow reads were already running, or the repository closed. */
  readonly skipped: number;
}

/**
 * Counts of one read method (or of all of them) in phase `dual_read`.
 *
 * @example
 * ```ts
 * const { reads, rows, oldRows, fallbackRate } = repo.readStats().methods.fetchPerson;
 * console.log(`${oldRows} of ${rows} persons from the old table in ${reads} reads (${fallbackRate})`);
 * ```
 */
export interface MethodReadStats {
  /** Reads answered in `dual_read` (a read re-run after a phase change counts once). */
  readonly reads: number;
  /** Persons (rows) those reads returned. */
  readonly rows: number;
  /** Of `rows`, how many came from the old table because the new table had no row for them. */
  readonly oldRows: number;
  /** Reads that returned at least one old-table row (one `read:fallback` event each). */
  readonly fallbackReads: number;
  /** `oldRows / rows`, 0 when no row was returned. */
  readonly fallbackRate: number;
  /** What the shadow reads of these reads found (all zero without option `shadowReads`). */
  readonly shadow: ShadowReadStats;
}

/**
 * A repository's read counters since it was created or since `resetReadStats()`: the live
 * readiness signal of a migration. A `fallbackRate` that reaches 0 once the backfill is done
 * (and stays there while ingestion runs) says that reads no longer need the old table.
 * Counters are per process (per repository object); add them up across instances.
 *
 * @example
 * ```ts
 * const stats = migration.repository().readStats();
 * if (stats.totals.rows > 10_000 && stats.fallbackRate === 0) log.info('reads are served by the new table');
 * for (const [method, s] of Object.entries(stats.methods)) metrics.gauge(`fallback.${method}`, s.fallbackRate);
 * ```
 */
export interface ReadStats {
  /** When counting started: the repository's creation or the last `resetReadStats()`. */
  readonly since: Date;
  /** Counters per read method. */
  readonly methods: { readonly [M in ReadStatsMethod]: MethodReadStats };
  /** The sum over every method. */
  readonly totals: MethodReadStats;
  /** `totals.oldRows / totals.rows`, 0 when no row was returned. */
  readonly fallbackRate: number;
}

/** The outcome of one sampled shadow read. @internal */
export type ShadowOutcome = 'sampled' | 'matched' | 'mismatched' | 'failed' | 'skipped';

interface Counters {
  reads: number;
  rows: number;
  oldRows: number;
  fallbackReads: number;
  shadow: {
    sampled: number;
    matched: number;
    mismatched: number;
    mismatchedKeys: number;
    failed: number;
    skipped: number;
  };
}

function emptyCounters(): Counters {
  return {
    reads: 0,
    rows: 0,
    oldRows: 0,
    fallbackReads: 0,
    shadow: { sampled: 0, matched: 0, mismatched: 0, mismatchedKeys: 0, failed: 0, skipped: 0 },
  };
}

function frozen(c: Counters): MethodReadStats {
  return Object.freeze({
    reads: c.reads,
    rows: c.rows,
    oldRows: c.oldRows,
    fallbackReads: c.fallbackReads,
    fallbackRate: c.rows === 0 ? 0 : c.oldRows / c.rows,
    shadow: Object.freeze({ ...c.shadow }),
  });
}

/**
 * The mutable counters behind {@link ReadStats}, shared by a repository and the repositories
 * bound to its transactions. Plain integer increments: nothing on the read path allocates.
 * @internal
 */
export class ReadStatsRecorder {
  private counters = new Map<ReadStatsMethod, Counters>();
  private since = new Date();
  /** Increases on every reset, so a shadow read that started before it is not counted after. */
  private generationValue = 0;

  constructor() {
    this.reset();
  }

  get generation(): number {
    return this.generationValue;
  }

  /** One answered `dual_read` read of `method`: `rows` persons, `oldRows` of them from old. */
  recordRead(method: ReadStatsMethod, rows: number, oldRows: number): void {
    const c = this.of(method);
    c.reads += 1;
    c.rows += rows;
    c.oldRows += oldRows;
    if (oldRows > 0) c.fallbackReads += 1;
  }

  /** A shadow read of `method` reached `outcome`; ignored when a reset happened since it began. */
  recordShadow(
    method: ReadStatsMethod,
    outcome: ShadowOutcome,
    generation: number,
    mismatchedKeys = 0,
  ): void {
    if (generation !== this.generationValue) return;
    const shadow = this.of(method).shadow;
    shadow[outcome] += 1;
    shadow.mismatchedKeys += mismatchedKeys;
  }

  snapshot(): ReadStats {
    const total = emptyCounters();
    const methods = {} as Record<ReadStatsMethod, MethodReadStats>;
    for (const method of readStatsMethods) {
      const c = this.of(method);
      methods[method] = frozen(c);
      total.reads += c.reads;
      total.rows += c.rows;
      total.oldRows += c.oldRows;
      total.fallbackReads += c.fallbackReads;
      for (const key of Object.keys(total.shadow) as (keyof Counters['shadow'])[]) {
        total.shadow[key] += c.shadow[key];
      }
    }
    const totals = frozen(total);
    return Object.freeze({
      since: new Date(this.since.getTime()),
      methods: Object.freeze(methods),
      totals,
      fallbackRate: totals.fallbackRate,
    });
  }

  reset(): void {
    this.generationValue += 1;
    this.since = new Date();
    this.counters = new Map(readStatsMethods.map((m) => [m, emptyCounters()]));
  }

  private of(method: ReadStatsMethod): Counters {
    let c = this.counters.get(method);
    if (!c) {
      c = emptyCounters();
      this.counters.set(method, c);
    }
    return c;
  }
}

/**
 * What is left of one backfill range for {@link simulateRangeSchedule}: its rows to go and the
 * rows per second one worker copies in it (undefined: not observed yet, the average is used).
 * @internal
 */
export interface RangeWork {
  readonly rowsToGo: number;
  readonly running: boolean;
  readonly ratePerSecond: number | undefined;
}

/**
 * The schedule the workers follow, replayed forward: each running range goes on at its own
 * rate, a worker that finishes takes the next pending range, and once none is pending it takes
 * the second half of the range that has the longest to go (as `backfill()` splits the busiest
 * range), down to `minRowsToSplit`. A rate ceiling slows every range alike when their rates add
 * up to more. Returns the seconds until the last range is done.
 *
 * A per-range schedule rather than "rows to go / rate": ranges differ (a hot team's range is
 * not a cold one), and the end of a backfill is a tail of the slowest ranges, not an average.
 * @internal
 *
 * @example
 * ```ts
 * simulateRangeSchedule(
 *   [{ rowsToGo: 1_000, running: true, ratePerSecond: 100 }, { rowsToGo: 500, running: false, ratePerSecond: undefined }],
 *   { workers: 2, averageRatePerSecond: 100, maxRowsPerSecond: undefined, minRowsToSplit: 100 },
 * ); // 10 s: both ranges end together, the second starts at once with the spare worker
 * ```
 */
export function simulateRangeSchedule(
  ranges: readonly RangeWork[],
  settings: {
    /** Workers copying at once (at least the ranges running now). */
    readonly workers: number;
    /** Rows per second of one worker in a range not observed yet. */
    readonly averageRatePerSecond: number;
    readonly maxRowsPerSecond: number | undefined;
    readonly minRowsToSplit: number;
  },
): number {
  const rateOf = (range: RangeWork) =>
    range.ratePerSecond !== undefined && range.ratePerSecond > 0
      ? range.ratePerSecond
      : settings.averageRatePerSecond;
  const active = ranges
    .filter((r) => r.running && r.rowsToGo > 0)
    .map((r) => ({ left: r.rowsToGo, rate: rateOf(r) }));
  const pending = ranges
    .filter((r) => !r.running && r.rowsToGo > 0)
    .map((r) => ({ left: r.rowsToGo, rate: rateOf(r) }));
  const workers = Math.max(1, settings.workers, active.length);
  let seconds = 0;
  // Bounded: each step ends at least one range; splits stop at minRowsToSplit.
  for (let step = 0; step < 100_000; step++) {
    while (active.length < workers) {
      const next = pending.shift() ?? splitLongest(active, settings.minRowsToSplit);
      if (!next) break;
      active.push(next);
    }
    if (active.length === 0) return seconds;
    const total = active.reduce((sum, r) => sum + r.rate, 0);
    const slowdown =
      settings.maxRowsPerSecond && total > settings.maxRowsPerSecond
        ? settings.maxRowsPerSecond / total
        : 1;
    const dt = Math.min(...active.map((r) => r.left / (r.rate * slowdown)));
    seconds += dt;
    for (const r of active) r.left -= r.rate * slowdown * dt;
    for (let i = active.length - 1; i >= 0; i--) {
      if ((active[i]?.left ?? 0) <= 1e-6) active.splice(i, 1);
    }
  }
  return seconds;
}

/** Takes the second half of the range with the longest to go, when it is worth splitting. */
function splitLongest(
  active: { left: number; rate: number }[],
  minRowsToSplit: number,
): { left: number; rate: number } | undefined {
  let longest: { left: number; rate: number } | undefined;
  for (const r of active) {
    if (!longest || r.left / r.rate > longest.left / longest.rate) longest = r;
  }
  if (!longest || longest.left < minRowsToSplit) return undefined;
  longest.left /= 2;
  return { left: longest.left, rate: longest.rate };
}

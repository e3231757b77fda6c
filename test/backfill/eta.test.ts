import { describe, expect, it } from 'vitest';
import {
  BackfillEtaEstimator,
  type BackfillProgressSnapshot,
} from '../../src/backfill/backfill-eta.js';
import { simulateRangeSchedule } from '../../src/backfill/range-schedule.js';

const settings = {
  workers: 2,
  averageRatePerSecond: 100,
  maxRowsPerSecond: undefined,
  minRowsToSplit: 1_000_000,
};

describe('simulateRangeSchedule', () => {
  it('runs ranges in parallel and gives a free worker the next pending range', () => {
    const ranges = [
      { rowsToGo: 1_000, running: true, ratePerSecond: 100 },
      { rowsToGo: 500, running: true, ratePerSecond: 100 },
      { rowsToGo: 500, running: false, ratePerSecond: undefined },
    ];
    // The second worker ends its range at 5 s, takes the pending one, ends at 10 s.
    expect(simulateRangeSchedule(ranges, settings)).toBeCloseTo(10);
  });

  it('counts the slow range: a hot range sets the end, not the average rate', () => {
    const ranges = [
      { rowsToGo: 1_000, running: true, ratePerSecond: 20 },
      { rowsToGo: 1_000, running: true, ratePerSecond: 180 },
    ];
    // Average rate 100/worker would say 10 s; the hot range needs 50 s.
    expect(simulateRangeSchedule(ranges, settings)).toBeCloseTo(50);
  });

  it('splits the longest range once nothing is pending, as backfill() does', () => {
    const ranges = [{ rowsToGo: 10_000, running: true, ratePerSecond: 100 }];
    const unsplit = simulateRangeSchedule(ranges, { ...settings, workers: 2 });
    const split = simulateRangeSchedule(ranges, { ...settings, workers: 2, minRowsToSplit: 100 });
    expect(unsplit).toBeCloseTo(100);
    expect(split).toBeLessThan(60);
    expect(split).toBeGreaterThanOrEqual(50);
  });

  it('slows every range alike under the rate ceiling', () => {
    const ranges = [
      { rowsToGo: 1_000, running: true, ratePerSecond: 100 },
      { rowsToGo: 1_000, running: true, ratePerSecond: 100 },
    ];
    expect(simulateRangeSchedule(ranges, { ...settings, maxRowsPerSecond: 50 })).toBeCloseTo(40);
  });
});

/** Two ranges of 50,000 rows, each read at `rate` rows/s per range, `t` seconds in. */
function snapshot(
  t: number,
  rate: number,
  state: BackfillProgressSnapshot['state'] = 'running',
  maxRowsPerSecond?: number,
): BackfillProgressSnapshot {
  const scanned = Math.min(50_000, rate * t);
  return {
    state,
    plannedAt: new Date(0),
    rowsScanned: 2 * scanned,
    ratePerSecond: 2 * rate,
    maxRowsPerSecond,
    activeWorkers: 2,
    ranges: [1, 2].map((rangeId) => ({
      rangeId,
      status: scanned >= 50_000 ? ('done' as const) : ('running' as const),
      rowsEstimated: 50_000,
      rowsScanned: scanned,
    })),
  };
}

describe('BackfillEtaEstimator', () => {
  it('settles on the observed rate of each range', () => {
    const estimator = new BackfillEtaEstimator();
    const first = estimator.estimate(snapshot(0, 1_000), 0);
    expect(first.settling).toBe(true);
    let eta = first;
    for (let t = 1; t <= 10; t++) eta = estimator.estimate(snapshot(t, 1_000), t * 1_000);
    expect(eta.settling).toBe(false);
    // 40,000 rows to go per range at 1,000 rows/s.
    expect(eta.seconds).toBeCloseTo(40);
    expect(eta.lowSeconds).toBeLessThanOrEqual(40);
    expect(eta.highSeconds).toBeGreaterThanOrEqual(40);
    expect(eta.finishAt?.getTime()).toBe(50_000);
  });

  it('leaves the time spent paused out of the rate', () => {
    const estimator = new BackfillEtaEstimator();
    for (let t = 0; t <= 10; t++) estimator.estimate(snapshot(t, 1_000), t * 1_000);
    // Paused from 10 s to 40 s: no rows read, and no ETA while paused.
    for (let t = 11; t <= 40; t++) {
      expect(estimator.estimate(snapshot(10, 1_000, 'paused'), t * 1_000).seconds).toBeUndefined();
    }
    // Running again: 1 s later, 1,000 more rows per range. The 30 s paused are left out (half
    // the poll interval on each side of the pause counts: within 10%, not a quarter of the rate).
    const eta = estimator.estimate(snapshot(11, 1_000), 41_000);
    expect(eta.seconds).toBeGreaterThan(39 * 0.9);
    expect(eta.seconds).toBeLessThan(39 * 1.1);
  });

  it('starts over when the rate ceiling changes', () => {
    const estimator = new BackfillEtaEstimator();
    for (let t = 0; t <= 10; t++) estimator.estimate(snapshot(t, 500, 'running', 1_000), t * 1_000);
    const eta = estimator.estimate(snapshot(10, 500, 'running', 4_000), 10_500);
    expect(eta.settling).toBe(true);
    // The old ceiling held the rate (1,000 rows/s): until measured, the new one is assumed.
    expect(eta.seconds).toBeCloseTo(90_000 / 4_000);
  });

  it('under a lower ceiling, assumes the ceiling at once', () => {
    const estimator = new BackfillEtaEstimator();
    for (let t = 0; t <= 10; t++) estimator.estimate(snapshot(t, 1_000), t * 1_000);
    const eta = estimator.estimate(snapshot(10, 1_000, 'running', 500), 10_500);
    expect(eta.seconds).toBeCloseTo(80_000 / 500);
  });

  it('is 0 when the backfill is done, and unknown before any rate', () => {
    const estimator = new BackfillEtaEstimator();
    expect(estimator.estimate({ ...snapshot(0, 0), ratePerSecond: 0 }, 0).seconds).toBeUndefined();
    expect(estimator.estimate({ ...snapshot(60, 1_000), state: 'done' }, 60_000).seconds).toBe(0);
  });
});

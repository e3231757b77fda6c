import { describe, expect, it } from 'vitest';
import { BackfillEtaEstimator } from '../../src/backfill/backfill-eta.js';
import { BatchCommitRates, type WorkerProgress } from '../../src/backfill/batch-commit-rates.js';

/** A worker that commits `batchRows` rows every `batchMs`, as a read at `atMs` sees it. */
function worker(id: string, atMs: number, batchRows: number, batchMs: number): WorkerProgress {
  const batches = Math.floor(atMs / batchMs);
  return {
    workerId: id,
    rowsScanned: batches * batchRows,
    batches,
    lastBatchAt: new Date(batches * batchMs),
  };
}

describe('BatchCommitRates', () => {
  it('measures between commits, wherever in a batch the reads land', () => {
    const rates = new BatchCommitRates();
    // 20,000-row batches every 250 ms (80,000 rows/s); reads every 400 ms, off the batches.
    for (let t = 1_130; t <= 3_130; t += 400) rates.record([worker('w', t, 20_000, 250)], []);
    expect(rates.workerRates(10_000).get('w')).toBeCloseTo(80_000);
  });

  it('leaves out the first batches (the batch size is still growing)', () => {
    const rates = new BatchCommitRates();
    // Batches 1 to 3 are seen; they are the ramp.
    for (const batches of [1, 2, 3]) {
      rates.record(
        [
          {
            workerId: 'w',
            rowsScanned: batches * 10,
            batches,
            lastBatchAt: new Date(batches * 100),
          },
        ],
        [],
      );
    }
    expect(rates.workerRates(10_000).size).toBe(0);
  });

  it('after a restart, counts only commits made after it (a pause is not the pace)', () => {
    const rates = new BatchCommitRates();
    for (let t = 1_000; t <= 2_000; t += 500) rates.record([worker('w', t, 1_000, 100)], []);
    // Paused at 2 s for 10 s: the batch in flight commits at 2.1 s, the next one at 12.2 s.
    const atPause = worker('w', 2_000, 1_000, 100);
    rates.restart([atPause]);
    const sincePause = (batchesAfter: number, atMs: number): WorkerProgress => ({
      workerId: 'w',
      rowsScanned: atPause.rowsScanned + batchesAfter * 1_000,
      batches: atPause.batches + batchesAfter,
      lastBatchAt: new Date(atMs),
    });
    rates.record([sincePause(1, 2_100)], []);
    rates.restart([sincePause(1, 2_100)]); // resumed at 12 s
    for (let n = 2; n <= 5; n++) rates.record([sincePause(n, 12_000 + (n - 1) * 100)], []);
    expect(rates.workerRates(60_000).get('w')).toBeCloseTo(10_000);
  });

  it('forgets a worker gone for longer than the window', () => {
    const rates = new BatchCommitRates();
    for (let t = 1_000; t <= 2_000; t += 500) rates.record([worker('old', t, 1_000, 100)], []);
    // 'old' stopped at 2 s; 'new' commits from 100 s on.
    for (let t = 100_000; t <= 101_000; t += 500) rates.record([worker('new', t, 1_000, 100)], []);
    rates.prune(60_000);
    expect([...rates.workerRates(60_000).keys()]).toEqual(['new']);
  });

  it('measures a range only over the commits seen while its worker held it', () => {
    const rates = new BatchCommitRates();
    const seen = (batches: number, rows: number, atMs: number, rangeId: number) =>
      rates.record(
        [{ workerId: 'w', rowsScanned: rows, batches, lastBatchAt: new Date(atMs) }],
        [{ rangeId, worker: 'w' }],
      );
    // Range 1: 1,000 rows per 100 ms batch; range 2 (hot): 1,000 rows per 400 ms batch.
    for (let b = 4; b <= 8; b++) seen(b, b * 1_000, b * 100, 1);
    for (let b = 9; b <= 12; b++) seen(b, b * 1_000, 800 + (b - 8) * 400, 2);
    expect(rates.rangeRate('w', 1, 60_000)).toBeCloseTo(10_000);
    expect(rates.rangeRate('w', 2, 60_000)).toBeCloseTo(2_500);
  });
});

/** Two ranges of 500,000 rows, one worker each: 20,000-row batches every 250 ms. */
function at(t: number) {
  const workers = [worker('a', t, 20_000, 250), worker('b', t, 20_000, 250)];
  return {
    state: 'running' as const,
    plannedAt: new Date(0),
    rowsScanned: workers.reduce((sum, w) => sum + w.rowsScanned, 0),
    // The workers' smoothed rate still counts the first, small batches.
    ratePerSecond: 40_000,
    maxRowsPerSecond: undefined,
    activeWorkers: 2,
    ranges: workers.map((w, i) => ({
      rangeId: i + 1,
      status: 'running' as const,
      rowsEstimated: 500_000,
      rowsScanned: w.rowsScanned,
      worker: w.workerId,
    })),
    workers,
  };
}

describe('BackfillEtaEstimator with the workers of the status', () => {
  it('settles on the commits, not on where the reads land', () => {
    const estimator = new BackfillEtaEstimator();
    let seconds: number | undefined;
    // Reads at different points of a batch: read to read, 80,000 rows in 0.77 s (104,000/s).
    for (const t of [1_240, 1_610, 2_010]) seconds = estimator.estimate(at(t), t).seconds;
    // At the last commit (2 s): 160,000 rows per range, 340,000 to go at 80,000 rows/s.
    expect(seconds).toBeCloseTo(340_000 / 80_000, 1);
  });

  it('does not give a stopped backfill the pace of the workers that left', () => {
    const estimator = new BackfillEtaEstimator();
    let running: number | undefined;
    for (let t = 1_000; t <= 3_000; t += 500) running = estimator.estimate(at(t), t).seconds;
    // Stopped at 3 s: no live worker, no progress, for 5 s.
    const stopped = {
      ...at(3_000),
      // Given back: pending again, with their rows read so far.
      ranges: at(3_000).ranges.map((r) => ({
        ...r,
        status: 'pending' as const,
        worker: undefined,
      })),
      workers: [],
      activeWorkers: 0,
      ratePerSecond: 0,
    };
    let later: number | undefined;
    for (let t = 3_500; t <= 8_000; t += 500) later = estimator.estimate(stopped, t).seconds;
    expect(running).toBeCloseTo(500_000 / 80_000 - 3, 0);
    // The rate read to read over the window fell with the stop: a longer ETA, not the old one.
    expect(later).toBeGreaterThan(2 * (running ?? 0));
  });
});

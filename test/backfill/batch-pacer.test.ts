/**
 * BatchPacer, pure: how the backfill sizes its batches and how long it waits between them.
 * - chunk time: the size follows the measured time per row toward `targetBatchMs`, at most
 *   2x up or down per batch, always within [1, maxBatchSize]; `targetBatchMs: 0` keeps it fixed;
 * - ceiling: with `maxRowsPerSecond` shared by `activeRanges` workers, a batch of `rows` rows
 *   must take `rows / (ceiling / activeRanges)` seconds: the pacer returns what is left of it,
 *   and (when it adapts) never asks for more rows than the share allows in one target time.
 */
import { describe, expect, it } from 'vitest';
import { BatchPacer } from '../../src/backfill/batch-pacer.js';
import { seededRandom } from '../support/concurrency.js';

describe('BatchPacer', () => {
  describe('chunk time (targetBatchMs > 0)', () => {
    it('starts at the initial size', () => {
      expect(new BatchPacer(123, 1_000, 250).batchSize).toBe(123);
    });

    it('sizes the next batch so that it takes the target time at the measured time per row', () => {
      const pacer = new BatchPacer(100, 10_000, 100);
      // 100 rows in 80 ms: 0.8 ms a row, 125 rows take 100 ms.
      expect(pacer.afterBatch(100, 80, undefined, 1)).toBe(0);
      expect(pacer.batchSize).toBe(125);
      // 125 rows in 125 ms: 1 ms a row, 100 rows take 100 ms.
      pacer.afterBatch(125, 125, undefined, 1);
      expect(pacer.batchSize).toBe(100);
      // Exactly on target: unchanged.
      pacer.afterBatch(100, 100, undefined, 1);
      expect(pacer.batchSize).toBe(100);
    });

    it('grows by at most 2x per batch however fast the batch was', () => {
      const pacer = new BatchPacer(100, 100_000, 250);
      pacer.afterBatch(100, 1, undefined, 1); // wants 25,000
      expect(pacer.batchSize).toBe(200);
      pacer.afterBatch(200, 0, undefined, 1); // 0 ms counts as 1 ms, no division by zero
      expect(pacer.batchSize).toBe(400);
    });

    it('shrinks by at most 2x per batch however slow the batch was (one lock wait does not collapse it)', () => {
      const pacer = new BatchPacer(1_000, 10_000, 100);
      pacer.afterBatch(1_000, 60_000, undefined, 1); // wants ~2
      expect(pacer.batchSize).toBe(500);
      pacer.afterBatch(500, 60_000, undefined, 1);
      expect(pacer.batchSize).toBe(250);
    });

    it('never goes below 1 row nor above maxBatchSize', () => {
      const small = new BatchPacer(1, 10, 100);
      for (let i = 0; i < 5; i++) small.afterBatch(1, 10_000, undefined, 1);
      expect(small.batchSize).toBe(1);
      const capped = new BatchPacer(8, 10, 100);
      for (let i = 0; i < 5; i++) capped.afterBatch(capped.batchSize, 1, undefined, 1);
      expect(capped.batchSize).toBe(10);
    });

    it('converges to the size that takes the target time, from below and from above', () => {
      // The database copies a row in 0.4 ms: 250 rows take the 100 ms target.
      for (const initial of [1, 10_000]) {
        const pacer = new BatchPacer(initial, 20_000, 100);
        const sizes: number[] = [];
        for (let i = 0; i < 20; i++) {
          const size = pacer.batchSize;
          pacer.afterBatch(size, size * 0.4, undefined, 1);
          sizes.push(pacer.batchSize);
        }
        expect(sizes.at(-1)).toBe(250);
        // Monotone toward the target, never overshooting it.
        for (const [i, size] of sizes.entries()) {
          const before = i === 0 ? initial : (sizes[i - 1] as number);
          if (initial < 250) expect(size).toBeGreaterThanOrEqual(before);
          else expect(size).toBeLessThanOrEqual(before);
        }
      }
    });

    it('a batch that read no row (end of a range) leaves the size alone', () => {
      const pacer = new BatchPacer(300, 1_000, 100);
      expect(pacer.afterBatch(0, 5_000, 1_000, 1)).toBe(0);
      expect(pacer.batchSize).toBe(300);
    });

    it('randomized: each step moves toward the target, by at most 2x, within [1, maxBatchSize]', () => {
      const random = seededRandom(20240601);
      const violations: string[] = [];
      const check = (ok: boolean, what: string) => {
        if (!ok) violations.push(what);
      };
      for (let run = 0; run < 300; run++) {
        const maxSize = 1 + Math.floor(random() * 5_000);
        const target = 1 + Math.floor(random() * 1_000);
        const pacer = new BatchPacer(1 + Math.floor(random() * maxSize), maxSize, target);
        for (let step = 0; step < 30; step++) {
          const before = pacer.batchSize;
          // A short last batch sometimes, and wildly varying speed.
          const rows = random() < 0.2 ? Math.floor(random() * before) : before;
          const elapsed = random() * 3 * target;
          pacer.afterBatch(rows, elapsed, undefined, 1);
          const after = pacer.batchSize;
          const at = `run ${run} step ${step}: ${before} -> ${after} (max ${maxSize}, ${rows} rows in ${elapsed} ms, target ${target})`;
          check(Number.isInteger(after), `not an integer, ${at}`);
          check(after >= 1 && after <= maxSize, `out of [1, max], ${at}`);
          check(after <= 2 * before, `grew more than 2x, ${at}`);
          check(after >= Math.max(1, Math.floor(before / 2)), `shrank more than 2x, ${at}`);
          if (rows === 0) {
            check(after === before, `changed after an empty batch, ${at}`);
            continue;
          }
          const wanted = (rows * target) / Math.max(elapsed, 1);
          // Toward the target: never away from the size that would take the target time.
          if (wanted > before) check(after >= before, `shrank while too small, ${at}`);
          if (wanted < before) check(after <= before, `grew while too big, ${at}`);
        }
      }
      expect(violations.slice(0, 5)).toEqual([]);
    });
  });

  describe('fixed size (targetBatchMs 0)', () => {
    it('keeps the size whatever the batches take', () => {
      const pacer = new BatchPacer(50, 20_000, 0);
      for (const elapsed of [0, 1, 50, 10_000, 60_000]) {
        pacer.afterBatch(50, elapsed, undefined, 1);
        expect(pacer.batchSize).toBe(50);
      }
    });

    it('keeps the size under a ceiling too, and still paces by it', () => {
      const pacer = new BatchPacer(50, 20_000, 0);
      // 50 rows at 100 rows/s shared by 2 ranges (50 rows/s each): the batch must take 1 s.
      expect(pacer.afterBatch(50, 200, 100, 2)).toBeCloseTo(800, 6);
      expect(pacer.batchSize).toBe(50);
    });
  });

  describe('ceiling (maxRowsPerSecond)', () => {
    it('waits rows / (ceiling / activeRanges) minus the time the batch took', () => {
      const pacer = new BatchPacer(100, 10_000, 0);
      // 100 rows, 1,000 rows/s, 1 range: 100 ms; the batch took 30 ms: wait 70 ms.
      expect(pacer.afterBatch(100, 30, 1_000, 1)).toBeCloseTo(70, 6);
      // The same shared by 4 ranges (250 rows/s each): 400 ms, wait 370 ms.
      expect(pacer.afterBatch(100, 30, 1_000, 4)).toBeCloseTo(370, 6);
      // A short batch waits in proportion: 10 rows at 250 rows/s = 40 ms.
      expect(pacer.afterBatch(10, 0, 1_000, 4)).toBeCloseTo(40, 6);
    });

    it('does not wait when the batch already took longer than its share allows', () => {
      const pacer = new BatchPacer(100, 10_000, 0);
      expect(pacer.afterBatch(100, 500, 1_000, 1)).toBe(0);
    });

    it('does not wait without a ceiling, nor after a batch that read nothing', () => {
      const pacer = new BatchPacer(100, 10_000, 0);
      expect(pacer.afterBatch(100, 1, undefined, 1)).toBe(0);
      expect(pacer.afterBatch(0, 1, 10, 1)).toBe(0);
    });

    it('counts no active range as one (never divides by zero)', () => {
      const pacer = new BatchPacer(100, 10_000, 0);
      expect(pacer.afterBatch(100, 0, 1_000, 0)).toBeCloseTo(100, 6);
    });

    it('caps the size to what the share allows in one target batch time', () => {
      // 2,000 rows/s over 4 ranges: 500 rows/s each, 50 rows per 100 ms target.
      const pacer = new BatchPacer(1_000, 20_000, 100);
      const wait = pacer.afterBatch(1_000, 10, 2_000, 4);
      expect(pacer.batchSize).toBe(50);
      // The wait of that batch still follows its own 1,000 rows: 2 s minus 10 ms.
      expect(wait).toBeCloseTo(1_990, 6);
      // Later batches of 50 rows wait 100 ms minus their time, and the cap holds.
      expect(pacer.afterBatch(50, 5, 2_000, 4)).toBeCloseTo(95, 6);
      expect(pacer.batchSize).toBe(50);
      // A low ceiling cannot take the size below 1 row.
      pacer.afterBatch(50, 5, 1, 64);
      expect(pacer.batchSize).toBe(1);
    });

    it('grows back (2x per batch) once the ceiling is lifted', () => {
      const pacer = new BatchPacer(1_000, 20_000, 100);
      pacer.afterBatch(1_000, 10, 2_000, 4);
      expect(pacer.batchSize).toBe(50);
      pacer.afterBatch(50, 1, undefined, 4);
      expect(pacer.batchSize).toBe(100);
      pacer.afterBatch(100, 1, undefined, 4);
      expect(pacer.batchSize).toBe(200);
    });
  });
});

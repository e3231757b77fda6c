/**
 * Decides the size of the next batch and how long to wait before it.
 *
 * - **Chunk time** (Percona's idea): the batch size follows the measured time per row so a
 *   batch takes about `targetBatchMs`, growing or shrinking by at most 2x per batch so one
 *   slow batch (a lock wait) does not collapse it. `targetBatchMs: 0` keeps the size fixed.
 * - **Ceiling**: with `maxRowsPerSecond` shared by `activeRanges` workers, each waits until
 *   its batch has taken `rows / (ceiling / activeRanges)` seconds.
 * @internal
 */
export class BatchPacer {
  private size: number;

  constructor(
    initialSize: number,
    private readonly maxSize: number,
    private readonly targetBatchMs: number,
  ) {
    this.size = initialSize;
  }

  /** Rows to ask for in the next batch. */
  get batchSize(): number {
    return this.size;
  }

  /**
   * Records a batch that read `rows` rows in `elapsedMs` and returns how many ms to wait
   * before the next one.
   */
  afterBatch(
    rows: number,
    elapsedMs: number,
    maxRowsPerSecond: number | undefined,
    activeRanges: number,
  ): number {
    if (this.targetBatchMs > 0 && rows > 0) {
      const wanted = (rows * this.targetBatchMs) / Math.max(elapsedMs, 1);
      const bounded = Math.min(this.size * 2, Math.max(this.size / 2, wanted));
      this.size = Math.max(1, Math.min(this.maxSize, Math.round(bounded)));
    }
    if (!maxRowsPerSecond || rows === 0) return 0;
    const share = maxRowsPerSecond / Math.max(1, activeRanges);
    const minimumMs = (rows / share) * 1000;
    // Never ask for more rows than the share allows in one target batch time.
    if (this.targetBatchMs > 0) {
      this.size = Math.max(1, Math.min(this.size, Math.ceil((share * this.targetBatchMs) / 1000)));
    }
    return Math.max(0, minimumMs - elapsedMs);
  }
}

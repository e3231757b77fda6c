/** One worker as a status read shows it (see `BackfillWorkerStatus`). @internal */
export interface WorkerProgress {
  readonly workerId: string;
  readonly rowsScanned: number;
  readonly batches: number;
  readonly lastBatchAt: Date;
}

/** A batch commit of one worker, as first seen by a status read. */
interface Commit {
  readonly rows: number;
  readonly batches: number;
  readonly atMs: number;
  /** The range the worker held when the commit was seen. */
  readonly rangeId: number | undefined;
}

/** A worker's first batches are small (the batch size doubles up from `batchSize`): not its pace. */
const rampBatches = 4;
/** A rate needs at least this many batches between its first and last commit. */
const minBatches = 2;

/**
 * Rows per second measured between batch commits, by the commits' own times (the server's
 * clock when each worker's batch committed), rather than between status reads. A read lands
 * anywhere within a batch, so between two reads a worker's rows jump by whole batches (up to
 * 20,000 rows each): over the first seconds that alone makes a read-to-read rate 20% off or
 * worse. Between commits the rows and the time belong together.
 *
 * The first {@link rampBatches} batches of a worker are left out (its batch size is still
 * growing), and so is every commit seen before {@link BatchCommitRates.restart} (a pause or a
 * new ceiling: the batch in flight then, and the wait before the next, are not the new pace).
 * @internal
 *
 * @example
 * ```ts
 * const rates = new BatchCommitRates();
 * rates.record(status.workers, status.ranges);
 * const perWorker = rates.workerRates(10_000); // rows/s of each worker over the last 10 s
 * ```
 */
export class BatchCommitRates {
  private commits = new Map<string, Commit[]>();
  /** Per worker: commits up to this batch count are before the last restart. */
  private restartedAt = new Map<string, number>();

  /** Records each worker's latest commit, attributed to the range it holds now. */
  record(
    workers: readonly WorkerProgress[],
    ranges: readonly { readonly rangeId: number; readonly worker?: string | undefined }[],
  ): void {
    for (const w of workers) {
      if (w.batches < rampBatches || w.batches <= (this.restartedAt.get(w.workerId) ?? -1)) {
        continue;
      }
      const seen = this.commits.get(w.workerId) ?? [];
      if (seen.at(-1)?.batches === w.batches) continue;
      seen.push({
        rows: w.rowsScanned,
        batches: w.batches,
        atMs: w.lastBatchAt.getTime(),
        rangeId: ranges.find((r) => r.worker === w.workerId)?.rangeId,
      });
      this.commits.set(w.workerId, seen);
    }
  }

  /** Forgets every commit seen so far; only commits after the workers' current ones count. */
  restart(workers: readonly WorkerProgress[]): void {
    this.commits.clear();
    for (const w of workers) {
      this.restartedAt.set(w.workerId, Math.max(w.batches, this.restartedAt.get(w.workerId) ?? 0));
    }
  }

  /** Forgets everything (a new plan). */
  clear(): void {
    this.commits.clear();
    this.restartedAt.clear();
  }

  /** How long commits have been seen for (the longest of any worker), in ms. */
  spanMs(): number {
    let span = 0;
    for (const seen of this.commits.values()) {
      span = Math.max(span, (seen.at(-1)?.atMs ?? 0) - (seen[0]?.atMs ?? 0));
    }
    return span;
  }

  /** Rows per second of each worker over its commits in the last `windowMs`. */
  workerRates(windowMs: number): Map<string, number> {
    const rates = new Map<string, number>();
    for (const [workerId, seen] of this.commits) {
      const rate = rateOver(seen, windowMs);
      if (rate !== undefined) rates.set(workerId, rate);
    }
    return rates;
  }

  /**
   * Rows per second of `workerId` in range `rangeId` over the last `windowMs`: over its
   * commits seen while it held the range (the rows after the first of them were all read in it).
   */
  rangeRate(workerId: string, rangeId: number, windowMs: number): number | undefined {
    const seen = this.commits.get(workerId) ?? [];
    return rateOver(
      seen.filter((c) => c.rangeId === rangeId),
      windowMs,
    );
  }

  /**
   * Drops commits older than `keepMs` before each worker's latest, and the workers whose latest
   * is older than that before the newest of all (gone long ago).
   */
  prune(keepMs: number): void {
    let newest = Number.NEGATIVE_INFINITY;
    for (const seen of this.commits.values()) newest = Math.max(newest, seen.at(-1)?.atMs ?? 0);
    for (const [workerId, seen] of this.commits) {
      const latest = seen.at(-1)?.atMs ?? 0;
      if (latest < newest - keepMs) {
        this.commits.delete(workerId);
        continue;
      }
      while ((seen[1]?.atMs ?? Number.POSITIVE_INFINITY) <= latest - keepMs) seen.shift();
    }
  }
}

function rateOver(commits: readonly Commit[], windowMs: number): number | undefined {
  const last = commits.at(-1);
  if (!last) return undefined;
  const first = commits.find((c) => c.atMs >= last.atMs - windowMs);
  if (!first || last.batches - first.batches < minBatches || last.atMs <= first.atMs) {
    return undefined;
  }
  return ((last.rows - first.rows) * 1_000) / (last.atMs - first.atMs);
}

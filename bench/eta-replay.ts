/**
 * Replays the ETA estimator on traces recorded by `bench/eta.ts` (BENCH_TRACE=dir), offline:
 * the same statuses at the same times, the estimator of this checkout. A change to the
 * estimator is judged on several recorded runs in seconds instead of one new run in minutes
 * (runs differ, and the server's slowdowns cannot be ordered up), then confirmed by a new run.
 *
 *   npx tsx bench/eta-replay.ts DIR [DIR...]     (or `npm run bench:eta-replay -- DIR`)
 *
 * Prints, per trace, the worst error after 10%, 30% and 50% of the rows (as bench/eta.ts does,
 * only after the change for the ceiling and pause cases) and how often the actual end was
 * inside the predicted range.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { BackfillEtaEstimator } from '../src/backfill/backfill-eta.js';
import type { EtaTrace } from './eta.js';

/** One prediction of a replay (times in ms since the backfill() call). */
export interface Judged {
  readonly t: number;
  readonly fraction: number;
  readonly finish: number;
  readonly low: number;
  readonly high: number;
  /** Made after the case's change (always true in a case without one). */
  readonly afterChange: boolean;
  readonly error: number;
  readonly inside: boolean;
}

/**
 * The estimator's predictions over one trace, each judged against the actual end. For the
 * ceiling and pause cases only those made after the change, unless `all`.
 */
export function replay(trace: EtaTrace, all = false): Judged[] {
  const estimator = new BackfillEtaEstimator();
  const judgeAll = all || (trace.name !== 'ceiling' && trace.name !== 'pause');
  const judged: Judged[] = [];
  for (const sample of trace.samples) {
    const status = {
      ...sample.status,
      plannedAt: new Date(sample.status.plannedAt),
      // Traces recorded before the status had its workers replay read to read.
      workers: (sample.status.workers ?? []).map((w) => ({
        ...w,
        lastBatchAt: new Date(w.lastBatchAt),
      })),
    };
    const eta = estimator.estimate(status, sample.wallMs);
    if (eta.seconds === undefined || (!judgeAll && !sample.afterChange)) continue;
    const finish = sample.t + eta.seconds * 1_000;
    const low = sample.t + (eta.lowSeconds ?? 0) * 1_000;
    const high = sample.t + (eta.highSeconds ?? 0) * 1_000;
    judged.push({
      t: sample.t,
      finish,
      low,
      high,
      afterChange: sample.afterChange,
      fraction: status.rowsScanned / Math.max(1, status.rowsEstimated),
      error: Math.abs(finish - trace.ms) / trace.ms,
      inside: low <= trace.ms && trace.ms <= high,
    });
  }
  return judged;
}

function worst(judged: Judged[], from: number): string {
  const errors = judged.filter((j) => j.fraction >= from).map((j) => j.error);
  return errors.length ? `${(Math.max(...errors) * 100).toFixed(1)}%` : '-';
}

function main(dirs: string[]): void {
  if (dirs.length === 0) throw new Error('usage: tsx bench/eta-replay.ts DIR [DIR...]');
  console.log('| trace | took | worst error after 10% / 30% / 50% | actual end inside the range |');
  console.log('|---|---|---|---|');
  for (const dir of dirs) {
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
      const trace = JSON.parse(readFileSync(join(dir, file), 'utf8')) as EtaTrace;
      const judged = replay(trace);
      const fromTenth = judged.filter((j) => j.fraction >= 0.1);
      const inside = fromTenth.filter((j) => j.inside).length;
      if (process.env.REPLAY_VERBOSE) {
        for (const j of judged) {
          console.log(
            `  t ${(j.t / 1_000).toFixed(2)} s  ${(j.fraction * 100).toFixed(0)}%  finish ${(j.finish / 1_000).toFixed(2)} s  error ${(j.error * 100).toFixed(1)}%`,
          );
        }
      }
      console.log(
        `| ${dir}/${trace.name} | ${(trace.ms / 1_000).toFixed(1)} s | ${worst(judged, 0.1)} / ${worst(judged, 0.3)} / ${worst(judged, 0.5)} | ${fromTenth.length ? Math.round((100 * inside) / fromTenth.length) : '-'}% |`,
      );
    }
  }
}

// Run from the command line, not when imported (to replay traces from another script).
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2));
}

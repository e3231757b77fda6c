/**
 * How the CLI shows the backfill's ETA (`BackfillStatus.eta`): seconds to go with the range it
 * is sure of, or "settling" while too few batches were seen. Pure functions of a
 * `BackfillStatus`.
 * @internal
 */
import type { BackfillStatus } from '../backfill/backfill-status.js';
import { duration, shortDuration } from './duration-format.js';

/** `long`: `4 min 12 s` (the plain lines); `short`: `4m12s` (the live display). @internal */
export type DurationStyle = 'long' | 'short';

/** An estimate that is not settled yet, rounded to what it can say: `~2m`, `~40s`. */
function roughDuration(seconds: number, style: DurationStyle): string {
  const s = Math.max(0, seconds);
  if (s >= 90 && s < 3_600) {
    const minutes = Math.round(s / 60);
    return style === 'short' ? `~${minutes}m` : `~${minutes} min`;
  }
  const rounded = s < 60 ? Math.ceil(s / 10) * 10 : s;
  return `~${style === 'short' ? shortDuration(rounded) : duration(rounded)}`;
}

/**
 * The ETA of a running backfill: `ETA 2m10s (1m58s-2m25s)` (short) or
 * `ETA 2 min 10 s (1 min 58 s to 2 min 25 s)` (long), `ETA ~2m (settling)` until enough
 * batches were seen, `ETA unknown` when nothing is being copied; `done` when done and
 * `paused` (short) or `ETA unknown (paused)` (long) while paused.
 *
 * @example
 * ```ts
 * etaText(await migration.backfillStatus(), 'short'); // 'ETA 2m10s (1m58s-2m25s)'
 * ```
 * @internal
 */
export function etaText(s: BackfillStatus, style: DurationStyle): string {
  if (s.state === 'done') return 'done';
  if (s.state === 'paused') return style === 'short' ? 'paused' : 'ETA unknown (paused)';
  const { seconds, settling, lowSeconds: low, highSeconds: high } = s.eta;
  const format = style === 'short' ? shortDuration : duration;
  if (seconds === undefined) return `ETA ${style === 'short' ? '?' : 'unknown'}`;
  if (settling) return `ETA ${roughDuration(seconds, style)} (settling)`;
  if (low === undefined || high === undefined || format(low) === format(high)) {
    return `ETA ${format(seconds)}`;
  }
  return `ETA ${format(seconds)} (${format(low)}${style === 'short' ? '-' : ' to '}${format(high)})`;
}

/**
 * The ETA in JSON: every field of `BackfillStatus.eta` (absent values as `null`, `finishAt` as
 * ISO 8601).
 *
 * @example
 * ```ts
 * etaJson(status); // { seconds: 130.2, lowSeconds: 118, highSeconds: 145, finishAt: '...', settling: false, ratePerSecond: 5120 }
 * ```
 * @internal
 */
export function etaJson(s: BackfillStatus) {
  const { eta } = s;
  return {
    seconds: eta.seconds ?? null,
    lowSeconds: eta.lowSeconds ?? null,
    highSeconds: eta.highSeconds ?? null,
    finishAt: eta.finishAt?.toISOString() ?? null,
    settling: eta.settling,
    ratePerSecond: eta.ratePerSecond,
  };
}

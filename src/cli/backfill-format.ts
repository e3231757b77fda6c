/**
 * How the CLI shows a backfill's progress: the progress line of `backfill`, the lines of
 * `status`, and the `backfill` field of `status --json`. Pure functions of a
 * `BackfillStatus`; nothing here reads the database.
 * @internal
 */
import type { BackfillRangeStatus, BackfillStatus } from '../backfill/backfill-status.js';
import { etaJson, etaText } from './eta-format.js';

/**
 * Plans with at most this many ranges list every range in `status`; bigger plans list the
 * running ranges only (with counts of the others), `status --json` always lists them all.
 * @internal
 */
export const rangesListedInFull = 16;

/**
 * A count with thousands separators: `12345` -> `12,345`.
 *
 * @example
 * ```ts
 * count(1234567); // '1,234,567'
 * ```
 * @internal
 */
export function count(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

function percent(value: number): string {
  return `${value.toFixed(1)}%`;
}

/** `1 key`, `2,000 keys`. @internal */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${count(n)} ${n === 1 ? one : many}`;
}

/**
 * The line `backfill` prints every 2 s: progress of the whole plan (every process's workers).
 *
 * @example
 * ```ts
 * progressLine(status);
 * // 'backfill 42.3%: 12,345 rows scanned, 16,800 to go, 5,120 rows/s, ETA 4 s (3 s to 5 s), 2 workers active'
 * ```
 * @internal
 */
export function progressLine(s: BackfillStatus): string {
  const head =
    s.state === 'paused'
      ? `backfill paused at ${percent(s.percent)}`
      : `backfill ${percent(s.percent)}`;
  const tail =
    s.state === 'paused'
      ? 'backfill-resume continues it'
      : `${count(s.ratePerSecond)} rows/s, ${etaText(s, 'long')}`;
  return (
    `${head}: ${count(s.rowsScanned)} rows scanned, ${count(s.rowsToGo)} to go, ${tail}, ` +
    `${plural(s.activeWorkers, 'worker')} active`
  );
}

/**
 * The backfill's lines in `status` (text), each starting with two spaces and a 14-column
 * label like the other lines of `status`.
 *
 * @example
 * ```ts
 * for (const line of statusLines(await migration.backfillStatus())) console.log(line);
 * // '  backfill      running, 42.3%, 2 workers active'
 * ```
 * @internal
 */
export function statusLines(s: BackfillStatus | undefined): string[] {
  const label = (text: string) => `  ${text.padEnd(14)}`;
  const indent = ' '.repeat(16);
  if (s === undefined) {
    return [`${label('backfill')}not started (run backfill in phase dual_read)`];
  }
  const ceiling =
    s.maxRowsPerSecond === undefined
      ? 'no rate ceiling'
      : `ceiling ${count(s.maxRowsPerSecond)} rows/s`;
  let state: string;
  if (s.state === 'done') state = 'done, 100%';
  else if (s.state === 'paused') {
    state = `paused at ${percent(s.percent)} (backfill-resume continues it)`;
  } else if (s.activeWorkers === 0) {
    state = `running, ${percent(s.percent)}, no worker active (run backfill to continue)`;
  } else state = `running, ${percent(s.percent)}, ${plural(s.activeWorkers, 'worker')} active`;
  const lines = [
    `${label('backfill')}${state}`,
    `${indent}${count(s.rowsScanned)} rows scanned, ${count(s.rowsCopied)} copied, ` +
      `${count(s.rowsToGo)} to go (~${count(s.rowsEstimated)} planned)`,
  ];
  if (s.state === 'done') {
    const finished = s.finishedAt ? `, finished ${s.finishedAt.toISOString()}` : '';
    lines.push(`${indent}planned ${s.plannedAt.toISOString()}${finished}`);
  } else {
    lines.push(
      `${indent}${count(s.ratePerSecond)} rows/s (${ceiling}), ${etaText(s, 'long')}`,
      `${indent}planned ${s.plannedAt.toISOString()}`,
    );
  }
  const by = (status: BackfillRangeStatus['status']) =>
    s.ranges.filter((r) => r.status === status).length;
  lines.push(
    `${label('ranges')}${count(s.ranges.length)}: ${count(by('done'))} done, ` +
      `${count(by('running'))} running, ${count(by('pending'))} pending`,
  );
  const listed =
    s.ranges.length <= rangesListedInFull
      ? s.ranges
      : s.ranges.filter((r) => r.status === 'running');
  for (const r of listed) lines.push(`${label(`range ${r.rangeId}`)}${rangeText(r)}`);
  if (listed.length < s.ranges.length) {
    lines.push(`${indent}(running ranges only; status --json lists every range)`);
  }
  return lines;
}

function rangeText(r: BackfillRangeStatus): string {
  let text =
    `${r.status.padEnd(7)}  ${count(r.rowsScanned)} of ~${count(r.rowsEstimated)} scanned, ` +
    `${count(r.rowsCopied)} copied`;
  if (r.status === 'running') {
    text += `, ${r.worker ?? 'no live lease'}`;
  }
  if (r.splitFrom !== undefined) text += `, split from ${r.splitFrom}`;
  return text;
}

/**
 * The `backfill` field of `status --json`: every field of `BackfillStatus` with dates as ISO
 * 8601 strings and absent values as `null` (never missing keys), or `null` before the first
 * `backfill`.
 *
 * @example
 * ```ts
 * JSON.stringify(statusJson(await migration.backfillStatus()));
 * // {"state":"done","percent":100,"rowsToGo":0,"etaSeconds":0,...,"ranges":[...]}
 * ```
 * @internal
 */
export function statusJson(s: BackfillStatus | undefined) {
  if (s === undefined) return null;
  return {
    state: s.state,
    percent: s.percent,
    rowsEstimated: s.rowsEstimated,
    rowsScanned: s.rowsScanned,
    rowsCopied: s.rowsCopied,
    rowsToGo: s.rowsToGo,
    ratePerSecond: s.ratePerSecond,
    etaSeconds: s.etaSeconds ?? null,
    eta: etaJson(s),
    maxRowsPerSecond: s.maxRowsPerSecond ?? null,
    activeWorkers: s.activeWorkers,
    plannedAt: s.plannedAt.toISOString(),
    finishedAt: s.finishedAt?.toISOString() ?? null,
    ranges: s.ranges.map((r) => ({
      rangeId: r.rangeId,
      status: r.status,
      rowsEstimated: r.rowsEstimated,
      rowsScanned: r.rowsScanned,
      rowsCopied: r.rowsCopied,
      worker: r.worker ?? null,
      splitFrom: r.splitFrom ?? null,
    })),
  };
}

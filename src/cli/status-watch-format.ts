/**
 * What `status --watch` shows at each interval: the frame of its live display, its plain line
 * and its JSON event. Pure functions of a `MigrationStatus`: what the database knows (the
 * backfill of every process, the latest verification, the phase, live clients, the cutover
 * guards). Keys, counts and names only, never a row value.
 * @internal
 */
import type { MigrationStatus } from '../migration/persons-migration.js';
import { count, plural } from './backfill-format.js';
import { barWidth, fleetLine, planLines } from './backfill-frame.js';
import { fleetOf } from './backfill-watch.js';
import { etaText } from './eta-format.js';
import { lifecycleLines } from './lifecycle-format.js';
import { ndjsonLine } from './ndjson.js';
import { progressBar } from './progress-bar.js';
import { statusJsonOf } from './status-format.js';
import { verificationStatusLines } from './verify-format.js';

const label = (text: string) => `  ${text.padEnd(14)}`;
const indent = ' '.repeat(16);

/**
 * The lines of the live display of `status --watch`.
 *
 * @example
 * ```ts
 * display.draw(statusWatchFrame(status, 2_000, new Date()));
 * // migration "persons" at 14:30:02 (every 2 s; Ctrl-C stops watching)
 * //   phase         dual_read (epoch 2)   fleet fallback 1.2% of 10,234 rows (3 live clients)
 * //   backfill      ████████████░░░░░░░░░░░░░░░░░░  42.3%  12,345 of ~29,145 rows, 16,800 to go
 * //                 5,120 rows/s   ETA 2m10s (1m58s-2m25s), ends 14:32:05
 * //                 workers 4 active   ranges 8 done, 4 running, 4 pending
 * //   verification  none yet (run verify in phase dual_read)
 * //   cutover       blocked: [backfill_unfinished] ...
 * ```
 * @internal
 */
export function statusWatchFrame(s: MigrationStatus, intervalMs: number, at: Date): string[] {
  const lines = [
    `migration "${s.name}" at ${at.toTimeString().slice(0, 8)} ` +
      `(every ${intervalMs / 1_000} s; Ctrl-C stops watching)`,
    `${label('phase')}${fleetLine(fleetOf(s)).replace(/^phase /, '')}`,
  ];
  if (s.backfill === undefined) {
    lines.push(`${label('backfill')}${progressBar(0, barWidth)}  not started`);
  } else {
    const [bar, ...rest] = planLines(s.backfill, undefined);
    lines.push(`${label('backfill')}${bar}`, ...rest.map((line) => `${indent}${line}`));
  }
  lines.push(...verificationStatusLines(s.verification, s.backfill));
  lines.push(...lifecycleLines(s).filter((line) => !line.startsWith('  clients')));
  if (s.warnings.length > 0) {
    lines.push(`${label('warnings')}${s.warnings.length} (status lists them with their fix)`);
  }
  return lines;
}

/**
 * The line `status --watch` prints at each interval when stdout is not a terminal.
 *
 * @example
 * ```ts
 * statusWatchLine(status, new Date());
 * // 'status at 2026-01-01T10:00:00.000Z: phase dual_read (epoch 2); backfill 42.3%, 5,120 rows/s,
 * //  ETA 4 min 12 s (3 min 58 s to 4 min 25 s), 2 workers active; verification none;
 * //  3 live clients, fleet fallback 1.2%; cutover blocked by 2 guards'
 * ```
 * @internal
 */
export function statusWatchLine(s: MigrationStatus, at: Date): string {
  const parts = [`phase ${s.phase} (epoch ${s.epoch})`];
  const b = s.backfill;
  if (b === undefined) parts.push('backfill not started');
  else if (b.state === 'done') parts.push('backfill done');
  else {
    parts.push(
      `backfill ${b.state === 'paused' ? 'paused at ' : ''}${b.percent.toFixed(1)}%, ` +
        `${count(b.ratePerSecond)} rows/s, ${etaText(b, 'long')}, ` +
        `${plural(b.activeWorkers, 'worker')} active`,
    );
  }
  const v = s.verification;
  parts.push(v === undefined ? 'verification none' : `verification ${v.status} (run ${v.id})`);
  const { live, fleet } = s.clients;
  parts.push(
    live.length === 0
      ? 'no live client'
      : `${plural(live.length, 'live client')}, fleet fallback ${(fleet.fallbackRate * 100).toFixed(1)}%`,
  );
  if (s.phase === 'dual_read') {
    parts.push(
      s.cutoverGuards.length === 0
        ? 'cutover ready'
        : `cutover blocked by ${plural(s.cutoverGuards.length, 'guard')}`,
    );
  }
  return `status at ${at.toISOString()}: ${parts.join('; ')}`;
}

/**
 * The `status` event of `status --watch --json`: the object of `status --json` and the time
 * it was read.
 *
 * @example
 * ```ts
 * statusWatchEvent(status, 'dual_read', new Date());
 * // '{"type":"status","at":"2026-...","name":"persons","phase":"dual_read",...}'
 * ```
 * @internal
 */
export function statusWatchEvent(s: MigrationStatus, controlSchema: string, at: Date): string {
  return ndjsonLine('status', { at, ...statusJsonOf(s, controlSchema) });
}

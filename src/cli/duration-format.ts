/**
 * How the CLI writes a number of seconds: `4 min 12 s` in lines and summaries, `4m12s` in the
 * live display.
 * @internal
 */

/**
 * Seconds as `45 s`, `4 min 12 s`, `2 h 05 min`; `unknown` for undefined.
 *
 * @example
 * ```ts
 * duration(252); // '4 min 12 s'
 * ```
 * @internal
 */
export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return 'unknown';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3_600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3_600)} h ${String(Math.floor((s % 3_600) / 60)).padStart(2, '0')} min`;
}

/**
 * Seconds as `45s`, `2m10s`, `1h05m`; `?` for undefined.
 *
 * @example
 * ```ts
 * shortDuration(130); // '2m10s'
 * ```
 * @internal
 */
export function shortDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3_600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3_600)}h${String(Math.floor((s % 3_600) / 60)).padStart(2, '0')}m`;
}

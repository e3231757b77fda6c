/**
 * The `--json` output of the long commands (`backfill`, `verify`, `status --watch`):
 * newline-delimited JSON, one event per line, each with a `type`. Counts, names and keys only,
 * never a row value.
 * @internal
 */

/**
 * The types of event a long command prints with `--json`:
 * - `progress`: `backfill` (every 2 s) and `verify` (after each chunk, when there are several);
 * - `status`: `status --watch`, every interval (the fields of `status --json`);
 * - `paused`: `backfill` noticed the backfill is paused (once per pause);
 * - `stopping`: the first SIGINT or SIGTERM arrived; the command stops at its next safe point;
 * - `error`: `status --watch` could not read the status this time (it tries again);
 * - `done`: the last line of a run that was not a failure (a failure prints `error [CODE]` on
 *   stderr and no `done`).
 * @internal
 */
export type NdjsonEventType = 'progress' | 'status' | 'paused' | 'stopping' | 'error' | 'done';

/**
 * One event as one line of JSON: `type` first, then the fields (an `undefined` field becomes
 * `null`, so that every line of a type has the same keys; dates become ISO 8601 strings).
 *
 * @example
 * ```ts
 * ndjsonLine('stopping', { command: 'backfill', signal: 'SIGINT' });
 * // '{"type":"stopping","command":"backfill","signal":"SIGINT"}'
 * ```
 * @internal
 */
export function ndjsonLine(type: NdjsonEventType, fields: Record<string, unknown>): string {
  return JSON.stringify({ type, ...fields }, (_, value: unknown) =>
    value === undefined ? null : value,
  );
}

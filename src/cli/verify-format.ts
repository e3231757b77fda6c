/**
 * How the CLI shows a verification: the summary and key lines of `verify`, the pieces of
 * `verify --json`, and the verification lines and `verification` field of `status`. Pure
 * functions of a `VerificationResult`, `VerificationSummary` or `MismatchedKey`; nothing here
 * reads the database. Only keys, classes and counts are shown: never a row value.
 * @internal
 */
import type { BackfillStatus } from '../backfill/backfill-status.js';
import { agreeingClasses, mismatchClasses } from '../model/mismatch-class.js';
import type { RepairResult } from '../verify/repair.js';
import type { VerificationResult } from '../verify/run-verify.js';
import type { MismatchedKey, VerificationSummary } from '../verify/verification-store.js';
import { count, plural } from './backfill-format.js';
import { duration } from './duration-format.js';

/** Mismatch classes in the order the CLI lists their counts (an unknown class comes after). */
const mismatchOrder = mismatchClasses;

/** Classes of keys that agree: counted, never listed. */
const agreeingOrder = agreeingClasses;

/** The one class that is reported without making a run unclean. */
const reportedOnly = 'person_without_distinct_id';

const label = (text: string) => `  ${text.padEnd(14)}`;
const indent = ' '.repeat(16);

/** `{ missing_in_new: 1, same: 40 }` -> the mismatch classes with a count, in list order. */
function mismatchCounts(counts: Readonly<Record<string, number | undefined>>): [string, number][] {
  const agreeing: readonly string[] = agreeingOrder;
  const known: readonly string[] = mismatchOrder;
  const others = Object.keys(counts)
    .filter((cls) => !known.includes(cls) && !agreeing.includes(cls))
    .sort();
  return [...mismatchOrder, ...others]
    .map((cls): [string, number] => [cls, counts[cls] ?? 0])
    .filter(([, n]) => n > 0);
}

function classList(entries: readonly [string, number][]): string {
  return entries
    .map(([cls, n]) => `${count(n)} ${cls}${cls === reportedOnly ? ' (reported only)' : ''}`)
    .join(', ');
}

/** Keys in every mismatch class, `person_without_distinct_id` included. */
function listedKeys(counts: Readonly<Record<string, number | undefined>>): number {
  return mismatchCounts(counts).reduce((sum, [, n]) => sum + n, 0);
}

/**
 * What a run checked: `every key (full)` or `backfill ranges 1, 2 (partial)`.
 * @internal
 */
export function coverage(full: boolean, range: string): string {
  return full ? 'every key (full)' : `${range} (partial)`;
}

/**
 * The summary `verify` prints before the keys: the outcome, what was checked, rows, counts
 * per class, what a repair changed.
 *
 * @example
 * ```ts
 * for (const line of verifySummaryLines(result, 'persons', 'every key')) console.log(line);
 * // verification 7 of migration "persons": NOT clean, 2 mismatched keys
 * //   checked       every key (full), join, 0.4 s
 * //   rows          50 old, 49 new
 * //   mismatches    1 missing_in_new, 1 content_differs
 * //   agreeing      48 same, 0 newer_in_new, 0 created_in_new
 * ```
 * @internal
 */
export function verifySummaryLines(
  r: VerificationResult,
  migrationName: string,
  range: string,
): string[] {
  const reported = r.counts[reportedOnly] ?? 0;
  let outcome: string;
  if (r.clean) {
    outcome =
      reported > 0
        ? `clean (${plural(reported, 'person')} without a distinct id, reported only)`
        : 'clean, no mismatched key';
  } else outcome = `NOT clean, ${plural(r.mismatches, 'mismatched key')}`;
  const lines = [
    `verification ${r.id} of migration "${migrationName}": ${outcome}`,
    `${label('checked')}${coverage(r.full, range)}, ${r.method}, ${(r.ms / 1_000).toFixed(1)} s` +
      (r.rechecks > 0 ? `, ${plural(r.rechecks, 're-check')} of changed keys` : ''),
    `${label('rows')}${count(r.oldRows)} old, ${count(r.newRows)} new`,
    `${label('columns')}${r.columns.join(', ')}`,
  ];
  const mismatches = mismatchCounts(r.counts);
  lines.push(
    `${label('mismatches')}${mismatches.length === 0 ? 'none' : classList(mismatches)}`,
    `${label('agreeing')}${agreeingOrder.map((cls) => `${count(r.counts[cls] ?? 0)} ${cls}`).join(', ')}`,
  );
  if (r.repair) lines.push(`${label('repaired')}${repairText(r.repair)}`);
  if (r.strayWrites > 0) {
    lines.push(
      `${label('stray writes')}${plural(r.strayWrites, 'key')} of the old table written outside the library (status lists them; they block cutover)`,
    );
  }
  return lines;
}

function repairText(repair: RepairResult): string {
  return (
    `${count(repair.copied)} copied (were missing_in_new), ${count(repair.updated)} updated ` +
    `(were older_in_new), ${count(repair.skipped)} skipped (changed meanwhile)`
  );
}

/**
 * The line above the keys (printed with the first key; `no mismatched key` when none comes).
 * @internal
 */
export function keysHeading(withRepaired: boolean): string {
  const suffix = withRepaired ? "; keys the repair fixed end with 'repaired'" : '';
  return `mismatched keys (class team_id person_id${suffix}):`;
}

/**
 * One key as `verify` lists it: `class team_id person_id`, plus ` repaired` for a key a
 * repair fixed.
 *
 * @example
 * ```ts
 * keyLine({ class: 'missing_in_new', teamId: 1, personId: '17', repaired: false });
 * // 'missing_in_new 1 17'
 * ```
 * @internal
 */
export function keyLine(key: MismatchedKey): string {
  return `${key.class} ${key.teamId} ${key.personId}${key.repaired ? ' repaired' : ''}`;
}

/**
 * The line after keys listed up to `--max-keys`.
 * @internal
 */
export function keysCutLine(r: VerificationResult, maxKeys: number): string {
  return (
    `listed the first ${plural(maxKeys, 'key')} (--max-keys ${maxKeys}) of ` +
    `${count(listedKeys(r.counts))} open; without --max-keys every key is listed`
  );
}

/**
 * The key as `verify --json` lists it.
 *
 * @example
 * ```ts
 * keyJson(key); // { class: 'missing_in_new', teamId: 1, personId: '17', repaired: false }
 * ```
 * @internal
 */
export function keyJson(key: MismatchedKey) {
  return {
    class: key.class,
    teamId: key.teamId,
    personId: key.personId,
    repaired: key.repaired,
  };
}

/**
 * The fields of `verify --json` before its keys: every field of the result but the inline
 * keys, with the migration and the ranges asked for.
 *
 * @example
 * ```ts
 * JSON.stringify({ ...verificationResultJson(result, 'persons', undefined), keys, truncated });
 * ```
 * @internal
 */
export function verificationResultJson(
  r: VerificationResult,
  migrationName: string,
  ranges: readonly number[] | undefined,
) {
  return {
    id: r.id,
    migration: migrationName,
    clean: r.clean,
    method: r.method,
    full: r.full,
    ranges: ranges ?? null,
    columns: r.columns,
    oldRows: r.oldRows,
    newRows: r.newRows,
    counts: r.counts,
    mismatches: r.mismatches,
    rechecks: r.rechecks,
    repair: r.repair ?? null,
    strayWrites: r.strayWrites,
    ms: Math.round(r.ms),
  };
}

/**
 * The verification's lines in `status` (text), each starting with two spaces and a 14-column
 * label like the other lines of `status`.
 *
 * @example
 * ```ts
 * const s = await migration.status();
 * for (const line of verificationStatusLines(s.verification, s.backfill)) console.log(line);
 * // '  verification  clean, every key (full), finished 2025-01-01T10:00:00.000Z (run 7, join)'
 * ```
 * @internal
 */
export function verificationStatusLines(
  v: VerificationSummary | undefined,
  backfill: BackfillStatus | undefined,
): string[] {
  if (v === undefined) {
    return [`${label('verification')}none yet (run verify in phase dual_read)`];
  }
  const scope = coverage(v.full, v.range);
  const run = `(run ${v.id}, ${v.method})`;
  let when: string;
  if (v.status === 'running') when = `started ${v.startedAt.toISOString()}`;
  else if (v.finishedAt) {
    const seconds = (v.finishedAt.getTime() - v.startedAt.getTime()) / 1_000;
    when = `finished ${v.finishedAt.toISOString()} after ${duration(seconds)}`;
  } else when = `started ${v.startedAt.toISOString()}`;
  const lines = [`${label('verification')}${v.status}, ${scope}, ${when} ${run}`];
  if (v.status === 'clean' || v.status === 'mismatched') {
    const mismatches = mismatchCounts(v.counts);
    lines.push(
      `${indent}${plural(v.mismatches, 'mismatched key')}` +
        (mismatches.length > 0 ? ` (${classList(mismatches)})` : '') +
        `; ${count(v.oldRows)} old rows, ${count(v.newRows)} new rows checked`,
    );
  }
  let freshness: string;
  if (v.newerThanBackfill) freshness = 'newer than the finished backfill';
  else if (backfill?.state === 'done') {
    freshness = 'NOT newer than the backfill: started before it finished (run verify again)';
  } else freshness = 'NOT newer than the backfill: the backfill has not finished';
  lines.push(`${indent}${freshness}`);
  return lines;
}

/**
 * The `verification` field of `status --json`: every field of `VerificationSummary` with
 * dates as ISO 8601 strings, `finishedAt` `null` while running; `null` before the first run.
 *
 * @example
 * ```ts
 * JSON.stringify({ verification: verificationJson((await migration.status()).verification) });
 * ```
 * @internal
 */
export function verificationJson(v: VerificationSummary | undefined) {
  if (v === undefined) return null;
  return {
    id: v.id,
    method: v.method,
    status: v.status,
    full: v.full,
    range: v.range,
    columns: v.columns,
    startedAt: v.startedAt.toISOString(),
    finishedAt: v.finishedAt?.toISOString() ?? null,
    oldRows: v.oldRows,
    newRows: v.newRows,
    counts: v.counts,
    mismatches: v.mismatches,
    newerThanBackfill: v.newerThanBackfill,
  };
}

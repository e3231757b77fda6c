/**
 * How the CLI shows a `MigrationStatus`: the text of `status`, the object of `status --json`
 * (also the `status` events of `status --watch --json`). Pure functions; nothing here reads the
 * database. Keys, counts and names only, never a row value.
 * @internal
 */
import type { MigrationStatus } from '../migration/persons-migration.js';
import { statusJson, statusLines } from './backfill-format.js';
import { findingLines } from './finding-format.js';
import { lifecycleLines } from './lifecycle-format.js';
import { verificationJson, verificationStatusLines } from './verify-format.js';

/**
 * The object of `status --json`: the fields of `MigrationStatus` plus `controlSchema`;
 * `epoch` is a decimal string, dates are ISO 8601, `backfill` and `verification` as
 * {@link statusJson} and {@link verificationJson} make them.
 *
 * @example
 * ```ts
 * JSON.stringify(statusJsonOf(await migration.status(), 'dual_read'));
 * // {"name":"persons","phase":"dual_read","epoch":"2",...,"controlSchema":"dual_read"}
 * ```
 * @internal
 */
export function statusJsonOf(s: MigrationStatus, controlSchema: string) {
  return {
    ...s,
    phaseChangedAt: s.phaseChangedAt.toISOString(),
    backfill: statusJson(s.backfill),
    verification: verificationJson(s.verification),
    controlSchema,
  };
}

/**
 * The lines of `status` (text).
 *
 * @example
 * ```ts
 * for (const line of statusTextLines(await migration.status(), 'dual_read')) console.log(line);
 * // migration "persons" (control schema "dual_read")
 * //   phase         dual_read (epoch 2, since 2026-01-01T10:00:00.000Z)
 * ```
 * @internal
 */
export function statusTextLines(s: MigrationStatus, controlSchema: string): string[] {
  return [
    `migration "${s.name}" (control schema "${controlSchema}")`,
    `  phase         ${s.phase} (epoch ${s.epoch}, since ${s.phaseChangedAt.toISOString()})`,
    `  old table     ${s.oldTable}`,
    `  new table     ${s.newTable}`,
    `  distinct ids  ${s.distinctIdsTable}`,
    ...statusLines(s.backfill),
    ...verificationStatusLines(s.verification, s.backfill),
    ...lifecycleLines(s),
    ...findingLines('warning', s.warnings),
  ];
}

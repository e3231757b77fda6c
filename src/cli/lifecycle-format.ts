/**
 * The lifecycle part of `status`'s text: the retired table, stray writes, what would block a
 * cutover now, and the recent phase history. Keys and names only, never row values.
 * @internal
 */
import type { MigrationStatus } from '../migration/persons-migration.js';

/**
 * The lines `status` prints about the end of the lifecycle.
 *
 * @example
 * ```ts
 * for (const line of lifecycleLines(await migration.status())) console.log(line);
 * //   cutover       blocked: [backfill_unfinished] the backfill is running at 40.0%...
 * ```
 * @internal
 */
export function lifecycleLines(s: MigrationStatus): string[] {
  const lines: string[] = [];
  if (s.retiredTable)
    lines.push(`  retired table ${s.retiredTable} (drop-retired --confirm to drop it)`);
  if (s.phase === 'dual_read') {
    if (s.cutoverGuards.length === 0) lines.push('  cutover       ready');
    for (const guard of s.cutoverGuards) {
      lines.push(`  cutover       blocked: [${guard.guard}] ${guard.message}`);
    }
  }
  if (s.strayWrites.count > 0) {
    const keys = s.strayWrites.keys
      .slice(0, 5)
      .map((k) => `${k.operation} (${k.teamId}, ${k.personId})`)
      .join(', ');
    lines.push(`  stray writes  ${s.strayWrites.count} key(s) of the old table, latest: ${keys}`);
  }
  for (const change of s.history.slice(0, 5)) {
    const by = change.actor ? ` by ${change.actor}` : '';
    const forced = change.forced.length > 0 ? `, forced: ${change.forced.join(', ')}` : '';
    lines.push(
      `  history       ${change.changedAt.toISOString()} ${change.from} -> ${change.to} ` +
        `(epoch ${change.epoch})${by}${forced}`,
    );
  }
  return lines;
}

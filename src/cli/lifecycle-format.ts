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
  const { live, fleet } = s.clients;
  lines.push(
    `  clients       ${live.length} live` +
      (live.length > 0
        ? `, epochs ${[...new Set(live.map((c) => c.epoch))].join('/')}, fleet fallback ` +
          `${(fleet.fallbackRate * 100).toFixed(1)}% of ${fleet.rows} rows`
        : ''),
  );
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

/**
 * The lines of `pg-dual-read clients`: one per live instance.
 *
 * @example
 * ```ts
 * clientLines(status);
 * // ['ingestion on host-1 (pid 4242, 0.1.0, protocol 2): dual_read epoch 2, 1200 reads, 3.1% from old, heartbeat 2026-...']
 * ```
 * @internal
 */
export function clientLines(s: MigrationStatus): string[] {
  if (s.clients.live.length === 0) return ['no live client (instances register on first use)'];
  return s.clients.live.map(
    (c) =>
      `${c.service} on ${c.host} (pid ${c.pid}, ${c.libraryVersion}, protocol ${c.protocol}): ` +
      `${c.phase} epoch ${c.epoch}, ${c.reads} reads, ` +
      `${c.rows ? ((c.oldRows / c.rows) * 100).toFixed(1) : '0.0'}% from old, heartbeat ${c.lastHeartbeat.toISOString()}`,
  );
}

/**
 * `npm run soak`: the lifecycle under writes and faults, decided by a history checker.
 *
 *   npm run soak                          the CI seeds (1, 2), about a minute
 *   SOAK_MINUTES=30 npm run soak          rounds with seeds 1, 2, 3... for 30 minutes
 *   SOAK_SEEDS=17 npm run soak            replay one seed (a failing round prints its seed)
 *
 * Each round seeds SOAK_ROWS persons on a throwaway PostgreSQL server started from this
 * machine's binaries (the shared server is never touched), starts SOAK_WRITERS writer processes
 * (SOAK_RATE operations/s each: creates, updates with and without a version assert, deletes,
 * merges, distinct ids added and moved, reads; hot persons written by every writer at once),
 * drives startDualRead, backfill, verify, cutover, rollback, cutover, finalize, and injects
 * faults (backends terminated, processes killed and frozen, the server restarted, forced
 * timeouts). Prints the operations by type and outcome, the faults by kind, the phase changes,
 * and the counts that must be 0; exits 1 when one is not, or a round could not finish.
 *
 * Knobs (defaults in brackets): SOAK_SEEDS [1,2] SOAK_MINUTES SOAK_FIRST_SEED [1]
 * SOAK_ROWS [5000] SOAK_TEAMS [4] SOAK_WRITERS [3] SOAK_RATE [50] SOAK_OWNED [150]
 * SOAK_HOT [3] SOAK_DWELL_MS [1500] SOAK_FAULT_GAP_MS [400] SOAK_RESTART_GAP_MS [8000]
 * SOAK_BACKFILL_ROWS_PER_S [2000]
 */
import { envNumber } from '../bench/support.js';
import type { RoundResult } from './round.js';
import { soakRoundSettings } from './settings.js';
import { roundPassed, runSoak, type SoakTotals } from './soak.js';

const line = (text: string) => process.stdout.write(`${text}\n`);

function roundLine(r: RoundResult): string {
  const v = r.verdict.violations;
  const ops = Object.values(r.verdict.operations).reduce((a, b) => a + b, 0);
  const faults = Object.values(r.faults).reduce((a, b) => a + b, 0);
  const verdict = roundPassed(r) ? 'ok' : `FAILED (replay: SOAK_SEEDS=${r.seed} npm run soak)`;
  return (
    `seed ${r.seed}: ${(r.ms / 1000).toFixed(1)} s, ${ops} operations, ${faults} faults, ` +
    `${r.lifecycle.phaseChanges} phase changes, lost ${v.lost}, resurrected ${v.resurrected}, ` +
    `orphans ${v.orphans}, half-done ${v.halfDone}, phantom ${v.phantom}, versions ${v.versions}, ` +
    `stale reads ${v.staleReads}, overlaps ${v.overlaps}: ${verdict}` +
    (r.lifecycle.complete ? '' : `\n  lifecycle stuck: ${r.lifecycle.stuck}`) +
    r.crashes.map((c) => `\n  crashed: ${c}`).join('') +
    r.verdict.findings.map((f) => `\n  ${f}`).join('') +
    (roundPassed(r) ? '' : `\n  history kept in ${r.historyDir}`)
  );
}

export function printTotals(t: SoakTotals): void {
  line(`\n${t.rounds.length} rounds in ${(t.ms / 60_000).toFixed(1)} min`);
  line('operations (type/outcome):');
  for (const [k, v] of Object.entries(t.operations).sort()) line(`  ${k.padEnd(20)} ${v}`);
  line('faults:');
  for (const [k, v] of Object.entries(t.faults)) line(`  ${k.padEnd(28)} ${v}`);
  line(`  ${'forced timeouts that fired'.padEnd(28)} ${t.timeoutsFired}`);
  line('failed and unknown operations by error code:');
  for (const [k, v] of Object.entries(t.codes).sort()) line(`  ${k.padEnd(40)} ${v}`);
  line(`phase changes: ${t.phaseChanges}`);
  const v = t.violations;
  line(
    `lost writes ${v.lost}, resurrected persons ${v.resurrected}, orphans ${v.orphans}, ` +
      `half-done operations ${v.halfDone} (and phantom ${v.phantom}, versions ${v.versions}, ` +
      `stale reads ${v.staleReads}, writer overlaps ${v.overlaps})`,
  );
  line(`processes crashed: ${t.crashes.length}`);
  line(t.failedSeeds.length === 0 ? 'PASSED' : `FAILED seeds: ${t.failedSeeds.join(', ')}`);
}

async function main(): Promise<void> {
  const seeds = process.env.SOAK_SEEDS?.split(',').map(Number);
  const minutes = process.env.SOAK_MINUTES ? envNumber('SOAK_MINUTES', 0) : undefined;
  const totals = await runSoak({
    ...(minutes !== undefined ? { minutes } : { seeds: seeds ?? [1, 2] }),
    firstSeed: envNumber('SOAK_FIRST_SEED', 1),
    round: soakRoundSettings(),
    onRound: (r) => line(roundLine(r)),
  });
  printTotals(totals);
  process.exitCode = totals.failedSeeds.length === 0 ? 0 : 1;
}

await main();

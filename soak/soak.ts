/**
 * The soak: rounds of the whole lifecycle under writes and faults (see `round.ts`), on a
 * throwaway PostgreSQL server of the harness's own (restarted by the faults; the shared server
 * is never touched), with the totals that decide it.
 */
import { startThrowawayServer } from '../test/support/throwaway-server.js';
import { noViolations, type Violations } from './checker.js';
import { killAllChildren } from './child.js';
import { type FaultKind, faultKinds } from './faults.js';
import { type RoundResult, type RoundSettings, runRound } from './round.js';

export interface SoakOptions {
  /** Seeds to run, one round each, in order. */
  readonly seeds?: readonly number[];
  /** Or: rounds with seeds from `firstSeed` up, until this much time has passed. */
  readonly minutes?: number;
  readonly firstSeed?: number;
  /** Round settings other than the seed. */
  readonly round: Omit<RoundSettings, 'seed'>;
  /** Called after each round (progress lines). */
  readonly onRound?: (result: RoundResult) => void;
}

export interface SoakTotals {
  readonly rounds: readonly RoundResult[];
  readonly ms: number;
  readonly operations: Readonly<Record<string, number>>;
  readonly faults: Readonly<Record<FaultKind, number>>;
  readonly timeoutsFired: number;
  readonly codes: Readonly<Record<string, number>>;
  readonly phaseChanges: number;
  readonly violations: Violations;
  /** Processes that crashed, over all rounds (`seed n: ...`). */
  readonly crashes: readonly string[];
  /** Seeds whose round found a violation or could not finish the lifecycle. */
  readonly failedSeeds: readonly number[];
}

function add<K extends string>(into: Record<K, number>, from: Readonly<Record<K, number>>): void {
  for (const [k, v] of Object.entries(from) as [K, number][]) into[k] = (into[k] ?? 0) + v;
}

/** Whether a round found nothing wrong and finished the lifecycle. */
export function roundPassed(result: RoundResult): boolean {
  return (
    result.lifecycle.complete &&
    result.crashes.length === 0 &&
    Object.values(result.verdict.violations).every((count) => count === 0)
  );
}

export async function runSoak(options: SoakOptions): Promise<SoakTotals> {
  const started = Date.now();
  const server = await startThrowawayServer(['shared_buffers = 128MB', 'max_wal_size = 1GB']);
  // Interrupted: the children and the server go with us.
  const onSignal = () => {
    killAllChildren();
    void server.stop().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const rounds: RoundResult[] = [];
  try {
    const deadline = started + (options.minutes ?? 0) * 60_000;
    let seed = options.firstSeed ?? 1;
    const seeds = options.seeds ? [...options.seeds] : [];
    for (;;) {
      const next = options.seeds ? seeds.shift() : Date.now() < deadline ? seed++ : undefined;
      if (next === undefined) break;
      const result = await runRound(server, { ...options.round, seed: next });
      rounds.push(result);
      options.onRound?.(result);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await server.stop();
  }
  const operations: Record<string, number> = {};
  const codes: Record<string, number> = {};
  const faults = Object.fromEntries(faultKinds.map((k) => [k, 0])) as Record<FaultKind, number>;
  const violations: Violations = noViolations();
  for (const r of rounds) {
    add(operations, r.verdict.operations);
    add(codes, r.codes);
    add(faults, r.faults);
    add(
      violations as unknown as Record<string, number>,
      r.verdict.violations as unknown as Record<string, number>,
    );
  }
  return {
    rounds,
    ms: Date.now() - started,
    operations,
    faults,
    timeoutsFired: rounds.reduce((sum, r) => sum + r.timeoutsFired, 0),
    codes,
    phaseChanges: rounds.reduce((sum, r) => sum + r.lifecycle.phaseChanges, 0),
    violations,
    crashes: rounds.flatMap((r) => r.crashes.map((c) => `seed ${r.seed}: ${c}`)),
    failedSeeds: rounds.filter((r) => !roundPassed(r)).map((r) => r.seed),
  };
}

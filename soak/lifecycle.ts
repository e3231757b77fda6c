/**
 * The soak's lifecycle, driven while the writers write and the faults fall: `startDualRead`,
 * the backfill (a process of its own, restarted when killed), `verify`, `cutover`, `rollback`,
 * `cutover` again, `finalize`, with writes flowing between the steps. A phase change that fails
 * (its backend terminated, the server restarting) is retried after reading the phase back:
 * one whose COMMIT answer was lost may have happened.
 */
import { TransitionRefusedError } from '../src/errors.js';
import type { PersonsMigration } from '../src/index.js';
import type { Phase } from '../src/model/phase.js';
import type { BackfillProcessConfig } from './backfill-process.js';
import { SoakChild } from './child.js';
import type { FaultInjector } from './faults.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface LifecycleSettings {
  /** Writes flow this long between two steps. */
  readonly dwellMs: number;
  readonly backfill: BackfillProcessConfig;
  /** Chance that a phase change has its backend terminated, and that a writer is frozen across it. */
  readonly terminateChance: number;
  readonly freezeChance: number;
  /** Give up on a step after this many failed attempts. */
  readonly maxAttempts: number;
}

/** What the lifecycle did. */
export interface LifecycleReport {
  /** Phase changes that took effect. */
  phaseChanges: number;
  /** Attempts that failed and were retried (phase changes, verify, backfill processes). */
  retries: number;
  /** Backfill processes started (1 when none was killed or failed). */
  backfillProcesses: number;
  verifications: number;
  /** Mismatches of verifications that completed (must be 0). */
  verifyMismatches: number;
  /** The phase at the end, and whether every step was done. */
  phase: Phase | 'unknown';
  complete: boolean;
  /** The step that could not be done, when not complete. */
  stuck?: string;
  /** Backfill processes that crashed (not killed by the faults, no error of the library). */
  crashes: string[];
}

export class Lifecycle {
  readonly report: LifecycleReport = {
    phaseChanges: 0,
    retries: 0,
    backfillProcesses: 0,
    verifications: 0,
    verifyMismatches: 0,
    phase: 'unknown',
    complete: false,
    crashes: [],
  };

  constructor(
    private readonly migration: PersonsMigration,
    private readonly faults: FaultInjector,
    private readonly random: () => number,
    private readonly settings: LifecycleSettings,
  ) {}

  async run(): Promise<LifecycleReport> {
    const m = this.migration;
    const actor = { actor: 'soak' };
    try {
      await sleep(this.settings.dwellMs);
      await this.change('startDualRead', 'dual_read', () => m.startDualRead());
      await sleep(this.settings.dwellMs);
      await this.backfill();
      await this.verify();
      await this.change('cutover', 'new', () => m.cutover(actor));
      await sleep(this.settings.dwellMs);
      await this.change('rollback', 'dual_read', () => m.rollback(actor));
      await sleep(this.settings.dwellMs);
      await this.change('cutover', 'new', () => m.cutover(actor));
      await sleep(this.settings.dwellMs);
      await this.change('finalize', 'finalized', () => m.finalize(actor));
      await sleep(this.settings.dwellMs);
      this.report.complete = true;
    } catch (error) {
      this.report.stuck = error instanceof Error ? error.message : String(error);
    }
    this.report.phase = (await this.phase()) ?? 'unknown';
    return this.report;
  }

  /** The phase in the database, or undefined when it cannot be read right now. */
  private async phase(): Promise<Phase | undefined> {
    try {
      return (await this.migration.status()).phase;
    } catch {
      return undefined;
    }
  }

  /** One phase change, with the faults armed for it, retried until `target` is the phase. */
  private async change(name: string, target: Phase, fn: () => Promise<unknown>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const thaw =
        this.random() < this.settings.freezeChance
          ? this.faults.freeze('freeze-across-phase-change')
          : undefined;
      const terminate =
        this.random() < this.settings.terminateChance
          ? sleep(this.random() * 20).then(() =>
              this.faults.terminate('terminate-phase-change', 60),
            )
          : undefined;
      let failure: unknown;
      try {
        await fn();
      } catch (error) {
        failure = error;
      } finally {
        await terminate;
        // The frozen writer wakes up after the change, on a stale phase cache.
        if (thaw) setTimeout(thaw, this.random() * 500);
      }
      if (failure === undefined || (await this.phase()) === target) {
        this.report.phaseChanges += 1;
        return;
      }
      if (failure instanceof TransitionRefusedError) {
        const guards = failure.unmet.map((g) => g.guard).join(', ');
        throw new Error(`${name}() refused (${guards})`);
      }
      this.retry(name, attempt, failure);
      await sleep(100 + this.random() * 300);
    }
  }

  private retry(step: string, attempt: number, failure: unknown): void {
    this.report.retries += 1;
    if (attempt >= this.settings.maxAttempts) {
      const code = (failure as { code?: unknown }).code;
      throw new Error(`${step}: gave up after ${attempt} attempts (last: ${String(code)})`);
    }
  }

  /** Backfill processes until one finishes the plan; the faults may kill them. */
  private async backfill(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const child = SoakChild.start('backfill', 'soak/backfill-process.ts', this.settings.backfill);
      this.report.backfillProcesses += 1;
      this.faults.backfill = child;
      const code = await child.exited;
      this.faults.backfill = undefined;
      if (code === 0) return;
      if (child.crashed)
        this.report.crashes.push(`backfill: ${child.stderrTail.trim().slice(0, 300)}`);
      this.retry('backfill', attempt, { code: child.stderrTail.trim() || code });
      await sleep(200);
    }
  }

  /** Verifications until one completes; it must be clean. */
  private async verify(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await this.migration.verify();
        this.report.verifications += 1;
        this.report.verifyMismatches += result.mismatches;
        if (!result.clean) throw new Error(`verify found ${result.mismatches} mismatches`);
        return;
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('verify found')) throw error;
        this.retry('verify', attempt, error);
        await sleep(200);
      }
    }
  }
}

/**
 * The faults the soak injects, and their counts. The background schedule (drawn from the
 * round's seed) terminates backends serving writes, backfill batches and phase listeners,
 * kills and freezes writer processes, kills the backfill process and restarts the server; the
 * lifecycle arms two more around its phase changes (the phase change's own backend
 * terminated, a writer frozen across the change).
 */
import pg from 'pg';
import type { ThrowawayServer } from '../test/support/throwaway-server.js';
import type { SoakChild } from './child.js';
import type { WriterFleet } from './fleet.js';

export const faultKinds = [
  'terminate-write',
  'terminate-backfill',
  'terminate-listener',
  'terminate-phase-change',
  'kill-writer',
  'kill-backfill',
  'freeze-writer',
  'freeze-across-phase-change',
  'restart-server',
] as const;
export type FaultKind = (typeof faultKinds)[number];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Which backends a termination aims at. */
const targets = {
  'terminate-write': `application_name LIKE 'soak-w%' AND state IN ('active', 'idle in transaction')
    AND query NOT ILIKE 'LISTEN%'`,
  'terminate-backfill': `application_name = 'soak-backfill'
    AND state IN ('active', 'idle in transaction') AND query NOT ILIKE 'LISTEN%'`,
  'terminate-listener': `application_name LIKE 'soak-%' AND query ILIKE 'LISTEN%'`,
  'terminate-phase-change': `application_name = 'soak-lifecycle'
    AND state IN ('active', 'idle in transaction') AND query NOT ILIKE 'LISTEN%'`,
} as const;

export class FaultInjector {
  readonly counts: Record<FaultKind, number> = Object.fromEntries(
    faultKinds.map((k) => [k, 0]),
  ) as Record<FaultKind, number>;
  private readonly admin: pg.Pool;
  private lastRestart = Date.now();
  private restarting = false;
  private stopped = false;
  /** The backfill process while one runs (set by the lifecycle). */
  backfill: SoakChild | undefined;

  constructor(
    url: string,
    private readonly server: ThrowawayServer,
    private readonly fleet: WriterFleet,
    private readonly random: () => number,
    private readonly settings: { meanGapMs: number; restartGapMs: number },
  ) {
    this.admin = new pg.Pool({ connectionString: url, application_name: 'soak-admin', max: 2 });
    this.admin.on('error', () => {});
  }

  /**
   * Terminates one backend matching `kind`'s target, the first seen within `windowMs` (polled
   * every few ms); counts it when there was one.
   */
  async terminate(kind: keyof typeof targets, windowMs = 0): Promise<boolean> {
    const until = Date.now() + windowMs;
    for (;;) {
      if (await this.terminateNow(kind)) return true;
      if (Date.now() >= until) return false;
      await sleep(3);
    }
  }

  private async terminateNow(kind: keyof typeof targets): Promise<boolean> {
    try {
      const { rows } = await this.admin.query<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND ${targets[kind]} ORDER BY random() LIMIT 1`,
      );
      if (rows[0]?.ok) this.counts[kind] += 1;
      return rows[0]?.ok === true;
    } catch {
      return false; // the server is restarting: no fault this time
    }
  }

  /** A running writer chosen by the seed, if any. */
  private pickWriter(): SoakChild | undefined {
    const running = this.fleet.running.filter((w) => !w.isFrozen);
    return running[Math.floor(this.random() * running.length)];
  }

  /** Freezes a writer (SIGSTOP) until `thaw` is called; undefined when none runs. */
  freeze(kind: 'freeze-writer' | 'freeze-across-phase-change'): (() => void) | undefined {
    const writer = this.pickWriter();
    if (!writer) return undefined;
    writer.signal('SIGSTOP');
    this.counts[kind] += 1;
    return () => writer.signal('SIGCONT');
  }

  /**
   * Injects faults until `stop()`, one every `meanGapMs` on average; what a fault leaves to do
   * (a replacement writer to start, a frozen one to thaw) goes on in the background.
   */
  async run(): Promise<void> {
    const pending = new Set<Promise<void>>();
    while (!this.stopped) {
      await sleep(this.settings.meanGapMs * (0.5 + this.random()));
      if (this.stopped) break;
      const work = this.injectOne().catch(() => {});
      pending.add(work);
      void work.finally(() => pending.delete(work));
      // One restart at a time; the others may overlap.
      if (this.restarting) await work;
    }
    await Promise.all(pending);
  }

  stop(): void {
    this.stopped = true;
  }

  async close(): Promise<void> {
    await this.admin.end().catch(() => {});
  }

  private async injectOne(): Promise<void> {
    const r = this.random();
    if (this.backfill?.running && r < 0.3) {
      if (r < 0.1) {
        this.backfill.signal('SIGKILL');
        this.counts['kill-backfill'] += 1;
      } else await this.terminate('terminate-backfill', 300);
    } else if (r < 0.55) {
      await this.terminate('terminate-write');
    } else if (r < 0.68) {
      await this.terminate('terminate-listener');
    } else if (r < 0.8) {
      const writer = this.pickWriter();
      if (!writer) return;
      writer.signal('SIGKILL');
      this.counts['kill-writer'] += 1;
      await this.fleet.startWithRetry();
    } else if (r < 0.93) {
      const thaw = this.freeze('freeze-writer');
      await sleep(300 + this.random() * 2_000);
      thaw?.();
    } else if (Date.now() - this.lastRestart >= this.settings.restartGapMs && !this.restarting) {
      this.restarting = true;
      try {
        await this.server.restart(this.random() < 0.5 ? 'immediate' : 'fast');
        this.counts['restart-server'] += 1;
      } finally {
        this.lastRestart = Date.now();
        this.restarting = false;
      }
      await this.fleet.replaceDead();
    }
  }
}

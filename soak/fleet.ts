/**
 * The soak's writer processes: started with their share of the seeded persons, killed and
 * replaced (a replacement is a new writer with a new history and fresh persons, as a restarted
 * service instance would be), frozen and thawed.
 */
import { SoakChild } from './child.js';
import type { PersonRef } from './history.js';
import type { OwnedSeed } from './persons-writer.js';
import type { WriterConfig } from './writer.js';

/** What every writer of a round shares. */
export interface FleetSettings {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  readonly historyDir: string;
  readonly ratePerS: number;
  readonly teams: number;
  readonly seed: number;
  readonly hot: readonly PersonRef[];
  /** Forced session timeouts, by writer number (the first writers get them). */
  readonly timeouts: readonly { statementTimeoutMs?: number; lockTimeoutMs?: number }[];
}

export class WriterFleet {
  private readonly writers: SoakChild[] = [];
  /** Writers replaced after they died on their own, kept for `crashes()`. */
  private readonly dead: SoakChild[] = [];
  private next = 0;

  constructor(
    private readonly settings: FleetSettings,
    /** Shares of seeded persons; each new writer takes the next (an empty one when used up). */
    private readonly shares: OwnedSeed[][],
  ) {}

  /** Starts a new writer and waits until it is connected. */
  async start(): Promise<SoakChild> {
    const writer = this.next++;
    const s = this.settings;
    const config: WriterConfig = {
      url: s.url,
      schema: s.schema,
      controlSchema: s.controlSchema,
      writer,
      ratePerS: s.ratePerS,
      maxInFlight: 8,
      poolSize: 4,
      teams: s.teams,
      seed: s.seed * 1_000 + writer + 1,
      historyDir: s.historyDir,
      owned: this.shares.shift() ?? [],
      hot: s.hot,
      ...(s.timeouts[writer] ?? {}),
    };
    const child = SoakChild.start(`writer ${writer}`, 'soak/writer.ts', config);
    this.writers.push(child);
    await child.ready;
    return child;
  }

  /** Writers that crashed (see `SoakChild.crashed`), with the end of their stderr. */
  crashes(): string[] {
    return [...this.dead, ...this.writers]
      .filter((w) => w.crashed)
      .map((w) => `${w.label}: ${w.stderrTail.trim().split('\n').slice(0, 3).join(' | ')}`);
  }

  /** The writers still running. */
  get running(): SoakChild[] {
    return this.writers.filter((w) => w.running);
  }

  /** Replaces writers that died on their own (startup refused during a server restart...). */
  async replaceDead(): Promise<number> {
    const dead = this.writers.filter((w) => !w.running && !w.isFrozen);
    let replaced = 0;
    for (const w of dead) {
      this.writers.splice(this.writers.indexOf(w), 1);
      this.dead.push(w);
      await this.startWithRetry();
      replaced += 1;
    }
    return replaced;
  }

  /** Starts a writer, retrying while the server does not take connections. */
  async startWithRetry(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.start();
        return;
      } catch (error) {
        if (attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  /** Stops every writer (SIGTERM, SIGKILL after `graceMs`); returns how many exited cleanly. */
  async stopAll(graceMs: number): Promise<number> {
    const codes = await Promise.all(this.writers.map((w) => w.stop(graceMs)));
    return codes.filter((c) => c === 0).length;
  }
}

/**
 * A child process of the soak (a writer or the backfill): started with tsx, watched until it
 * exits, stopped politely (SIGTERM) or as a fault (SIGKILL, SIGSTOP and SIGCONT).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/** The exit code of a child whose main call rejected with an error it caught and printed. */
export const refusedExitCode = 3;

/**
 * Called by a child at start: it exits once its harness is gone (killed, or interrupted
 * before it could stop its children), so no writer keeps writing into a dead run.
 */
export function exitWithParent(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(0);
  }, 500).unref();
}

/** Every child still running, for {@link killAllChildren}. */
const live = new Set<SoakChild>();

/** SIGKILL for every child still running (frozen ones included): an interrupted soak. */
export function killAllChildren(): void {
  for (const child of live) child.signal('SIGKILL');
}

export class SoakChild {
  /** Resolves with the exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  /** Resolves once the child printed `ready` (writers do, once connected). */
  readonly ready: Promise<void>;
  private stderr = '';
  private frozen = false;
  private signalled = false;

  private constructor(
    readonly label: string,
    private readonly child: ChildProcess,
  ) {
    live.add(this);
    this.exited = new Promise((resolve) => child.once('close', (code) => resolve(code)));
    void this.exited.then(() => live.delete(this));
    this.ready = new Promise((resolve, reject) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
      void this.exited.then((code) =>
        reject(new Error(`${label} exited (${code}): ${this.stderr}`)),
      );
    });
    // Not awaited by everyone: a child killed before it was ready is not an error here.
    this.ready.catch(() => {});
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-2_000);
    });
  }

  /** Starts `script` (relative to the repository) with `config` as its one argument. */
  static start(label: string, script: string, config: unknown): SoakChild {
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], {
      cwd: repoRoot,
      env: { ...process.env, DEBUG: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new SoakChild(label, child);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get stderrTail(): string {
    return this.stderr;
  }

  signal(signal: 'SIGTERM' | 'SIGKILL' | 'SIGSTOP' | 'SIGCONT'): void {
    if (!this.running) return;
    if (signal === 'SIGKILL' || signal === 'SIGTERM') this.signalled = true;
    if (signal === 'SIGSTOP') this.frozen = true;
    if (signal === 'SIGCONT') this.frozen = false;
    this.child.kill(signal);
  }

  /**
   * Whether it ended in a way nobody asked for: not stopped or killed by the harness, and not
   * with 0 or {@link refusedExitCode} (a call that rejected with the library's error). An
   * uncaught exception or an unhandled 'error' event exits with 1.
   */
  get crashed(): boolean {
    if (this.running || this.signalled) return false;
    const code = this.child.exitCode;
    return code !== 0 && code !== refusedExitCode;
  }

  get isFrozen(): boolean {
    return this.frozen;
  }

  /** SIGTERM (after SIGCONT if frozen), then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs: number): Promise<number | null> {
    if (this.frozen) this.signal('SIGCONT');
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

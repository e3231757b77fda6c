/**
 * A backfill run in a child process, for the kill and multi-process suites (test/backfill).
 * Start it as ONE process, so that a SIGKILL really kills the backfill:
 *
 *   node --import tsx test/support/backfill-child.ts '<json options>'
 *
 * (`npx tsx` runs the script in a grandchild process, which a SIGKILL of the child would
 * leave running.) Options come from argv[2] or the env var BACKFILL_CHILD_OPTIONS, as JSON:
 * `url`, `schema`, `controlSchema`, optional `name`, `poolSize`, `printBatches`,
 * `waitForGo` (wait for a line on stdin before starting, so several children start together)
 * and `backfill` (options of `migration.backfill()`: workers, batchSize, targetBatchMs,
 * leaseMs, ranges, maxRowsPerSecond, workerId...).
 *
 * It creates no table: the test prepares the schema and the migration. Prints one JSON line
 * per event on stdout: `ready`, then (when `printBatches`) `batch` lines and always `split`,
 * `range-done`, `lease-lost`, `retry` lines, then a final `summary` (exit 0) or `error`
 * (exit 1) line.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { openDatabase } from '../../src/db/open-database.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';
import type { BackfillOptions } from '../../src/options/backfill-options.js';

/** The JSON a test passes to the child. */
export interface BackfillChildOptions {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  readonly name?: string;
  readonly poolSize?: number;
  readonly printBatches?: boolean;
  readonly waitForGo?: boolean;
  readonly backfill?: Omit<BackfillOptions, 'signal'>;
}

/** One line the child prints. */
export type BackfillChildLine =
  | { event: 'ready'; pid: number; t: number }
  | {
      event: 'batch';
      rangeId: number;
      workerId: string;
      scanned: number;
      copied: number;
      /** How long the batch statement took. */
      ms: number;
      t: number;
    }
  | { event: 'split'; rangeId: number; workerId: string; t: number }
  | { event: 'range-done'; rangeId: number; workerId: string; t: number }
  | { event: 'lease-lost'; rangeId: number; workerId: string; t: number }
  | { event: 'retry'; workerId: string; attempt: number; t: number }
  | {
      event: 'summary';
      finished: boolean;
      aborted: boolean;
      planned: boolean;
      rowsScanned: number;
      rowsCopied: number;
      batches: number;
      rangesDone: number;
      ms: number;
    }
  | {
      event: 'error';
      name: string;
      code: string | undefined;
      sqlState: string | undefined;
      message: string;
    };

function print(line: BackfillChildLine): void {
  // Writes to a pipe are synchronous on Linux: a line printed is seen even after a SIGKILL.
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function readOptions(): BackfillChildOptions {
  const text = process.argv[2] ?? process.env.BACKFILL_CHILD_OPTIONS;
  if (!text)
    throw new Error(
      'backfill-child: pass the options as JSON in argv[2] or BACKFILL_CHILD_OPTIONS',
    );
  return JSON.parse(text) as BackfillChildOptions;
}

async function waitForGo(): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => {
    lines.once('line', () => resolve());
    lines.once('close', () => resolve());
  });
  lines.close();
}

async function main(): Promise<number> {
  const options = readOptions();
  const handle = await openDatabase(options.url, { maxConnections: options.poolSize ?? 4 });
  const migration = createPersonsMigration({
    db: handle,
    schema: options.schema,
    controlSchema: options.controlSchema,
    ...(options.name === undefined ? {} : { name: options.name }),
  });
  const now = () => Date.now();
  if (options.printBatches) {
    migration.events.on('backfill:batch', ({ rangeId, workerId, scanned, copied, ms }) =>
      print({ event: 'batch', rangeId, workerId, scanned, copied, ms: Math.round(ms), t: now() }),
    );
  }
  migration.events.on('backfill:range-split', ({ rangeId, workerId }) =>
    print({ event: 'split', rangeId, workerId, t: now() }),
  );
  migration.events.on('backfill:range-done', ({ rangeId, workerId }) =>
    print({ event: 'range-done', rangeId, workerId, t: now() }),
  );
  migration.events.on('backfill:lease-lost', ({ rangeId, workerId }) =>
    print({ event: 'lease-lost', rangeId, workerId, t: now() }),
  );
  migration.events.on('backfill:retry', ({ workerId, attempt }) =>
    print({ event: 'retry', workerId, attempt, t: now() }),
  );
  try {
    print({ event: 'ready', pid: process.pid, t: now() });
    if (options.waitForGo) await waitForGo();
    const result = await migration.backfill(options.backfill ?? {});
    print({ event: 'summary', ...result });
    return 0;
  } catch (error) {
    const e = error as { name?: string; code?: string; sqlState?: string; message?: string };
    print({
      event: 'error',
      name: e.name ?? 'Error',
      code: e.code,
      sqlState: e.sqlState,
      message: e.message ?? String(error),
    });
    return 1;
  } finally {
    await migration.close().catch(() => undefined);
    await handle.close().catch(() => undefined);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      print({
        event: 'error',
        name: 'Error',
        code: undefined,
        sqlState: undefined,
        message: error instanceof Error ? error.message : String(error),
      });
      process.exit(1);
    },
  );
}

/** How a child ended. */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * The test side: starts this script as one node process (`node --import tsx`), collects its
 * JSON lines and its stderr, and kills it.
 */
export class BackfillChild {
  readonly lines: BackfillChildLine[] = [];
  readonly exited: Promise<ChildExit>;
  private stderrText = '';
  private readonly listeners = new Set<() => void>();
  private exit: ChildExit | undefined;

  private constructor(
    readonly label: string,
    private readonly child: ChildProcess,
  ) {
    const out = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    out.on('line', (text) => {
      try {
        this.lines.push(JSON.parse(text) as BackfillChildLine);
      } catch {
        this.stderrText += `[stdout] ${text}\n`;
      }
      this.notify();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderrText += chunk.toString();
    });
    this.exited = new Promise<ChildExit>((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        // Lines still in the pipe arrive before 'close'.
        child.once('close', () => {
          this.notify();
          resolve({ code, signal });
        });
      });
    });
  }

  /** Starts a child backfill; `label` names it in failure messages. */
  static start(label: string, options: BackfillChildOptions): BackfillChild {
    const script = fileURLToPath(import.meta.url);
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(options)], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      env: { ...process.env, DEBUG: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return new BackfillChild(label, child);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** True once the process has exited. */
  get done(): boolean {
    return this.exit !== undefined;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /** Lines of one kind. */
  events<E extends BackfillChildLine['event']>(
    event: E,
  ): Extract<BackfillChildLine, { event: E }>[] {
    return this.lines.filter(
      (l): l is Extract<BackfillChildLine, { event: E }> => l.event === event,
    );
  }

  /** Resolves with the first line (already seen or to come) matching `predicate`. */
  waitFor(
    predicate: (line: BackfillChildLine) => boolean,
    what: string,
    timeoutMs = 20_000,
  ): Promise<BackfillChildLine> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.find(predicate);
        if (found) {
          finish();
          resolve(found);
        } else if (this.exit) {
          finish();
          reject(
            new Error(
              `${this.label} exited (${JSON.stringify(this.exit)}) before ${what}; stderr: ${this.stderrText.slice(-2_000)}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Lets a child started with `waitForGo` begin. */
  go(): void {
    this.child.stdin?.write('go\n');
  }

  /** SIGKILL, then waits until the process is gone. */
  async kill(): Promise<ChildExit> {
    if (!this.exit) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** Waits for a normal end and returns the summary line (throws with the error line or stderr). */
  async finished(timeoutMs = 60_000): Promise<Extract<BackfillChildLine, { event: 'summary' }>> {
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      this.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${this.label} did not finish in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    const summary = this.events('summary')[0];
    if (exit.code !== 0 || !summary) {
      throw new Error(
        `${this.label} ended with ${JSON.stringify(exit)}: ${JSON.stringify(this.events('error'))} ${this.stderrText.slice(-2_000)}`,
      );
    }
    return summary;
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

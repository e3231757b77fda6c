/**
 * One writer process of the soak: a service instance writing persons through its own pool and
 * its own `createPersonsMigration`, logging every operation to its history file (see
 * `history.ts`). Started by the harness (not meant to be run by hand):
 *
 *   node --import tsx soak/writer.ts '<json WriterConfig>'
 *
 * It prints `ready` on stdout once connected, then writes on a fixed schedule until SIGTERM
 * (stop starting writes, wait for those in flight, exit 0). SIGKILL and SIGSTOP are the
 * harness's faults; whatever they interrupt stays in the history without an outcome.
 *
 * Each writer owns some persons (seeded ones the harness dealt it and those it creates) and
 * never has two operations of one person in flight, so the checker can replay its history in
 * order; it also writes the hot persons, which every writer writes at once (updates, with and
 * without a version assert, and distinct ids added: each writer under a property key of its
 * own, `s<writer>`). After an operation of unknown outcome the writer leaves its persons alone:
 * the checker then accepts either state for them, but not half of one.
 */
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { isSqlState } from '../src/db/query-failed.js';
import { createPersonsMigration, openDatabase } from '../src/index.js';
import { exitWithParent, refusedExitCode } from './child.js';
import { HistoryFile, historyPath } from './history.js';
import { PersonsWriter, type WriterSettings } from './persons-writer.js';

/** What the harness passes as the first argument. */
export interface WriterConfig extends WriterSettings {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  readonly ratePerS: number;
  readonly poolSize: number;
  readonly historyDir: string;
  /** Forced on every session of this writer (a fault: some statements time out). */
  readonly statementTimeoutMs?: number;
  readonly lockTimeoutMs?: number;
}

function poolFor(config: WriterConfig): pg.Pool {
  const pool = new pg.Pool({
    connectionString: config.url,
    application_name: `soak-w${config.writer}`,
    max: config.poolSize,
    ...(config.statementTimeoutMs ? { statement_timeout: config.statementTimeoutMs } : {}),
    ...(config.lockTimeoutMs ? { lock_timeout: config.lockTimeoutMs } : {}),
  });
  // Idle connections killed by the faults: the pool replaces them.
  pool.on('error', () => {});
  return pool;
}

/** SQLSTATEs of this writer's own faults: a statement or lock timeout forced on its sessions. */
const injectedTimeouts = ['57014', '55P03'];

/**
 * The startup read, tried again while it hits this writer's own injected timeouts (an 8 ms
 * statement timeout is the fault under test for its writes, not a reason not to start: on a
 * busy host the first read can take longer). Anything else, or 5 s of timeouts, still fails.
 */
async function startupRead<T>(read: () => Promise<T>): Promise<T> {
  const deadline = performance.now() + 5_000;
  for (;;) {
    try {
      return await read();
    } catch (error) {
      const timedOut = injectedTimeouts.some((code) => isSqlState(error, code));
      if (!timedOut || performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

async function main(config: WriterConfig): Promise<void> {
  const pool = poolFor(config);
  const handle = await openDatabase(pool);
  const migration = createPersonsMigration({
    db: handle,
    schema: config.schema,
    controlSchema: config.controlSchema,
    serviceName: `soak-writer-${config.writer}`,
  });
  const repo = migration.repository();
  await startupRead(() => migration.currentPhase());
  const history = new HistoryFile(historyPath(config.historyDir, config.writer));
  const writer = new PersonsWriter(config, repo, history);
  let stopping = false;
  process.once('SIGTERM', () => {
    stopping = true;
  });
  process.stdout.write('ready\n');
  let last = performance.now();
  let due = 0;
  while (!stopping) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    const t = performance.now();
    due += (config.ratePerS * (t - last)) / 1000;
    last = t;
    for (; due >= 1; due -= 1) writer.tick();
  }
  await writer.drained();
  history.close();
  await migration.close().catch(() => {});
  await pool.end().catch(() => {});
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  exitWithParent();
  main(JSON.parse(process.argv[2] ?? '{}') as WriterConfig).then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(
        `soak writer: ${error instanceof Error ? error.stack : String(error)}\n`,
      );
      process.exit(refusedExitCode);
    },
  );
}

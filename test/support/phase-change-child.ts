/**
 * A phase change run in a child process, so a suite can freeze its client (SIGSTOP) in the
 * middle of the transaction, as a hung operator would:
 *
 *   node --import tsx test/support/phase-change-child.ts '<json options>'
 *
 * Options (JSON in argv[2]): `url`, `schema`, `controlSchema`. Prints `{"event":"ready"}`, then
 * runs `startDualRead()` and prints `{"event":"done"}` or `{"event":"error","code":...}`.
 */
import { openDatabase } from '../../src/db/open-database.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';

interface PhaseChangeChildOptions {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
}

function print(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main(): Promise<number> {
  const options = JSON.parse(process.argv[2] ?? '{}') as PhaseChangeChildOptions;
  const handle = await openDatabase(options.url, { maxConnections: 1 });
  const migration = createPersonsMigration({
    db: handle,
    schema: options.schema,
    controlSchema: options.controlSchema,
    phaseChangeLockTimeoutMs: 60_000,
  });
  try {
    print({ event: 'ready', pid: process.pid });
    await migration.startDualRead();
    print({ event: 'done' });
    return 0;
  } catch (error) {
    print({ event: 'error', code: (error as { code?: string }).code });
    return 1;
  } finally {
    await migration.close().catch(() => undefined);
    await handle.close().catch(() => undefined);
  }
}

process.exitCode = await main();

/**
 * The soak's backfill, in a process of its own so the harness can SIGKILL it mid-batch and
 * start it again (the backfill resumes from its checkpoints). Started by the harness:
 *
 *   node --import tsx soak/backfill-process.ts '<json BackfillProcessConfig>'
 *
 * Exits 0 when the whole plan is copied, 1 with the error's code on stderr otherwise.
 */
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { createPersonsMigration, openDatabase } from '../src/index.js';
import { exitWithParent, refusedExitCode } from './child.js';

export interface BackfillProcessConfig {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  readonly maxRowsPerSecond: number;
  /** Short, so that ranges a killed process leased are taken over soon. */
  readonly leaseMs: number;
}

async function main(config: BackfillProcessConfig): Promise<void> {
  const pool = new pg.Pool({
    connectionString: config.url,
    application_name: 'soak-backfill',
    max: 4,
  });
  pool.on('error', () => {});
  const handle = await openDatabase(pool);
  const migration = createPersonsMigration({
    db: handle,
    schema: config.schema,
    controlSchema: config.controlSchema,
  });
  try {
    await migration.backfill({
      workers: 2,
      batchSize: 200,
      maxBatchSize: 1_000,
      maxRowsPerSecond: config.maxRowsPerSecond,
      leaseMs: config.leaseMs,
      maxRetries: 20,
      retryBaseMs: 50,
    });
  } finally {
    await migration.close().catch(() => {});
    await pool.end().catch(() => {});
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  exitWithParent();
  main(JSON.parse(process.argv[2] ?? '{}') as BackfillProcessConfig).then(
    () => process.exit(0),
    (error: unknown) => {
      const code = (error as { code?: unknown }).code;
      process.stderr.write(
        `soak backfill: ${typeof code === 'string' ? code : (error as Error).name}\n`,
      );
      process.exit(refusedExitCode);
    },
  );
}

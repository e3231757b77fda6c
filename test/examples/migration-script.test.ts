import { spawn } from 'node:child_process';
import { sql } from 'kysely';
import { afterEach, expect, it } from 'vitest';
import { createPersonsMigration } from '../../src/index.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import {
  describeOnRealServer,
  dropSchemas,
  openDatabaseForTest,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

const script = 'examples/migration-script/main.ts';

/** One JSON log line of the script. */
type LogLine = { step: string; event: string; [field: string]: unknown };

interface Run {
  readonly code: number | null;
  readonly lines: LogLine[];
  readonly stdout: string;
}

/**
 * Runs the script as its own process (`node --import tsx`, so a signal reaches the script and
 * not a wrapper) and parses its stdout line by line; `onLine` may signal it.
 */
function runScript(
  env: Record<string, string>,
  onLine: (line: LogLine, kill: (signal: NodeJS.Signals) => void) => void = () => {},
): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: LogLine[] = [];
  let stdout = '';
  let pending = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk;
    pending += chunk;
    for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
      // Every line must be one JSON object: JSON.parse throws (and the test fails) otherwise.
      const line = JSON.parse(pending.slice(0, end)) as LogLine;
      pending = pending.slice(end + 1);
      lines.push(line);
      onLine(line, (signal) => child.kill(signal));
    }
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, lines, stdout }));
  });
}

function find(run: Run, step: string, event: string): LogLine | undefined {
  return run.lines.find((l) => l.step === step && l.event === event);
}

function expectNoRowValues(run: Run): void {
  // The seeded persons have e-mail addresses and `seed-<n>` distinct ids: neither is printed.
  expect(run.stdout).not.toContain('@example.com');
  expect(run.stdout).not.toMatch(/seed-\d/);
}

describeOnRealServer('the migration-script example on postgres', () => {
  const url = realServerUrl() ?? '';
  let schemas: string[] = [];

  function schemaEnv(persons?: number): Record<string, string> {
    const schema = uniqueSchemaName('script');
    schemas = [schema, `${schema}_control`];
    return {
      DATABASE_URL: url,
      PERSONS_SCHEMA: schema,
      CONTROL_SCHEMA: `${schema}_control`,
      ...(persons === undefined ? {} : { SEED_PERSONS: String(persons) }),
    };
  }

  async function count(table: string): Promise<number> {
    const db = await openDatabaseForTest(1);
    try {
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM ${sql.id(schemas[0] ?? '', table)}`.execute(db.db);
      return rows[0]?.n ?? -1;
    } finally {
      await db.close();
    }
  }

  afterEach(async () => {
    const db = await openDatabaseForTest(1);
    await dropSchemas(db, ...schemas);
    await db.close();
  });

  it('runs every step to the end, finalize included, logging one JSON object per line', async () => {
    const env = { ...schemaEnv(3_000), FINALIZE: '1', PROGRESS_INTERVAL_MS: '100' };
    const run = await runScript(env);
    expect(run.code).toBe(0);
    const steps = run.lines
      .filter((l) => l.event === 'done' || l.event === 'clean')
      .map((l) => l.step)
      .filter((step, i, all) => all.indexOf(step) === i);
    expect(steps).toEqual([
      'seed',
      'install',
      'prepare',
      'start-dual-read',
      'backfill',
      'verify',
      'cutover',
      'finalize',
      'done',
    ]);
    expect(find(run, 'backfill', 'done')).toMatchObject({ finished: true, rowsCopied: 3_000 });
    expect(find(run, 'verify', 'clean')).toMatchObject({ oldRows: 3_000, newRows: 3_000 });
    expect(find(run, 'done', 'done')).toMatchObject({ phase: 'finalized' });
    expect(run.lines.every((l) => typeof l.time === 'string' && typeof l.level === 'string')).toBe(
      true,
    );
    expectNoRowValues(run);
    // After finalize the consolidated table has the old table's name.
    expect(await count('posthog_person')).toBe(3_000);
  }, 120_000);

  it('stops on SIGTERM during the backfill with exit 143 and a resume hint; run again, it resumes and ends verified clean', async () => {
    const env = { ...schemaEnv(20_000), PROGRESS_INTERVAL_MS: '100' };
    // A ceiling keeps the backfill going for seconds: the signal lands while it copies. One
    // signal only: a second one would end the process at once, by design.
    let signalled = false;
    const first = await runScript({ ...env, MAX_ROWS_PER_SECOND: '2000' }, (line, kill) => {
      if (!signalled && line.event === 'progress' && Number(line.rowsScanned) > 0) {
        signalled = true;
        kill('SIGTERM');
      }
    });
    expect(first.code).toBe(143);
    const stopped = find(first, 'backfill', 'stopped');
    expect(stopped).toMatchObject({ aborted: true, finished: false });
    expect(find(first, 'shutdown', 'stopped')).toMatchObject({
      signal: 'SIGTERM',
      resume: expect.stringMatching(/run the same command again/),
    });
    expect(find(first, 'shutdown', 'closed')).toBeDefined();
    expect(find(first, 'verify', 'clean')).toBeUndefined();
    const copiedFirst = Number(stopped?.rowsCopied);
    expect(copiedFirst).toBeLessThan(20_000);
    expect(await count('posthog_person_new')).toBe(copiedFirst);

    // The resume also lifts the ceiling the plan was made with.
    const second = await runScript({ ...env, MAX_ROWS_PER_SECOND: 'none' });
    expect(second.code).toBe(0);
    expect(find(second, 'seed', 'skipped')).toBeDefined();
    expect(find(second, 'prepare', 'skipped')).toMatchObject({ phase: 'dual_read' });
    expect(find(second, 'start-dual-read', 'skipped')).toBeDefined();
    expect(find(second, 'backfill', 'rate-changed')).toMatchObject({ maxRowsPerSecond: null });
    expect(find(second, 'backfill', 'resuming')).toBeDefined();
    // Every old row copied once: what the first run copied is not copied again.
    expect(find(second, 'backfill', 'done')).toMatchObject({
      finished: true,
      rowsCopied: 20_000 - copiedFirst,
    });
    expect(find(second, 'verify', 'clean')).toMatchObject({ oldRows: 20_000, newRows: 20_000 });
    expect(find(second, 'finalize', 'skipped')).toBeDefined();
    expect(find(second, 'done', 'done')).toMatchObject({ phase: 'new' });
    expect(await count('posthog_person')).toBe(20_000);
    expect(await count('posthog_person_new')).toBe(20_000);
    expectNoRowValues(first);
    expectNoRowValues(second);
  }, 120_000);

  it('stops with exit 1 and the mismatched classes when verification is not clean, before any cutover', async () => {
    const env = schemaEnv();
    const schema = env.PERSONS_SCHEMA ?? '';
    const controlSchema = env.CONTROL_SCHEMA ?? '';
    const db = await openDatabaseForTest(4);
    const migration = createPersonsMigration({ db, schema, controlSchema });
    try {
      await createPostHogPersonsSchema(db, { schema });
      await seedPersons(db, { schema, teamId: 1, count: 500 });
      await migration.install();
      await migration.prepare();
      await migration.startDualRead();
      await migration.backfill();
      // A write behind the library's back, after the copy: the new row is now older.
      await sql`UPDATE ${sql.id(schema, 'posthog_person')} SET version = version + 1
        WHERE id = (SELECT min(id) FROM ${sql.id(schema, 'posthog_person')})`.execute(db.db);

      const run = await runScript(env);
      expect(run.code).toBe(1);
      expect(find(run, 'backfill', 'skipped')).toMatchObject({ reason: 'done' });
      expect(find(run, 'verify', 'mismatched')).toMatchObject({
        level: 'error',
        mismatches: 1,
        byClass: { older_in_new: 1 },
      });
      expect(find(run, 'cutover', 'done')).toBeUndefined();
      expect((await migration.status()).phase).toBe('dual_read');
      expectNoRowValues(run);
    } finally {
      await migration.close();
      await db.close();
    }
  }, 120_000);
});

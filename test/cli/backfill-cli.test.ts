import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import type { StopSignal } from '../../src/cli/stop-signal.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import {
  describeOnRealServer,
  dropSchemas,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Called with each stdout line and a function that sends a stop signal to the backfill. */
  onLine?: (line: string, stop: (signal: StopSignal) => void) => void;
}

/** Runs the CLI in-process, with a fake stop signal instead of the process's. */
async function cli(argv: string[], { env = {}, onLine }: CliOptions = {}) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  let handler: ((signal: StopSignal) => void) | undefined;
  const stop = (signal: StopSignal) => handler?.(signal);
  const code = await runCli(argv, {
    stdout: (line) => {
      stdout.push(line);
      onLine?.(line, stop);
    },
    stderr: (line) => stderr.push(line),
    env,
    onStop: (h) => {
      handler = h;
      return () => {
        handler = undefined;
      };
    },
  });
  return { code, stdout: stdout.join('\n'), stderr: stderr.join('\n') };
}

describe('the backfill command line', () => {
  const env = { DATABASE_URL: 'pglite://memory' };

  it('lists the backfill commands in the usage', async () => {
    const help = await cli(['help']);
    for (const text of [
      'backfill-pause',
      'backfill-resume',
      'backfill-rate N|none',
      '--workers N',
    ]) {
      expect(help.stdout).toContain(text);
    }
    expect(help.stdout).toContain('130 / 143');
  });

  it('refuses backfill flags on other commands, a non-numeric value and a missing or bad rate', async () => {
    const onStatus = await cli(['status', '--workers', '2'], { env });
    expect(onStatus.code).toBe(2);
    expect(onStatus.stderr).toContain('--workers only applies to the backfill command');

    const words = await cli(['backfill', '--batch-size', 'many'], { env });
    expect(words.code).toBe(2);
    expect(words.stderr).toContain('--batch-size must be a number');

    const noRate = await cli(['backfill-rate'], { env });
    expect(noRate.code).toBe(2);
    expect(noRate.stderr).toContain('backfill-rate takes one argument');

    const badRate = await cli(['backfill-rate', 'fast'], { env });
    expect(badRate.code).toBe(2);
    expect(badRate.stderr).toContain('or none to remove the ceiling');

    const extra = await cli(['backfill-pause', 'now'], { env });
    expect(extra.code).toBe(2);
    expect(extra.stderr).toContain('takes no positional arguments');
  });
});

describeOnRealServer('backfill from the command line on a PostgreSQL server', () => {
  let db: DatabaseHandle;
  let env: Record<string, string>;
  const schemas: string[] = [];

  /** A seeded schema with its own control schema, installed and prepared. */
  async function preparedMigration(rows: number) {
    const schema = uniqueSchemaName('cli_bf');
    const controlSchema = uniqueSchemaName('cli_bf_control');
    schemas.push(schema, controlSchema);
    await createPostHogPersonsSchema(db, { schema });
    await seedPersons(db, { schema, teamId: 1, count: Math.ceil(rows / 2) });
    await seedPersons(db, { schema, teamId: 2, count: Math.floor(rows / 2), prefix: 'two' });
    const options = ['--schema', schema, '--control-schema', controlSchema];
    expect(await cli(['install', ...options], { env })).toMatchObject({ code: 0, stderr: '' });
    expect(await cli(['prepare', ...options], { env })).toMatchObject({ code: 0, stderr: '' });
    return { schema, options };
  }

  async function rowsOf(schema: string, table: string): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.id(schema, table)}`.execute(db.db);
    return rows[0]?.n ?? -1;
  }

  async function statusJson(options: string[]) {
    const result = await cli(['status', '--json', ...options], { env });
    expect(result).toMatchObject({ code: 0, stderr: '' });
    return JSON.parse(result.stdout);
  }

  beforeAll(async () => {
    const url = realServerUrl();
    if (!url) throw new Error('no real server');
    env = { DATABASE_URL: url };
    db = await openDatabase(url);
  });

  afterAll(async () => {
    if (!db) return;
    await dropSchemas(db, ...schemas);
    await db.close();
  });

  it('is refused before dual_read and without a plan, refuses --batch-size 0 and --lock-mode table naming them, then copies every row', async () => {
    const { schema, options } = await preparedMigration(60);

    const early = await cli(['backfill', ...options], { env });
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/^error \[BACKFILL_REFUSED\]: .*phase dual_read only/);
    expect(early.stderr).toContain('startDualRead()');

    const pause = await cli(['backfill-pause', ...options], { env });
    expect(pause.code).toBe(1);
    expect(pause.stderr).toMatch(/^error \[BACKFILL_REFUSED\]: .*no backfill plan yet/);

    const rateBeforePlan = await cli(['backfill-rate', 'none', ...options], { env });
    expect(rateBeforePlan.code).toBe(1);
    expect(rateBeforePlan.stderr).toContain('error [BACKFILL_REFUSED]');

    const before = await cli(['status', ...options], { env });
    expect(before.stdout).toContain('  backfill      not started');
    expect(JSON.parse((await cli(['status', '--json', ...options], { env })).stdout)).toMatchObject(
      { backfill: null },
    );

    expect(await cli(['start-dual-read', ...options], { env })).toMatchObject({ code: 0 });

    const zero = await cli(['backfill', '--batch-size', '0', ...options], { env });
    expect(zero.code).toBe(2);
    expect(zero.stderr).toContain('error [INVALID_OPTIONS]');
    expect(zero.stderr).toContain('batchSize must be an integer from 1 to 100000');
    expect(zero.stderr).toContain('check --batch-size (pg-dual-read help)');
    expect(zero.stdout).toBe('');

    const badMode = await cli(['backfill', '--lock-mode', 'table', ...options], { env });
    expect(badMode.code).toBe(2);
    expect(badMode.stderr).toContain("lockMode must be 'ranges' or 'rows'");
    expect(badMode.stderr).toContain('check --lock-mode (pg-dual-read help)');

    const run = await cli(
      ['backfill', '--workers', '2', '--ranges', '3', '--lock-mode', 'ranges', ...options],
      { env },
    );
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toContain('backfill done: 60 rows scanned, 60 copied in total (100%)');
    expect(run.stdout).toMatch(/this run: 60 rows scanned, 60 copied, .* \(planned 3 ranges\)/);
    expect(await rowsOf(schema, 'posthog_person_new')).toBe(60);

    const done = await statusJson(options);
    expect(done).toMatchObject({
      phase: 'dual_read',
      backfill: {
        state: 'done',
        percent: 100,
        rowsScanned: 60,
        rowsCopied: 60,
        rowsToGo: 0,
        etaSeconds: 0,
        maxRowsPerSecond: null,
        activeWorkers: 0,
      },
    });
    expect(done.backfill.ranges).toHaveLength(3);
    expect(typeof done.backfill.finishedAt).toBe('string');

    const text = await cli(['status', ...options], { env });
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toContain('  backfill      done, 100%');
    expect(text.stdout).toContain('60 rows scanned, 60 copied, 0 to go (~60 planned)');
    expect(text.stdout).toContain('  ranges        3: 3 done, 0 running, 0 pending');
    expect(text.stdout).toMatch(/ {2}range 1 +done/);

    // A second run finds nothing to do.
    const again = await cli(['backfill', ...options], { env });
    expect(again).toMatchObject({ code: 0, stderr: '' });
    expect(again.stdout).toContain('this run: 0 rows scanned, 0 copied');

    // The rate of a plan, done or not, can be set and removed; 0 is the library's to refuse.
    expect(await cli(['backfill-rate', '500', ...options], { env })).toMatchObject({ code: 0 });
    expect((await statusJson(options)).backfill.maxRowsPerSecond).toBe(500);
    const none = await cli(['backfill-rate', 'none', ...options], { env });
    expect(none).toMatchObject({ code: 0, stderr: '' });
    expect(none.stdout).toContain('no rate ceiling');
    expect((await statusJson(options)).backfill.maxRowsPerSecond).toBeNull();
    const zeroRate = await cli(['backfill-rate', '0', ...options], { env });
    expect(zeroRate.code).toBe(2);
    expect(zeroRate.stderr).toContain('error [INVALID_OPTIONS]');
    expect(zeroRate.stderr).toContain('check the argument of backfill-rate');
  });

  it('prints progress, stops on SIGINT with exit 130 leaving a resumable state, pauses, resumes and finishes', {
    timeout: 60_000,
  }, async () => {
    const { schema, options } = await preparedMigration(80);
    expect(await cli(['start-dual-read', ...options], { env })).toMatchObject({ code: 0 });

    // 10 rows/s: the first progress line (after 2 s) comes long before the end.
    let progress: string | undefined;
    const stopped = await cli(
      [
        'backfill',
        '--workers',
        '2',
        '--batch-size',
        '5',
        '--max-rows-per-second',
        '10',
        ...options,
      ],
      {
        env,
        onLine: (line, stop) => {
          if (progress === undefined && /^backfill \d+\.\d%: /.test(line)) {
            progress = line;
            stop('SIGINT');
          }
        },
      },
    );
    expect(progress).toMatch(
      /^backfill \d+\.\d%: \d+ rows scanned, \d+ to go, [\d,]+ rows\/s, ETA .+, \d workers? active$/,
    );
    expect(stopped).toMatchObject({ code: 130, stderr: '' });
    expect(stopped.stdout).toContain('SIGINT: stopping after the current batch');
    expect(stopped.stdout).toMatch(/backfill stopped by SIGINT at \d+\.\d%, \d+ rows to go/);
    expect(stopped.stdout).toContain('the backfill is resumable: run backfill again');

    const halfway = await statusJson(options);
    expect(halfway.backfill).toMatchObject({ state: 'running', activeWorkers: 0 });
    expect(halfway.backfill.rowsToGo).toBeGreaterThan(0);
    expect(halfway.backfill.rowsScanned).toBeGreaterThan(0);
    const copiedSoFar = await rowsOf(schema, 'posthog_person_new');
    expect(copiedSoFar).toBe(halfway.backfill.rowsCopied);
    const text = await cli(['status', ...options], { env });
    expect(text.stdout).toContain('no worker active (run backfill to continue)');
    expect(text.stdout).toContain('(ceiling 10 rows/s)');

    expect(await cli(['backfill-pause', ...options], { env })).toMatchObject({ code: 0 });
    expect((await statusJson(options)).backfill.state).toBe('paused');
    expect((await cli(['status', ...options], { env })).stdout).toContain(
      '  backfill      paused at',
    );
    expect(await cli(['backfill-resume', ...options], { env })).toMatchObject({ code: 0 });
    expect((await statusJson(options)).backfill.state).toBe('running');

    expect(await cli(['backfill-rate', 'none', ...options], { env })).toMatchObject({ code: 0 });
    const rest = await cli(['backfill', '--workers', '2', ...options], { env });
    expect(rest).toMatchObject({ code: 0, stderr: '' });
    expect(rest.stdout).toContain('backfill done: 80 rows scanned, 80 copied in total (100%)');
    expect(await rowsOf(schema, 'posthog_person_new')).toBe(80);
    expect((await statusJson(options)).backfill).toMatchObject({ state: 'done', rowsToGo: 0 });
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

// A property value planted in the new table: it must never reach the terminal.
const planted = 'planted-secret-7f3a9c';

/** Every stdout and stderr of the file's CLI runs, to check that no row value was printed. */
const printed: string[] = [];

interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Called with each stdout line and a function that sends a stop signal to the command. */
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
  const result = { code, stdout: stdout.join('\n'), stderr: stderr.join('\n'), lines: stdout };
  printed.push(result.stdout, result.stderr);
  return result;
}

/** The key lines of a text `verify` (`class team_id person_id [repaired]`). */
function keyLines(lines: readonly string[]): string[] {
  return lines.filter((line) => /^[a-z_]+ \d+ \d+( repaired)?$/.test(line));
}

afterAll(() => {
  // No planted value and no seeded value (emails) in anything the CLI printed.
  expect(printed.length).toBeGreaterThan(0);
  for (const text of printed) {
    expect(text).not.toContain(planted);
    expect(text).not.toContain('@example.com');
  }
});

describe('the verify command line', () => {
  const env = { DATABASE_URL: 'pglite://memory' };

  it('documents verify, its flags and its exit status in the usage', async () => {
    const help = await cli(['help']);
    expect(help.code).toBe(0);
    for (const text of [
      '  verify ',
      '--method join|checksum',
      '--columns a,b',
      '--ranges 1,2',
      '--repair',
      '--max-keys N',
      '--no-distinct-ids',
      'class team_id person_id',
      'Exit 0 clean, 1 mismatches remain',
      'or verify found mismatches',
      'the latest verification',
    ]) {
      expect(help.stdout).toContain(text);
    }
  });

  it('refuses verify flags on other commands and malformed values, naming the flag', async () => {
    const repair = await cli(['status', '--repair'], { env });
    expect(repair.code).toBe(2);
    expect(repair.stderr).toContain('--repair only applies to the verify command');

    const method = await cli(['backfill', '--method', 'join'], { env });
    expect(method.code).toBe(2);
    expect(method.stderr).toContain('--method only applies to the verify command');

    const ranges = await cli(['status', '--ranges', '1'], { env });
    expect(ranges.code).toBe(2);
    expect(ranges.stderr).toContain(
      '--ranges only applies to the backfill command and the verify command',
    );

    const json = await cli(['install', '--json'], { env });
    expect(json.code).toBe(2);
    expect(json.stderr).toContain('--json only applies to the status command and the verify');

    const list = await cli(['verify', '--ranges', '1,two'], { env });
    expect(list.code).toBe(2);
    expect(list.stderr).toContain('--ranges must list backfill range ids separated by commas');

    const maxKeys = await cli(['verify', '--max-keys', 'all'], { env });
    expect(maxKeys.code).toBe(2);
    expect(maxKeys.stderr).toContain('--max-keys must be a number');

    const extra = await cli(['verify', 'now'], { env });
    expect(extra.code).toBe(2);
    expect(extra.stderr).toContain('verify takes no positional arguments');
  });

  it('refuses an unknown method before connecting, naming --method', async () => {
    // Port 1: nothing listens there; the flag is refused before any connection is tried.
    const result = await cli(['verify', '--method', 'fast'], {
      env: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('error [INVALID_OPTIONS]');
    expect(result.stderr).toContain("method must be 'join' or 'checksum'");
    expect(result.stderr).toContain('check --method (pg-dual-read help)');
    expect(result.stdout).toBe('');
  });
});

describeOnRealServer('verify from the command line on a PostgreSQL server', () => {
  let db: DatabaseHandle;
  let env: Record<string, string>;
  const schemas: string[] = [];

  /** A seeded schema with its own control schema, installed, prepared, in dual_read. */
  async function dualReadMigration(rows: number) {
    const schema = uniqueSchemaName('cli_vf');
    const controlSchema = uniqueSchemaName('cli_vf_control');
    schemas.push(schema, controlSchema);
    await createPostHogPersonsSchema(db, { schema });
    const ids = await seedPersons(db, { schema, teamId: 1, count: rows });
    const options = ['--schema', schema, '--control-schema', controlSchema];
    for (const command of ['install', 'prepare', 'start-dual-read']) {
      expect(await cli([command, ...options], { env })).toMatchObject({ code: 0, stderr: '' });
    }
    return { schema, options, ids };
  }

  const table = (schema: string, name: string) => sql.id(schema, name);

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

  it('is refused before dual_read, exits 0 when clean and says so, and status shows the run', async () => {
    const schema = uniqueSchemaName('cli_vf');
    const controlSchema = uniqueSchemaName('cli_vf_control');
    schemas.push(schema, controlSchema);
    await createPostHogPersonsSchema(db, { schema });
    await seedPersons(db, { schema, teamId: 1, count: 40 });
    const options = ['--schema', schema, '--control-schema', controlSchema];
    expect(await cli(['install', ...options], { env })).toMatchObject({ code: 0 });
    expect(await cli(['prepare', ...options], { env })).toMatchObject({ code: 0 });

    const early = await cli(['verify', ...options], { env });
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/^error \[VERIFY_REFUSED\]: .*phase old/);
    expect(early.stdout).toBe('');

    const before = await cli(['status', ...options], { env });
    expect(before.stdout).toContain('  verification  none yet (run verify in phase dual_read)');
    expect((await statusJson(options)).verification).toBeNull();

    expect(await cli(['start-dual-read', ...options], { env })).toMatchObject({ code: 0 });
    expect(await cli(['backfill', ...options], { env })).toMatchObject({ code: 0, stderr: '' });

    const clean = await cli(['verify', ...options], { env });
    expect(clean).toMatchObject({ code: 0, stderr: '' });
    expect(clean.stdout).toMatch(
      /^verification \d+ of migration "persons": clean, no mismatched key$/m,
    );
    expect(clean.stdout).toContain('  checked       every key (full), join, ');
    expect(clean.stdout).toContain('  rows          40 old, 40 new');
    expect(clean.stdout).toContain('  mismatches    none');
    expect(clean.stdout).toContain('  agreeing      40 same, 0 newer_in_new, 0 created_in_new');
    expect(clean.lines.at(-1)).toBe('no mismatched key');
    expect(keyLines(clean.lines)).toEqual([]);

    const json = await cli(['verify', '--json', '--method', 'checksum', ...options], { env });
    expect(json).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(json.stdout)).toMatchObject({
      clean: true,
      method: 'checksum',
      full: true,
      ranges: null,
      oldRows: 40,
      newRows: 40,
      mismatches: 0,
      repair: null,
      keys: [],
      truncated: false,
    });

    const text = await cli(['status', ...options], { env });
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toMatch(
      / {2}verification {2}clean, every key \(full\), finished \S+Z after .* \(run \d+, checksum\)/,
    );
    expect(text.stdout).toContain('0 mismatched keys; 40 old rows, 40 new rows checked');
    expect(text.stdout).toContain('newer than the finished backfill');
    expect((await statusJson(options)).verification).toMatchObject({
      status: 'clean',
      method: 'checksum',
      full: true,
      range: 'every key',
      mismatches: 0,
      oldRows: 40,
      newRows: 40,
      newerThanBackfill: true,
    });
  });

  it('exits 1 listing every planted key with its class (text and JSON), never a row value, and repairs the missing row', {
    timeout: 60_000,
  }, async () => {
    const { schema, options, ids } = await dualReadMigration(30);
    expect(await cli(['backfill', ...options], { env })).toMatchObject({ code: 0 });
    const [missing, changed, orphanOwner] = [ids[4], ids[11], '999999999'];
    await sql`DELETE FROM ${table(schema, 'posthog_person_new')} WHERE id = ${missing}::bigint`.execute(
      db.db,
    );
    await sql`UPDATE ${table(schema, 'posthog_person_new')}
      SET properties = properties || jsonb_build_object('email', ${planted}::text)
      WHERE id = ${changed}::bigint`.execute(db.db);
    await sql`INSERT INTO ${table(schema, 'posthog_persondistinctid')} (team_id, distinct_id, person_id, version)
      VALUES (1, 'orphan-1', ${orphanOwner}::bigint, 0)`.execute(db.db);

    const expected = [
      `missing_in_new 1 ${missing}`,
      `content_differs 1 ${changed}`,
      `orphan_distinct_id 1 ${orphanOwner}`,
    ];
    for (const method of ['join', 'checksum']) {
      const run = await cli(['verify', '--method', method, ...options], { env });
      expect(run.code).toBe(1);
      expect(run.stderr).toBe('');
      expect(run.stdout).toMatch(
        /^verification \d+ of migration "persons": NOT clean, 3 mismatched keys$/m,
      );
      expect(run.stdout).toContain(
        '  mismatches    1 missing_in_new, 1 content_differs, 1 orphan_distinct_id',
      );
      expect(run.stdout).toContain('mismatched keys (class team_id person_id):');
      expect(keyLines(run.lines)).toEqual(expected);
      expect(run.stdout).toContain(
        'verify --repair copies the missing_in_new and older_in_new rows',
      );
      expect(run.lines.at(-1)).toBe('not clean: 3 mismatched keys remain (exit status 1)');
    }

    const json = await cli(['verify', '--json', ...options], { env });
    expect(json.code).toBe(1);
    expect(json.stderr).toBe('');
    const parsed = JSON.parse(json.stdout);
    expect(parsed).toMatchObject({
      migration: 'persons',
      clean: false,
      method: 'join',
      full: true,
      mismatches: 3,
      counts: { missing_in_new: 1, content_differs: 1, orphan_distinct_id: 1, same: 28 },
      truncated: false,
    });
    expect(parsed.keys).toEqual([
      { class: 'missing_in_new', teamId: 1, personId: missing, repaired: false },
      { class: 'content_differs', teamId: 1, personId: changed, repaired: false },
      { class: 'orphan_distinct_id', teamId: 1, personId: orphanOwner, repaired: false },
    ]);

    // --max-keys lists the first keys only; the counts still cover every key.
    const first = await cli(['verify', '--max-keys', '1', ...options], { env });
    expect(first.code).toBe(1);
    expect(keyLines(first.lines)).toEqual([expected[0]]);
    expect(first.stdout).toContain('listed the first 1 key (--max-keys 1) of 3 open;');
    const firstJson = JSON.parse(
      (await cli(['verify', '--json', '--max-keys', '1', ...options], { env })).stdout,
    );
    expect(firstJson).toMatchObject({ mismatches: 3, truncated: true });
    expect(firstJson.keys).toHaveLength(1);

    // --no-distinct-ids: no referential class; --columns: only the columns named.
    const noIds = await cli(['verify', '--no-distinct-ids', ...options], { env });
    expect(keyLines(noIds.lines)).toEqual(expected.slice(0, 2));
    const versionOnly = await cli(
      ['verify', '--columns', 'uuid', '--no-distinct-ids', ...options],
      {
        env,
      },
    );
    expect(versionOnly.stdout).toContain('  columns       uuid');
    expect(keyLines(versionOnly.lines)).toEqual([expected[0]]);

    const status = await cli(['status', ...options], { env });
    expect(status.stdout).toMatch(/ {2}verification {2}mismatched, every key \(full\), finished /);
    expect(status.stdout).toContain('1 mismatched key (1 missing_in_new)');

    // --repair copies the missing row; the changed one is the operator's decision.
    const repair = await cli(['verify', '--repair', ...options], { env });
    expect(repair.code).toBe(1);
    expect(repair.stdout).toContain('  repaired      1 copied (were missing_in_new), 0 updated');
    expect(repair.stdout).toContain("keys the repair fixed end with 'repaired'");
    expect(keyLines(repair.lines)).toEqual([`${expected[0]} repaired`, ...expected.slice(1)]);
    expect(repair.stdout).toContain('content_differs keys are never repaired');
    expect(repair.lines.at(-1)).toBe('not clean: 2 mismatched keys remain (exit status 1)');
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n
      FROM ${table(schema, 'posthog_person_new')} WHERE id = ${missing}::bigint`.execute(db.db);
    expect(rows[0]?.n).toBe(1);

    const after = JSON.parse((await cli(['verify', '--json', ...options], { env })).stdout);
    expect(after.keys.map((k: { class: string }) => k.class)).toEqual([
      'content_differs',
      'orphan_distinct_id',
    ]);

    // The changed row and the orphan set right by hand: clean again.
    await sql`UPDATE ${table(schema, 'posthog_person_new')} AS n SET properties = o.properties
      FROM ${table(schema, 'posthog_person')} AS o WHERE n.id = o.id AND n.id = ${changed}::bigint`.execute(
      db.db,
    );
    await sql`DELETE FROM ${table(schema, 'posthog_persondistinctid')} WHERE distinct_id = 'orphan-1'`.execute(
      db.db,
    );
    const clean = await cli(['verify', ...options], { env });
    expect(clean).toMatchObject({ code: 0, stderr: '' });
    expect(clean.stdout).toContain('clean, no mismatched key');
    expect((await statusJson(options)).verification).toMatchObject({
      status: 'clean',
      mismatches: 0,
      newerThanBackfill: true,
    });
  });

  it('verifies backfill ranges as a partial run, and refuses bad values naming the flag', async () => {
    const { schema, options, ids } = await dualReadMigration(20);
    expect(await cli(['backfill', '--ranges', '2', ...options], { env })).toMatchObject({
      code: 0,
    });
    await sql`DELETE FROM ${table(schema, 'posthog_person_new')} WHERE id = ${ids[0]}::bigint`.execute(
      db.db,
    );

    const partial = await cli(['verify', '--ranges', '1', ...options], { env });
    expect(partial.code).toBe(1);
    expect(partial.stdout).toContain('  checked       backfill ranges 1 (partial), join');
    expect(keyLines(partial.lines)).toEqual([`missing_in_new 1 ${ids[0]}`]);
    // Two chunks (one per range): a progress event for each, then the result as `done`.
    const events = (
      await cli(['verify', '--json', '--ranges', '1,2', ...options], { env })
    ).lines.map((line) => JSON.parse(line));
    expect(events.map((e) => e.type)).toEqual(['progress', 'progress', 'done']);
    expect(events[1]).toMatchObject({ command: 'verify', chunk: 2, chunks: 2 });
    expect(events[2]).toMatchObject({ full: false, ranges: [1, 2], mismatches: 1, exitCode: 1 });

    expect((await statusJson(options)).verification).toMatchObject({
      status: 'mismatched',
      full: false,
      range: 'backfill ranges 1, 2',
    });
    expect((await cli(['status', ...options], { env })).stdout).toContain(
      '  verification  mismatched, backfill ranges 1, 2 (partial), finished',
    );

    const noRange = await cli(['verify', '--ranges', '7', ...options], { env });
    expect(noRange.code).toBe(1);
    expect(noRange.stderr).toMatch(
      /^error \[VERIFY_REFUSED\]: ranges: backfill range\(s\) 7 do not exist/,
    );

    for (const [argv, message, flag] of [
      [['--ranges', '0'], 'ranges[] must be an integer from 1 to 1000000', '--ranges'],
      [['--max-keys=-1'], 'maxKeys must be an integer from 0 to 1000000', '--max-keys'],
      [['--columns', 'nope'], 'Columns that can be compared', '--columns'],
      [['--columns', ','], 'columns must name at least one column', '--columns'],
    ] as const) {
      const bad = await cli(['verify', ...argv, ...options], { env });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('error [INVALID_OPTIONS]');
      expect(bad.stderr).toContain(message);
      expect(bad.stderr).toContain(`check ${flag} (pg-dual-read help)`);
      expect(bad.stdout).toBe('');
    }
  });

  it('stops on SIGINT with exit 130 and stores the run as aborted', async () => {
    const { options } = await dualReadMigration(10);
    // The signal arrives as soon as the command listens: the run stops before its first chunk.
    const aborted = await runCli(['verify', ...options], {
      stdout: () => undefined,
      stderr: () => undefined,
      env,
      onStop: (handler) => {
        handler('SIGINT');
        return () => undefined;
      },
    });
    expect(aborted).toBe(130);
    expect((await statusJson(options)).verification).toMatchObject({ status: 'aborted' });
    expect((await cli(['status', ...options], { env })).stdout).toMatch(
      / {2}verification {2}aborted, every key \(full\), finished /,
    );
  });
});

// Every invocation starts PGlite (~3 s) on a data directory, as in cli.test.ts: a few only.
describe('verify on a PGlite data directory', () => {
  let dir: string;
  let url: string;
  let ids: string[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pg-dual-read-verify-cli-'));
    url = `pglite://${dir}`;
    const db = await openDatabase(url);
    try {
      await createPostHogPersonsSchema(db, { schema: 'app' });
      ids = await seedPersons(db, { schema: 'app', teamId: 1, count: 30 });
    } finally {
      await db.close();
    }
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exits 0 when clean, 1 listing a missing row and a changed property, repairs, and status shows it', {
    timeout: 240_000,
  }, async () => {
    const env = { DATABASE_URL: url };
    const options = ['--schema', 'app'];
    for (const command of ['install', 'prepare', 'start-dual-read', 'backfill']) {
      expect(await cli([command, ...options], { env })).toMatchObject({ code: 0, stderr: '' });
    }
    const clean = await cli(['verify', ...options], { env });
    expect(clean).toMatchObject({ code: 0, stderr: '' });
    expect(clean.stdout).toContain('clean, no mismatched key');

    const [missing, changed] = [ids[2], ids[7]];
    const db = await openDatabase(url);
    try {
      await sql`DELETE FROM app.posthog_person_new WHERE id = ${missing}::bigint`.execute(db.db);
      await sql`UPDATE app.posthog_person_new
        SET properties = properties || jsonb_build_object('plan', ${planted}::text)
        WHERE id = ${changed}::bigint`.execute(db.db);
    } finally {
      await db.close();
    }

    const json = await cli(['verify', '--json', '--repair', ...options], { env });
    expect(json.code).toBe(1);
    expect(json.stderr).toBe('');
    const parsed = JSON.parse(json.stdout);
    expect(parsed).toMatchObject({ clean: false, mismatches: 1, repair: { copied: 1 } });
    expect(parsed.keys).toEqual([
      { class: 'missing_in_new', teamId: 1, personId: missing, repaired: true },
      { class: 'content_differs', teamId: 1, personId: changed, repaired: false },
    ]);

    const text = await cli(['verify', ...options], { env });
    expect(text.code).toBe(1);
    expect(keyLines(text.lines)).toEqual([`content_differs 1 ${changed}`]);

    const status = await cli(['status', '--json', ...options], { env });
    expect(JSON.parse(status.stdout).verification).toMatchObject({
      status: 'mismatched',
      full: true,
      mismatches: 1,
      newerThanBackfill: true,
    });
  });
});

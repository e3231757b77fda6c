/**
 * Issue 16, proof of the live display: `backfill`, `verify` and `status --watch` run as real
 * processes against a real server, (1) in a real pseudo-terminal (`script` from util-linux):
 * the display is redrawn in place (several frames, the terminal's erase and cursor-up
 * sequences) and ends with the summary; (2) with stdout a file or a pipe: plain lines without
 * one escape sequence; (3) with `--json`: every line parses on its own and the last is a
 * `done` event. `status --watch` is stopped by a real SIGINT (Ctrl-C typed into the terminal)
 * and exits 0.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { runCliInProcess } from '../support/cli.js';
import {
  describeOnRealServer,
  dropSchemas,
  openDatabaseForTest,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

const esc = '\u001b';
const cliArgs = ['--import', 'tsx', 'src/cli/main.ts'];

interface Run {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

function childEnv(): NodeJS.ProcessEnv {
  return { ...process.env, DATABASE_URL: realServerUrl() ?? '', TERM: 'xterm-256color' };
}

/** Resolves when `child` exits, with what it printed. */
function collect(child: ChildProcess, onOut?: (out: string) => void): Promise<Run> {
  let out = '';
  let err = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8');
    onOut?.(out);
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

/**
 * `pg-dual-read argv` in a pseudo-terminal of 120 x 30; once `interruptWhen(out)` holds,
 * Ctrl-C is typed into the terminal (the line discipline sends SIGINT to the CLI).
 */
function inTerminal(argv: string[], interruptWhen?: (out: string) => boolean): Promise<Run> {
  const command = [process.execPath, ...cliArgs, ...argv].map(quote).join(' ');
  const child = spawn('script', ['-qfec', `stty cols 120 rows 30; exec ${command}`, '/dev/null'], {
    env: childEnv(),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let interrupted = false;
  const run = collect(child, (out) => {
    if (!interrupted && interruptWhen?.(out)) {
      interrupted = true;
      child.stdin?.write('\u0003');
    }
  });
  return run.finally(() => child.stdin?.end());
}

/** `pg-dual-read argv` with stdout a pipe; SIGINT once `interruptWhen(out)` holds. */
function piped(argv: string[], interruptWhen?: (out: string) => boolean): Promise<Run> {
  const child = spawn(process.execPath, [...cliArgs, ...argv], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let interrupted = false;
  return collect(child, (out) => {
    if (!interrupted && interruptWhen?.(out)) {
      interrupted = true;
      child.kill('SIGINT');
    }
  });
}

/** `pg-dual-read argv` with stdout a file; what the file holds after it exits. */
async function toFile(dir: string, argv: string[]): Promise<Run> {
  const path = join(dir, `out-${Math.random().toString(36).slice(2)}.txt`);
  const file = await open(path, 'w');
  try {
    const child = spawn(process.execPath, [...cliArgs, ...argv], {
      env: childEnv(),
      stdio: ['ignore', file.fd, 'pipe'],
    });
    const { code, err } = await collect(child);
    return { code, err, out: await readFile(path, 'utf8') };
  } finally {
    await file.close();
  }
}

/** Each line parsed on its own. */
function events(out: string): { type: string; [key: string]: unknown }[] {
  return out
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line));
}

const count = (text: string, part: string) => text.split(part).length - 1;

describeOnRealServer('the live display in a real terminal, a file and --json (real server)', () => {
  const schemas: string[] = [];
  let handle: DatabaseHandle;
  let dir: string;

  /** A seeded schema in dual_read, its migration prepared (in-process: quick). */
  async function dualRead(rows: number): Promise<string[]> {
    const schema = uniqueSchemaName('cli_live');
    schemas.push(schema, `${schema}_ctl`);
    await createPostHogPersonsSchema(handle, { schema });
    await seedPersons(handle, { schema, teamId: 1, count: rows });
    const tables = ['--schema', schema, '--control-schema', `${schema}_ctl`];
    for (const command of ['install', 'prepare', 'start-dual-read']) {
      expect((await runCliInProcess([command, ...tables], realServerUrl() ?? '')).code).toBe(0);
    }
    return tables;
  }

  // A ceiling that makes each backfill last seconds whatever the machine: slower is longer.
  const slowBackfill = ['backfill', '--max-rows-per-second', '500', '--batch-size', '100'];

  beforeAll(async () => {
    handle = await openDatabaseForTest(2);
    dir = await mkdtemp(join(tmpdir(), 'pg-dual-read-live-'));
  });
  afterAll(async () => {
    await dropSchemas(handle, ...schemas);
    await handle.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('backfill redraws its bar in place on a terminal and ends with the summary', async () => {
    const tables = await dualRead(2_000);
    const run = await inTerminal([...slowBackfill, ...tables]);
    expect(run.code).toBe(0);
    const frames = count(run.out, 'backfill of migration "persons" (Ctrl-C stops');
    expect(frames).toBeGreaterThanOrEqual(2);
    // Redrawn in place: each frame after the first erases the previous one's lines.
    expect(count(run.out, `${esc}[1A`)).toBeGreaterThanOrEqual(frames - 1);
    expect(run.out).toContain(`${esc}[2K`);
    expect(run.out).toContain('█'); // the bar
    expect(run.out).toMatch(
      /ranges \d+ done, \d+ running, \d+ deferred, \d+ pending {3}retries \d+/,
    );
    expect(run.out).toMatch(/phase dual_read \(epoch 2\) {3}no live client/);
    // The last frame shows the end, and the summary comes after it.
    const lastFrame = run.out.lastIndexOf('backfill of migration "persons" (Ctrl-C stops');
    const summary = run.out.indexOf(
      'backfill done: 2,000 rows scanned, 2,000 copied in total (100%)',
    );
    expect(summary).toBeGreaterThan(lastFrame);
    expect(run.out.slice(lastFrame, summary)).toContain('100.0%  2,000 of ~2,000 rows, 0 to go');
    expect(run.out.slice(summary)).toMatch(/this run: 2,000 rows scanned, 2,000 copied/);
    // The plain progress line is not printed on a terminal.
    expect(run.out).not.toContain('progress every 2 s');
  }, 60_000);

  it('backfill piped to a file prints plain lines without escape sequences', async () => {
    const tables = await dualRead(2_000);
    const run = await toFile(dir, [...slowBackfill, ...tables]);
    expect(run).toMatchObject({ code: 0, err: '' });
    expect(run.out).not.toContain(esc);
    const lines = run.out.trimEnd().split('\n');
    expect(lines[0]).toBe(
      'backfill of migration "persons": progress every 2 s; Ctrl-C stops it after the current batch (resumable)',
    );
    for (const line of lines.slice(1, -2)) {
      expect(line).toMatch(
        /^backfill \d+\.\d%: [\d,]+ rows scanned, [\d,]+ to go, .*, \d workers? active$/,
      );
    }
    expect(lines.at(-2)).toBe('backfill done: 2,000 rows scanned, 2,000 copied in total (100%)');
    expect(lines.at(-1)).toMatch(/^this run: 2,000 rows scanned, 2,000 copied, /);
  }, 60_000);

  it('backfill --json prints one event per line, progress then done', async () => {
    const tables = await dualRead(2_000);
    const run = await piped([...slowBackfill, '--json', ...tables]);
    expect(run).toMatchObject({ code: 0, err: '' });
    expect(run.out).not.toContain(esc);
    const all = events(run.out);
    // At 500 rows/s the 2,000 rows take 4 s or more: the first progress event comes at 2 s.
    const progress = all.filter((e) => e.type === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress[0]).toMatchObject({
      command: 'backfill',
      migration: 'persons',
      state: 'running',
    });
    expect(progress[0]).toHaveProperty('eta.settling');
    expect(progress[0]).toHaveProperty('ranges.done');
    expect(progress[0]).toHaveProperty('retries', 0);
    expect(all.slice(0, -1).every((e) => e.type === 'progress')).toBe(true);
    expect(all.at(-1)).toMatchObject({
      type: 'done',
      command: 'backfill',
      outcome: 'finished',
      exitCode: 0,
      run: { rowsScanned: 2_000, rowsCopied: 2_000 },
      backfill: { state: 'done', rowsToGo: 0 },
    });
  }, 60_000);

  it('verify shows chunks on a terminal, plain lines in a file and events with --json', async () => {
    const tables = await dualRead(2_000);
    expect((await runCliInProcess(['backfill', ...tables], realServerUrl() ?? '')).code).toBe(0);
    // One chunk per backfill range: a run of several chunks on a small table.
    const ranges = ['--ranges', '1,2,3,4,5,6'];

    const tty = await inTerminal(['verify', ...ranges, ...tables]);
    expect(tty.code).toBe(0);
    expect(count(tty.out, 'verify of migration "persons"')).toBeGreaterThanOrEqual(2);
    expect(tty.out).toContain(`${esc}[1A`);
    expect(tty.out).toMatch(/6 of 6 chunks, 0 keys mismatched so far/);
    const summary = tty.out.indexOf('verification ');
    expect(summary).toBeGreaterThan(tty.out.lastIndexOf('verify of migration "persons"'));
    expect(tty.out.slice(summary)).toContain('no mismatched key');

    const file = await toFile(dir, ['verify', ...ranges, ...tables]);
    expect(file).toMatchObject({ code: 0, err: '' });
    expect(file.out).not.toContain(esc);
    expect(file.out).toContain('verify: chunk 6 of 6 checked, 0 keys to re-check');
    expect(file.out).toMatch(/verification \d+ of migration "persons": clean/);

    const json = await piped(['verify', '--json', ...ranges, ...tables]);
    expect(json).toMatchObject({ code: 0, err: '' });
    const all = events(json.out);
    expect(all.map((e) => e.type)).toEqual([...Array(6).fill('progress'), 'done']);
    expect(all[5]).toMatchObject({ command: 'verify', chunk: 6, chunks: 6, mismatches: 0 });
    expect(all.at(-1)).toMatchObject({ clean: true, outcome: 'clean', exitCode: 0, keys: [] });
  }, 90_000);

  it('status --watch redraws until Ctrl-C and exits 0, on a terminal, in a pipe and with --json', async () => {
    const tables = await dualRead(200);
    const watch = ['status', '--watch', '--interval-ms', '300', ...tables];
    const frame = 'Ctrl-C stops watching)';

    const tty = await inTerminal(watch, (out) => count(out, frame) >= 3);
    expect(tty.code).toBe(0);
    expect(count(tty.out, frame)).toBeGreaterThanOrEqual(3);
    expect(tty.out).toContain(`${esc}[1A`);
    expect(tty.out).toContain('  phase         dual_read (epoch 2)');
    expect(tty.out).toContain('  backfill      ░░░░');
    expect(tty.out).toContain('  cutover       blocked: [backfill_unfinished]');
    expect(tty.out).toContain('stopped watching (SIGINT)');

    const pipe = await piped(watch, (out) => count(out, '\n') >= 2);
    expect(pipe).toMatchObject({ code: 0, err: '' });
    expect(pipe.out).not.toContain(esc);
    const lines = pipe.out.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines.slice(0, -1)) {
      expect(line).toMatch(
        /^status at \S+: phase dual_read \(epoch 2\); backfill not started; verification none; no live client; cutover blocked by \d+ guards?$/,
      );
    }
    expect(lines.at(-1)).toBe('stopped watching (SIGINT)');

    const json = await piped([...watch, '--json'], (out) => count(out, '\n') >= 2);
    expect(json).toMatchObject({ code: 0, err: '' });
    const all = events(json.out);
    expect(all.length).toBeGreaterThanOrEqual(3);
    expect(all.slice(0, -1).every((e) => e.type === 'status' && e.phase === 'dual_read')).toBe(
      true,
    );
    expect(all[0]).toMatchObject({ name: 'persons', backfill: null, verification: null });
    expect(all.at(-1)).toEqual({
      type: 'done',
      command: 'status',
      outcome: 'stopped',
      signal: 'SIGINT',
      exitCode: 0,
    });
  }, 90_000);
});

/**
 * Issue 16, the live display's parts that need no database: the bar, the ETA text, the
 * newline-delimited JSON lines, the display's in-place redraw on a terminal stream, and the
 * command line of `status --watch` and `backfill --json`. The display in a real
 * pseudo-terminal against a real server is `live-display-pty.test.ts`.
 */
import { describe, expect, it } from 'vitest';
import type { BackfillStatus } from '../../src/backfill/backfill-status.js';
import { shortDuration } from '../../src/cli/duration-format.js';
import { etaJson, etaText } from '../../src/cli/eta-format.js';
import { createLiveDisplay, liveTerminalOf } from '../../src/cli/live-display.js';
import { runCli } from '../../src/cli/main.js';
import { ndjsonLine } from '../../src/cli/ndjson.js';
import { progressBar } from '../../src/cli/progress-bar.js';

const esc = '\u001b';

/** A running backfill's status with the given ETA. */
function running(eta: Partial<BackfillStatus['eta']>, state: BackfillStatus['state'] = 'running') {
  const status: BackfillStatus = {
    state,
    plannedAt: new Date('2026-01-01T10:00:00Z'),
    finishedAt: undefined,
    rowsEstimated: 1_000,
    rowsScanned: 400,
    rowsCopied: 400,
    rowsToGo: 600,
    percent: 40,
    ratePerSecond: 5,
    etaSeconds: 120,
    eta: {
      seconds: undefined,
      lowSeconds: undefined,
      highSeconds: undefined,
      finishAt: undefined,
      settling: false,
      ratePerSecond: 5,
      ...eta,
    },
    maxRowsPerSecond: undefined,
    activeWorkers: 2,
    ranges: [],
    workers: [],
  };
  return status;
}

async function cli(argv: string[]) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runCli(argv, {
    stdout: (line) => stdout.push(line),
    stderr: (line) => stderr.push(line),
    env: { DATABASE_URL: 'pglite://memory' },
  });
  return { code, stdout: stdout.join('\n'), stderr: stderr.join('\n') };
}

describe('the pieces of the live display', () => {
  it('draws a bar in proportion, clamped to empty and full', () => {
    expect(progressBar(0.5, 10)).toBe('█████░░░░░');
    expect(progressBar(-1, 4)).toBe('░░░░');
    expect(progressBar(2, 4)).toBe('████');
    expect(progressBar(Number.NaN, 4)).toBe('░░░░');
  });

  it('writes durations short, and the ETA with its range, settling, unknown, paused or done', () => {
    expect(shortDuration(45)).toBe('45s');
    expect(shortDuration(130)).toBe('2m10s');
    expect(shortDuration(3_900)).toBe('1h05m');
    const sure = running({ seconds: 130, lowSeconds: 118, highSeconds: 145 });
    expect(etaText(sure, 'short')).toBe('ETA 2m10s (1m58s-2m25s)');
    expect(etaText(sure, 'long')).toBe('ETA 2 min 10 s (1 min 58 s to 2 min 25 s)');
    expect(etaText(running({ seconds: 130, settling: true }), 'short')).toBe('ETA ~2m (settling)');
    // Unknown is unknown, whatever the plain etaSeconds says.
    expect(etaText(running({ seconds: undefined }), 'long')).toBe('ETA unknown');
    expect(etaText(running({}, 'paused'), 'long')).toBe('ETA unknown (paused)');
    expect(etaText(running({}, 'done'), 'short')).toBe('done');
    expect(etaJson(sure)).toEqual({
      seconds: 130,
      lowSeconds: 118,
      highSeconds: 145,
      finishAt: null,
      settling: false,
      ratePerSecond: 5,
    });
  });

  it('prints one JSON object per line, type first, absent values as null', () => {
    const line = ndjsonLine('progress', { command: 'backfill', eta: undefined, at: new Date(0) });
    expect(line).not.toContain('\n');
    expect(line).toBe(
      '{"type":"progress","command":"backfill","eta":null,"at":"1970-01-01T00:00:00.000Z"}',
    );
  });

  it('redraws its lines in place on a terminal, keeps printed lines above, and stops at the end', () => {
    const writes: string[] = [];
    const terminal = { isTTY: true, columns: 0, rows: 0, write: (t: string) => writes.push(t) };
    expect(liveTerminalOf(terminal, {})).toBe(terminal);
    expect(liveTerminalOf(terminal, { TERM: 'dumb' })).toBeUndefined();
    expect(liveTerminalOf({ ...terminal, isTTY: false }, {})).toBeUndefined();

    const display = createLiveDisplay(terminal, (text) => text.replace('secret', '***'));
    display.draw(['frame one', 'the secret line']);
    display.draw(['frame two', 'the secret line']);
    display.print('a note');
    display.end();
    display.draw(['after the end']);
    const out = writes.join('');
    expect(out).toContain('frame one\nthe *** line');
    expect(out).not.toContain('secret');
    // The second frame erases the first one's lines (up and erase) before it is written.
    const second = out.indexOf('frame two');
    expect(out.slice(out.indexOf('frame one'), second)).toContain(`${esc}[1A`);
    expect(out.slice(out.indexOf('frame one'), second)).toContain(`${esc}[2K`);
    expect(out.indexOf('a note')).toBeGreaterThan(second);
    expect(out.lastIndexOf('frame two')).toBeGreaterThan(out.indexOf('a note'));
    expect(out).not.toContain('after the end');
  });
});

describe('the command line of the live display', () => {
  it('takes --watch and --interval-ms on status only, checks the interval naming the flag, and --json on backfill', async () => {
    const noWatch = await cli(['status', '--interval-ms', '500']);
    expect(noWatch.code).toBe(2);
    expect(noWatch.stderr).toContain('--interval-ms only applies to status --watch');

    const elsewhere = await cli(['backfill', '--watch']);
    expect(elsewhere.code).toBe(2);
    expect(elsewhere.stderr).toContain('--watch only applies to the status command');

    const tooFast = await cli(['status', '--watch', '--interval-ms', '5']);
    expect(tooFast.code).toBe(2);
    expect(tooFast.stderr).toContain('intervalMs must be an integer from 200 to 3600000');
    expect(tooFast.stderr).toContain('check --interval-ms (pg-dual-read help)');

    const words = await cli(['status', '--watch', '--interval-ms', 'often']);
    expect(words.code).toBe(2);
    expect(words.stderr).toContain('--interval-ms must be a number');

    // --json is the backfill's: the bad flag value after it is what fails (before connecting).
    const json = await cli(['backfill', '--json', '--batch-size', '0']);
    expect(json.code).toBe(2);
    expect(json.stderr).toContain('check --batch-size');
  });

  it('documents the live display, status --watch and the JSON events in the usage', async () => {
    const help = await cli(['help']);
    for (const text of ['--watch', '--interval-ms N', 'live display', '"type"']) {
      expect(help.stdout).toContain(text);
    }
  });
});

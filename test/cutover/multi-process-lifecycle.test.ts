/**
 * Issue 14's proof with writers in separate processes: bench/cutover.ts at a CI size (10,000
 * persons, 2 writer processes at 200 writes/s) drives startDualRead, backfill, verify, cutover,
 * rollback, cutover and finalize while the writers write, then checks every acknowledged write
 * against the consolidated table (it exits 1 when a check fails). Zero failed writes, zero lost,
 * zero orphans. The latency goal is the benchmark's to report, not this test's.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

const run = promisify(execFile);

describeOnRealServer('the lifecycle under writer processes (real server)', () => {
  it('loses no acknowledged write, resurrects nobody, orphans no distinct id, fails no write', async () => {
    const { stdout } = await run('npx', ['tsx', 'bench/cutover.ts'], {
      env: {
        ...process.env,
        DATABASE_URL: realServerUrl() ?? '',
        BENCH_ROWS: '10000',
        BENCH_WRITERS: '2',
        BENCH_WRITES_PER_S: '200',
        BENCH_OWNED: '500',
        BENCH_WARMUP_S: '1',
        BENCH_BEFORE_S: '1',
        BENCH_AFTER_MS: '300',
      },
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    expect(stdout).toContain('Failed writes: 0.');
    expect(stdout).toContain('**0 mismatch(es)**');
    expect(stdout).toContain('orphan distinct ids: **0**');
    expect(stdout).toMatch(
      /Anomalies \(acknowledged writes answered against what the writer knew\): 0\./,
    );
    for (const step of ['startDualRead', 'cutover', 'rollback', 'finalize']) {
      expect(stdout).toMatch(new RegExp(`\\| ${step} \\|`));
    }
  }, 150_000);
});

/**
 * Bad input to verify(), verification() and mismatches(): clear typed errors that name what
 * is wrong, and no verification run stored for a call that was refused. Runs on the real
 * server when there is one, else on PGlite (the checks do not depend on the backend, and one
 * PGlite start costs more than the whole suite).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  DualReadError,
  InvalidOptionsError,
  NotInstalledError,
  VerifyRefusedError,
} from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';
import { storedRuns, streamed } from './verify-support.js';

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

const backend = availableBackends().at(-1) ?? 'pglite';

describe(`bad input to verify() on ${backend}`, () => {
  let handle: DatabaseHandle;
  /** In dual_read, backfilled in 3 ranges. */
  let f: MigrationFixture;
  /** In dual_read, no backfill plan. */
  let unplanned: MigrationFixture;

  beforeAll(async () => {
    handle = await openBackend(backend);
    f = await createMigrationFixture(handle, { seed: 30, dualRead: true });
    await f.migration.backfill({ ranges: 3, workers: 1 });
    unplanned = await createMigrationFixture(handle, { seed: 30, dualRead: true });
  });
  afterAll(async () => {
    await f?.drop();
    await unplanned?.drop();
    await handle?.close();
  });

  it('verify() in phase old is refused with VERIFY_REFUSED, and no run is stored', async () => {
    const old = await createMigrationFixture(handle, { seed: 30 });
    try {
      expect((await old.migration.status()).phase).toBe('old');
      const error = await rejection(old.migration.verify());
      expect(error).toBeInstanceOf(VerifyRefusedError);
      expect(error).toMatchObject({ code: 'VERIFY_REFUSED' });
      expect(error.message).toContain('phase old');
      expect(error.message).toContain('startDualRead()');
      expect(await storedRuns(old)).toBe(0);
      expect(await old.migration.verification()).toBeUndefined();
      expect((await old.migration.status()).verification).toBeUndefined();

      // After cutover too: verification is over once the new table serves reads.
      await old.forcePhase('new');
      const after = await rejection(old.migration.verify({ repair: true }));
      expect(after).toMatchObject({ code: 'VERIFY_REFUSED' });
      expect(after.message).toContain('phase new');
      expect(await storedRuns(old)).toBe(0);
    } finally {
      await old.drop();
    }
  });

  it('verify() before install() is a NotInstalledError', async () => {
    const bare = await createMigrationFixture(handle, { seed: 0, prepare: false });
    try {
      const error = await rejection(bare.migration.verify());
      expect(error).toBeInstanceOf(NotInstalledError);
      expect(error).toMatchObject({ code: 'NOT_INSTALLED' });
    } finally {
      await bare.drop();
    }
  });

  it('an unknown column (or the key, or version) is an InvalidOptionsError naming the column and the option', async () => {
    const runs = await storedRuns(f);
    const error = await rejection(
      f.migration.verify({ columns: ['properties', 'no_such_column'] }),
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(error.message).toContain('"no_such_column"');
    expect(error.message).toContain('columns');
    expect(error.message).not.toContain('"properties"');
    expect((error as InvalidOptionsError).issues).toEqual([
      { path: 'columns', message: expect.stringContaining('no_such_column') },
    ]);
    for (const column of ['version', 'id', 'team_id']) {
      const refused = await rejection(f.migration.verify({ columns: [column] }));
      expect(refused, column).toBeInstanceOf(InvalidOptionsError);
      expect(refused.message, column).toContain(`"${column}"`);
      expect((refused as InvalidOptionsError).issues[0]?.path).toBe('columns');
    }
    expect(await storedRuns(f)).toBe(runs);
  });

  it('a backfill range that does not exist is refused with VERIFY_REFUSED naming it', async () => {
    const runs = await storedRuns(f);
    const error = await rejection(f.migration.verify({ ranges: [2, 7, 9] }));
    expect(error).toBeInstanceOf(VerifyRefusedError);
    expect(error).toMatchObject({ code: 'VERIFY_REFUSED' });
    expect(error.message).toContain('7, 9');
    expect(error.message).toContain('3 ranges');
    expect(error.message).not.toMatch(/\b2, 7/);
    expect(await storedRuns(f)).toBe(runs);
    // The ranges that exist are accepted.
    expect(await f.migration.verify({ ranges: [3, 1], settleMs: 0 })).toMatchObject({
      clean: true,
      full: false,
    });
  });

  it('ranges without a backfill plan are refused with VERIFY_REFUSED saying so', async () => {
    const error = await rejection(unplanned.migration.verify({ ranges: [1] }));
    expect(error).toBeInstanceOf(VerifyRefusedError);
    expect(error.message).toContain('no backfill plan');
    expect(await storedRuns(unplanned)).toBe(0);
  });

  it('a phase change during verify() discards the result with VERIFY_REFUSED and the run is stored as failed', async () => {
    const changing = await createMigrationFixture(handle, { seed: 30, dualRead: true });
    try {
      // Every key is missing (no backfill): verify() waits settleMs before re-checking them,
      // and meanwhile the phase changes and comes back (a cutover and a rollback: a new epoch).
      let changed: Promise<void> | undefined;
      changing.migration.events.on('verify:chunk', ({ chunk, chunks }) => {
        if (chunk === chunks) changed ??= changing.forcePhase('dual_read');
      });
      const error = await rejection(changing.migration.verify({ settleMs: 300 }));
      await changed;
      expect(changed).toBeDefined();
      expect(error).toBeInstanceOf(VerifyRefusedError);
      expect(error.message).toContain('changed during verify()');
      expect(await changing.migration.verification()).toMatchObject({ status: 'failed' });
    } finally {
      await changing.drop();
    }
  });

  const invalid: [string, Record<string, unknown>][] = [
    ['method', { method: 'md5' }],
    ['method', { method: 'JOIN' }],
    ['chunkRows', { chunkRows: 10 }],
    ['chunkRows', { chunkRows: 1_500.5 }],
    ['chunkRows', { chunkRows: '5000' }],
    ['settleMs', { settleMs: -1 }],
    ['settleMs', { settleMs: 600_001 }],
    ['recheckAttempts', { recheckAttempts: 101 }],
    ['maxKeys', { maxKeys: -1 }],
    ['leafRows', { leafRows: 0 }],
    ['fanout', { fanout: 1 }],
    ['repair', { repair: 'yes' }],
    ['distinctIds', { distinctIds: 1 }],
    ['columns', { columns: [] }],
    ['columns', { columns: 'properties' }],
    ['columns', { columns: [42] }],
    ['ranges', { ranges: [] }],
    ['ranges', { ranges: [0] }],
    ['ranges', { ranges: [1.5] }],
    ['ranges', { ranges: '1' }],
    ['signal', { signal: { aborted: false } }],
    ['colums', { colums: ['properties'] }],
  ];

  it.each(invalid)(
    'an invalid %s is an InvalidOptionsError naming it: %o',
    async (option, options) => {
      const runs = await storedRuns(f);
      const error = await rejection(f.migration.verify(options as never));
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(error.message).toContain(option);
      const issues = (error as InvalidOptionsError).issues;
      expect(issues.length).toBeGreaterThan(0);
      expect(
        issues.every((i) => i.path.startsWith(option) || i.message.includes(option)),
        JSON.stringify(issues),
      ).toBe(true);
      expect(await storedRuns(f)).toBe(runs);
    },
  );

  it('mismatches() refuses a bad pageSize or a malformed run id with an InvalidOptionsError naming it', async () => {
    const run = await f.migration.verify({ settleMs: 0 });
    for (const pageSize of [0, -1, 1.5, 100_001, Number.NaN]) {
      const error = await rejection(streamed(f.migration, run.id, { pageSize }));
      expect(error, String(pageSize)).toBeInstanceOf(InvalidOptionsError);
      expect((error as InvalidOptionsError).issues[0]?.path, String(pageSize)).toBe('pageSize');
    }
    for (const id of ['', 'abc', '-1', '1.5', '1 OR true', '12345678901234567890']) {
      const error = await rejection(streamed(f.migration, id));
      expect(error, id).toBeInstanceOf(InvalidOptionsError);
      expect((error as InvalidOptionsError).issues[0]?.path, id).toBe('verificationId');
    }
    expect(await streamed(f.migration, run.id, { pageSize: 1 })).toEqual([]);
  });

  it('verification() with a malformed run id is an InvalidOptionsError, like mismatches()', async () => {
    for (const id of ['abc', '1 OR true', '1.5']) {
      const error = await rejection(f.migration.verification(id));
      expect(error, id).toBeInstanceOf(InvalidOptionsError);
      expect((error as InvalidOptionsError).issues?.[0]?.path, id).toBe('verificationId');
    }
    expect(await f.migration.verification('999999999')).toBeUndefined();
  });

  it('mismatches() of a run id that does not exist is refused, not an empty stream that reads as clean', async () => {
    const error = await rejection(streamed(f.migration, '999999999'));
    expect(error).toBeInstanceOf(DualReadError);
    expect(error.message).toContain('999999999');
  });

  it("an aborted verify() rejects with the signal's reason (not a failed query, which callers retry) and stores its run as aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    const error = await rejection(f.migration.verify({ signal: controller.signal }));
    expect(error).toBe(controller.signal.reason);
    expect(error.name).toBe('AbortError');
    expect(await f.migration.verification()).toMatchObject({ status: 'aborted' });
  });
});

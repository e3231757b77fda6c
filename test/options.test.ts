import { describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../src/db/database-handle.js';
import { createPersonsMigration, InvalidOptionsError } from '../src/index.js';

// Validation happens before any query: a handle that was never opened is enough here.
const handle = { db: {}, backend: 'postgres', close: async () => {} } as unknown as DatabaseHandle;

function optionError(options: unknown): InvalidOptionsError {
  try {
    createPersonsMigration(options as never);
  } catch (error) {
    if (error instanceof InvalidOptionsError) return error;
    throw error;
  }
  throw new Error('expected an InvalidOptionsError');
}

describe('createPersonsMigration options', () => {
  it.each([
    [{ name: '' }, 'name must not be empty'],
    [{ schema: 42 }, 'schema must be a string'],
    [{ controlSchema: 'x'.repeat(64) }, 'controlSchema must be at most 63 bytes'],
    [{ oldTable: '' }, 'oldTable must not be empty'],
    [{ newTable: 'posthog_person' }, 'newTable must differ from oldTable'],
    [{ distinctIdsTable: 'posthog_person_new' }, 'distinctIdsTable must differ'],
    [{ phaseRefreshIntervalMs: 10 }, 'phaseRefreshIntervalMs must be an integer from 50 to 600000'],
    [
      { phaseChangeLockTimeoutMs: 1.5 },
      'phaseChangeLockTimeoutMs must be an integer from 1 to 600000',
    ],
    [{ batchSize: 10 }, 'unknown option(s) batchSize'],
    [{ controlSchema: 'pg_dual_read' }, 'controlSchema must not start with pg_'],
  ])('%j is refused with a message naming the option', (bad, message) => {
    const error = optionError({ db: handle, ...bad });
    expect(error.code).toBe('INVALID_OPTIONS');
    expect(error.message).toContain(message);
    expect(error.issues.length).toBeGreaterThan(0);
  });

  it('a missing db is refused naming db', () => {
    expect(optionError({}).message).toContain('db must be a handle returned by openDatabase()');
  });

  it('valid options are completed with defaults and frozen', () => {
    const migration = createPersonsMigration({ db: handle });
    expect(migration.options).toMatchObject({
      name: 'persons',
      schema: 'public',
      controlSchema: 'dual_read',
      oldTable: 'posthog_person',
      newTable: 'posthog_person_new',
      distinctIdsTable: 'posthog_persondistinctid',
      phaseRefreshIntervalMs: 1000,
    });
    expect(Object.isFrozen(migration.options)).toBe(true);
  });
});

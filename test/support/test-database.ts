import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { describe, inject } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';

/** The backends a suite can run on. */
export type TestBackend = 'postgres' | 'pglite';

/** URL of the real server for this run, or null (never null under CI: global setup fails). */
export function realServerUrl(): string | null {
  return inject('realServerUrl');
}

/** `describe` for suites that need the real server (several sessions, locks): skipped only off CI. */
export const describeOnRealServer: typeof describe = ((name: string, fn: () => void) =>
  realServerUrl() ? describe(name, fn) : describe.skip(name, fn)) as typeof describe;

/** Backends a functional suite runs on: PGlite always, the real server when there is one. */
export function availableBackends(): TestBackend[] {
  return realServerUrl() ? ['pglite', 'postgres'] : ['pglite'];
}

/** Opens a database on `backend`. */
export async function openBackend(
  backend: TestBackend,
  maxConnections = 10,
): Promise<DatabaseHandle> {
  if (backend === 'pglite') return openDatabase('pglite://memory');
  const url = realServerUrl();
  if (!url) throw new Error('no real server for this run');
  return openDatabase(url, { maxConnections });
}

/** A unique, valid schema name for one test's objects. */
export function uniqueSchemaName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`.toLowerCase();
}

/** Drops schemas (and everything in them) made by a test. */
export async function dropSchemas(handle: DatabaseHandle, ...schemas: string[]): Promise<void> {
  for (const schema of schemas) {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(handle.db);
  }
}

/** A new handle on the real server (its own pool), for tests that need separate sessions. */
export function openDatabaseForTest(maxConnections = 10): Promise<DatabaseHandle> {
  return openBackend('postgres', maxConnections);
}

import pg from 'pg';
import type { TestProject } from 'vitest/node';

export const defaultServerUrl = 'postgres://postgres@127.0.0.1:5432/postgres';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the real PostgreSQL server, or null when none answers (never null under CI). */
    realServerUrl: string | null;
  }
}

/**
 * Decides once per run whether a real PostgreSQL server is there. Under CI it must be: the
 * real-server suites prove the invariants, so a run without them fails instead of skipping.
 */
export default async function setup(project: TestProject): Promise<void> {
  const url = process.env.DATABASE_URL ?? defaultServerUrl;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  let reachable = false;
  try {
    await client.connect();
    await client.query('select 1');
    reachable = true;
  } catch (error) {
    if (process.env.CI || process.env.DATABASE_URL) {
      throw new Error(
        `No PostgreSQL server answers at ${new URL(url).host} (${(error as Error).message}). ` +
          'The real-server suites are required here: start the server ' +
          '(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set DATABASE_URL.',
      );
    }
    console.warn(
      'No PostgreSQL server answers: real-server suites are skipped (PGlite suites run).',
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  project.provide('realServerUrl', reachable ? url : null);
}

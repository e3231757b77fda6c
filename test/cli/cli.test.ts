import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { passwordsOf, redactSecrets } from '../../src/cli/redact.js';
import { latestControlVersion } from '../../src/control/control-migrations.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import {
  describeOnRealServer,
  dropSchemas,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

/** Runs the CLI in-process and collects what it printed. */
async function cli(argv: string[], env: Record<string, string | undefined> = {}) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runCli(argv, {
    stdout: (line) => stdout.push(line),
    stderr: (line) => stderr.push(line),
    env,
  });
  return { code, stdout: stdout.join('\n'), stderr: stderr.join('\n') };
}

const password = 's3cr3t-pw';

describe('the command line', () => {
  it('prints the usage and exits 2 for an unknown command, without echoing it', async () => {
    const result = await cli(['frobnicate', '--database-url', 'pglite://memory']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('error [USAGE]: unknown command');
    expect(result.stderr).toContain('Usage: pg-dual-read <command>');
    expect(result.stderr).not.toContain('frobnicate');
    expect(result.stdout).toBe('');
  });

  it('prints the usage and exits 2 when no command is given', async () => {
    const result = await cli([]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('Usage: pg-dual-read <command>');
  });

  it('prints the usage on stdout and exits 0 for help, --help and -h, without a database', async () => {
    for (const argv of [['help'], ['--help'], ['status', '-h']]) {
      const result = await cli(argv);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('start-dual-read');
      expect(result.stderr).toBe('');
    }
  });

  it('refuses an unknown option, an option the command does not take and a non-numeric --partitions', async () => {
    const unknown = await cli(['status', '--frobnicate']);
    expect(unknown).toMatchObject({ code: 2 });
    expect(unknown.stderr).toContain("Unknown option '--frobnicate'");

    const json = await cli(['install', '--json'], { DATABASE_URL: 'pglite://memory' });
    expect(json).toMatchObject({ code: 2 });
    expect(json.stderr).toContain('--json only applies to the status command');

    const partitions = await cli(['prepare', '--partitions', 'many'], {
      DATABASE_URL: 'pglite://memory',
    });
    expect(partitions).toMatchObject({ code: 2 });
    expect(partitions.stderr).toContain('--partitions must be a whole number');
  });

  it('exits 2 naming the way out when no database is given', async () => {
    const result = await cli(['status'], { DATABASE_URL: '' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('pass --database-url or set DATABASE_URL');
  });
});

describe('database passwords', () => {
  it('are never printed when connecting fails, the scheme is wrong or the URL is mistyped as a command', async () => {
    const refused = await cli(['status'], {
      DATABASE_URL: `postgres://demo:${password}@127.0.0.1:1/postgres`,
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error \[CONFIGURATION\]: Could not query the database/);

    const mysql = await cli(['install', '--database-url', `mysql://demo:${password}@db/app`]);
    expect(mysql.code).toBe(1);
    expect(mysql.stderr).toContain('error [CONFIGURATION]');

    const positional = await cli(['status', `postgres://demo:${password}@db/app`]);
    expect(positional.code).toBe(2);

    const asCommand = await cli([`postgres://demo:${password}@db/app`]);
    expect(asCommand.code).toBe(2);

    for (const result of [refused, mysql, positional, asCommand]) {
      expect(result.stdout + result.stderr).not.toContain(password);
    }
  });

  it('are removed from any text, raw or percent-decoded, inside a URL or on their own', () => {
    const url = 'postgres://app:p%40ss-w0rd@db/prod';
    const passwords = passwordsOf(url);
    expect(passwords).toEqual(['p%40ss-w0rd', 'p@ss-w0rd']);
    expect(redactSecrets(`cannot reach ${url}`, passwords)).toBe(
      'cannot reach postgres://app:***@db/prod',
    );
    expect(redactSecrets('auth failed for p@ss-w0rd', passwords)).toBe('auth failed for ***');
    expect(redactSecrets('see postgresql://x:y@h/d', [])).toBe('see postgresql://x:***@h/d');
    expect(passwordsOf('pglite:///tmp/data')).toEqual([]);
  });
});

// A memory PGlite lives in one process and each runCli opens its own database, so the
// lifecycle runs against a data directory. Every invocation starts PGlite (~3 s): a few only.
describe('the lifecycle on a PGlite data directory', () => {
  let dir: string;
  let url: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pg-dual-read-cli-'));
    url = `pglite://${dir}`;
    const db = await openDatabase(url);
    try {
      await createPostHogPersonsSchema(db, { schema: 'app' });
      await seedPersons(db, { schema: 'app', teamId: 1, count: 50 });
    } finally {
      await db.close();
    }
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('installs, refuses --partitions 1 naming partitions, prepares, starts dual read and reports dual_read as JSON', {
    timeout: 180_000,
  }, async () => {
    const env = { DATABASE_URL: url };
    const options = ['--schema', 'app'];

    const install = await cli(['install', ...options], env);
    expect(install).toMatchObject({ code: 0, stderr: '' });
    expect(install.stdout).toContain(`version 0 -> ${latestControlVersion}`);

    const badPartitions = await cli(['prepare', '--partitions', '1', ...options], env);
    expect(badPartitions.code).toBe(2);
    expect(badPartitions.stderr).toContain('error [INVALID_OPTIONS]');
    expect(badPartitions.stderr).toContain('partitions must be an integer from 2 to 1024');
    expect(badPartitions.stderr).toContain('check --partitions');

    const prepare = await cli(['prepare', '--partitions', '4', ...options], env);
    expect(prepare).toMatchObject({ code: 0, stderr: '' });
    expect(prepare.stdout).toContain('app.posthog_person_new: created, 4 hash partitions');
    expect(prepare.stdout).toContain('registered in phase old');

    const start = await cli(['start-dual-read', ...options], env);
    expect(start).toMatchObject({ code: 0, stderr: '' });
    expect(start.stdout).toContain('old -> dual_read (epoch 2)');

    // --database-url wins over DATABASE_URL.
    const status = await cli(['status', '--json', '--database-url', url, ...options], {
      DATABASE_URL: 'mysql://nowhere',
    });
    expect(status).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(status.stdout)).toMatchObject({
      name: 'persons',
      phase: 'dual_read',
      epoch: '2',
      oldTable: 'app.posthog_person',
      newTable: 'app.posthog_person_new',
      distinctIdsTable: 'app.posthog_persondistinctid',
      controlSchema: 'dual_read',
    });
  });
});

describeOnRealServer('the lifecycle on a PostgreSQL server', () => {
  const schema = uniqueSchemaName('cli');
  const controlSchema = uniqueSchemaName('cli_control');
  const options = ['--schema', schema, '--control-schema', controlSchema];
  let db: DatabaseHandle;
  let env: Record<string, string>;

  beforeAll(async () => {
    const url = realServerUrl();
    if (!url) throw new Error('no real server');
    env = { DATABASE_URL: url };
    db = await openDatabase(url);
    await createPostHogPersonsSchema(db, { schema, withForeignKey: true });
    await seedPersons(db, { schema, teamId: 1, count: 50 });
  });

  afterAll(async () => {
    if (!db) return;
    await dropSchemas(db, schema, controlSchema);
    await db.close();
  });

  it('reports a failed preflight with its fix (exit 1), then moves to dual_read once and refuses a second time', async () => {
    expect(await cli(['install', ...options], env)).toMatchObject({ code: 0 });

    const refused = await cli(['prepare', ...options], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('error [PREFLIGHT_FAILED]');
    expect(refused.stderr).toContain('[foreign_key_to_old_table]');
    expect(refused.stderr).toContain('fix: ALTER TABLE');

    await sql`ALTER TABLE ${sql.id(schema, 'posthog_persondistinctid')}
      DROP CONSTRAINT posthog_persondistinctid_person_id_fkey`.execute(db.db);
    expect(await cli(['prepare', ...options], env)).toMatchObject({ code: 0, stderr: '' });
    expect(await cli(['start-dual-read', ...options], env)).toMatchObject({ code: 0 });

    const again = await cli(['start-dual-read', ...options], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error \[PHASE_TRANSITION\]: .*already in dual_read/);

    const status = await cli(['status', ...options], env);
    expect(status).toMatchObject({ code: 0, stderr: '' });
    expect(status.stdout).toContain('phase         dual_read (epoch 2');
  });

  it('refuses a control schema name with the reserved pg_ prefix before touching the server', async () => {
    const result = await cli(['install', '--control-schema', 'pg_cli_reserved'], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('error [INVALID_OPTIONS]');
    expect(result.stderr).toContain('controlSchema must not start with pg_');
  });

  it('exits 1 with NOT_INSTALLED or a hint when the migration is not there', async () => {
    const result = await cli(
      ['status', '--schema', schema, '--control-schema', uniqueSchemaName('none')],
      env,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error \[(NOT_INSTALLED|QUERY_FAILED)\]/);
    expect(result.stderr).toMatch(/install/);
  });
});

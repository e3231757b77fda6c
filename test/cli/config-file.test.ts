import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCliConfig } from '../../src/cli/config-file.js';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { runCliInProcess } from '../support/cli.js';
import {
  describeOnRealServer,
  dropSchemas,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

const message = (content: string) => {
  try {
    parseCliConfig('pg-dual-read.json', content);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
};

describe('a CLI config file', () => {
  it('takes the tables, the migration name and command defaults', () => {
    const config = parseCliConfig(
      'c.json',
      JSON.stringify({
        databaseUrlEnv: 'PERSONS_DB',
        migration: { name: 'persons-2026', schema: 'app', oldTable: 'people' },
        backfill: { workers: 4, maxRowsPerSecond: 20_000 },
        verify: { method: 'checksum' },
        lifecycle: { actor: 'ops' },
      }),
    );
    expect(config.migration).toEqual({ name: 'persons-2026', schema: 'app', oldTable: 'people' });
    expect(config.backfill).toEqual({ workers: 4, maxRowsPerSecond: 20_000 });
  });

  it('names the field of an unknown field, a wrong type and a value the library refuses', () => {
    expect(message('{"migration": {"oldTabel": "x"}}')).toBe(
      'pg-dual-read.json: migration.oldTabel: unknown field (see pg-dual-read help for the fields a config file takes)',
    );
    expect(message('{"backfill": {"workers": "4"}}')).toMatch(
      /^pg-dual-read\.json: backfill\.workers: .*number/,
    );
    expect(message('{"backfill": {"workers": 100}}')).toMatch(
      /^pg-dual-read\.json: backfill\.workers: workers must be an integer from 1 to 64/,
    );
    expect(message('{"migration": {"newTable": "posthog_person"}}')).toMatch(
      /^pg-dual-read\.json: migration\./,
    );
    expect(message('[1, 2]')).toMatch(/^pg-dual-read\.json: \(top level\)/);
    expect(message('{ nope')).toBe('pg-dual-read.json: not valid JSON');
  });

  it('refuses a database URL anywhere in it, without echoing it', () => {
    const url = 'postgres://app:hunter2@db.internal:5432/app';
    for (const content of [
      { databaseUrl: url },
      { migration: { schema: url } },
      { verify: { columns: ['properties', url] } },
      { databaseUrlEnv: url },
    ]) {
      const text = message(JSON.stringify(content));
      expect(text).toBeDefined();
      expect(text).not.toContain('hunter2');
      expect(text).not.toContain('db.internal');
    }
    expect(message(JSON.stringify({ databaseUrl: url }))).toMatch(
      /databaseUrl: holds a database URL.*name it in "databaseUrlEnv"/,
    );
  });
});

describeOnRealServer('the CLI with --config on postgres', () => {
  const schema = uniqueSchemaName('cfg');
  const controlSchema = `${schema}_ctl`;
  const url = realServerUrl() ?? '';
  let dir: string;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pg-dual-read-config-'));
    handle = await openDatabase(url);
    await createPostHogPersonsSchema(handle, { schema });
    await seedPersons(handle, { schema, teamId: 1, count: 50 });
  });

  afterAll(async () => {
    await dropSchemas(handle, schema, controlSchema);
    await handle.close();
    await rm(dir, { recursive: true, force: true });
  });

  const writeConfig = async (name: string, content: unknown) => {
    const file = join(dir, name);
    await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
    return file;
  };
  const controlSchemaExists = async () =>
    (
      await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_namespace
        WHERE nspname = ${controlSchema}`.execute(handle.db)
    ).rows[0]?.n === 1;

  it('exits 2 naming the field of a bad file, and runs nothing', async () => {
    const file = await writeConfig('bad.json', {
      databaseUrlEnv: 'CFG_TEST_DB',
      migration: { schema, controlSchema },
      backfill: { workerz: 2 },
    });
    const result = await runCliInProcess(['install', '--config', file], '', { CFG_TEST_DB: url });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${file}: backfill.workerz: unknown field`);
    expect(await controlSchemaExists()).toBe(false);
  });

  it('exits 2 when the variable it names is not set, and runs nothing', async () => {
    const file = await writeConfig('unset.json', {
      databaseUrlEnv: 'CFG_TEST_DB_UNSET',
      migration: { schema, controlSchema },
    });
    const result = await runCliInProcess(['install', '--config', file], url);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('CFG_TEST_DB_UNSET is not set');
    expect(await controlSchemaExists()).toBe(false);
  });

  it('runs the commands with its tables and URL variable; flags override it', async () => {
    const file = await writeConfig('good.json', {
      databaseUrlEnv: 'CFG_TEST_DB',
      migration: { name: 'from-config', schema, controlSchema },
    });
    const env = { CFG_TEST_DB: url };
    const cli = (argv: string[]) => runCliInProcess(argv, '', env);
    expect((await cli(['install', '--config', file])).code).toBe(0);
    expect(await controlSchemaExists()).toBe(true);
    expect((await cli(['prepare', '--config', file])).code).toBe(0);
    const status = await cli(['status', '--json', '--config', file]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ name: 'from-config', phase: 'old' });
    // A flag wins over the file: no migration of that name was prepared.
    const other = await cli(['status', '--config', file, '--name', 'not-prepared']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('not-prepared');
  });
});

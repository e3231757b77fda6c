import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { expect, it } from 'vitest';
import { describeOnRealServer, realServerUrl, uniqueSchemaName } from './support/test-database.js';

const run = promisify(execFile);

describeOnRealServer('the quickstart example on postgres', () => {
  it('runs to the end and shows each read and write landing where the design says', async () => {
    const schema = uniqueSchemaName('demo');
    const url = realServerUrl() ?? '';
    try {
      const { stdout } = await run('npx', ['tsx', 'examples/quickstart/main.ts'], {
        env: { ...process.env, DATABASE_URL: url, DEMO_SCHEMA: schema },
        timeout: 60_000,
      });
      expect(stdout).toContain('[foreign_key_to_old_table]');
      expect(stdout).toContain('copied then updated in new [old: 1 row v0, new: 1 row v1]');
      expect(stdout).toMatch(/conflict on \[seed-3\], nothing written/);
      expect(stdout).toContain('gone from both [old: 0, new: 0]');
      expect(stdout).toContain('PhaseTransitionError [PHASE_TRANSITION]');
      expect(stdout).toMatch(/backfill\(\): copy the old rows/);
      expect(stdout).toMatch(/status: done, 100%, 0 to go/);
      expect(stdout).toMatch(
        /verify\(\): clean, \d+ old rows and \d+ new rows compared in Postgres, 0 mismatched keys/,
      );
      expect(stdout).toContain('cutover guards unmet: none');
      expect(stdout).toMatch(
        /rollback\(\): new -> dual_read; the update made in new is still read: version 1/,
      );
      expect(stdout).toContain(`the old one is kept as ${schema}.posthog_person_retired`);
      expect(stdout).toMatch(/now one table, .*posthog_person, \d+ rows/);
      // Personal-data hygiene: the generated e-mail addresses never reach the output.
      expect(stdout).not.toContain('@example.com');
    } finally {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "${schema}_control" CASCADE`);
      await client.end();
    }
  }, 90_000);

  it('the backfill example stops halfway, resumes and ends with every old row copied once', async () => {
    const schema = uniqueSchemaName('demo');
    const url = realServerUrl() ?? '';
    try {
      const { stdout } = await run('npx', ['tsx', 'examples/backfill/main.ts'], {
        env: { ...process.env, DATABASE_URL: url, DEMO_SCHEMA: schema, DEMO_PERSONS: '8000' },
        timeout: 60_000,
      });
      expect(stdout).toMatch(/stopped: aborted=true/);
      expect(stdout).toMatch(
        /resumed and finished: .* done, 8000 rows read in all, none twice \[old: 8000, new: 8000\]/,
      );
    } finally {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "${schema}_control" CASCADE`);
      await client.end();
    }
  }, 90_000);
  it('the prepare example shows the duplicate, the view and the DDL in a dry run, then creates the new table with the email index', async () => {
    const schema = uniqueSchemaName('demo');
    const url = realServerUrl() ?? '';
    try {
      const { stdout } = await run('npx', ['tsx', 'examples/prepare/main.ts'], {
        env: { ...process.env, DATABASE_URL: url, DEMO_SCHEMA: schema },
        timeout: 60_000,
      });
      expect(stdout).toContain('dry run: 1 problem(s), 1 warning(s), nothing changed');
      expect(stdout).toContain('problem [duplicate_keys_in_old]');
      expect(stdout).toContain('warning [view_reads_old_table]');
      expect(stdout).toContain("USING btree (((properties ->> 'email'::text)))");
      expect(stdout).toContain(`ids from ${schema}.person_ids_2019`);
      expect(stdout).toContain('indexes the new table lacks: none');
      expect(stdout).not.toContain('@example.com');
    } finally {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "${schema}_control" CASCADE`);
      await client.end();
    }
  }, 90_000);

  it('the verify example finds each planted key, repairs the copyable ones and stores the run', async () => {
    const schema = uniqueSchemaName('demo');
    const url = realServerUrl() ?? '';
    try {
      const { stdout } = await run('npx', ['tsx', 'examples/verify/main.ts'], {
        env: { ...process.env, DATABASE_URL: url, DEMO_SCHEMA: schema, DEMO_PERSONS: '3000' },
        timeout: 60_000,
      });
      expect(stdout).toContain('after the backfill: clean, 3000 old / 3000 new rows compared');
      for (const method of ['join', 'checksum']) {
        expect(stdout).toContain(`verify({ method: '${method}' }): NOT clean, 3 mismatched keys`);
      }
      expect(stdout.match(/missing_in_new team_id=1 id=\d+/g)).toHaveLength(2);
      expect(stdout.match(/older_in_new team_id=1 id=\d+/g)).toHaveLength(2);
      expect(stdout.match(/content_differs team_id=1 id=\d+/g)).toHaveLength(2);
      expect(stdout).toContain(
        'copied 1, updated 1; left for a person to decide: 1 (content_differs)',
      );
      expect(stdout).toMatch(
        /status\(\)\.verification: #\d+ mismatched, full=true, newer than the backfill=true/,
      );
      expect(stdout).not.toContain('@example.com');
    } finally {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "${schema}_control" CASCADE`);
      await client.end();
    }
  }, 90_000);
});

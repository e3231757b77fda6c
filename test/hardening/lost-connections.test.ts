/**
 * Issue 13, item 3: an error after a lost connection says whether the write happened.
 *
 * A proxy in front of the real server (test/support/cutting-proxy.ts) drops the connection at
 * a chosen point of a repository write: before a statement of the transaction reaches the
 * server (failed, nothing written: the error is that statement's, never a failed ROLLBACK's),
 * before COMMIT reaches it (rolled back) and after the server answered COMMIT (committed). In
 * the last two the client cannot tell, and says so: `OutcomeUnknownError`.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { statementTagText } from '../../src/db/statement-tag.js';
import { OutcomeUnknownError, QueryFailedError } from '../../src/errors.js';
import {
  createPersonsMigration,
  type PersonsMigration,
} from '../../src/migration/persons-migration.js';
import type { PersonsRepository } from '../../src/repository/persons-repository.js';
import { MigrationEnv } from '../support/concurrency.js';
import { type CuttingProxy, startCuttingProxy } from '../support/cutting-proxy.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

const isCommit = (text: string) => /^\s*commit\s*$/i.test(text);

describeOnRealServer('writes that lose their connection (real server, through a proxy)', () => {
  let env: MigrationEnv;
  let proxy: CuttingProxy;
  let handle: DatabaseHandle;
  let migration: PersonsMigration;
  let repo: PersonsRepository;
  let ids: string[];
  const teamId = 1302;

  beforeAll(async () => {
    env = await MigrationEnv.create('lost_conn');
    ids = await env.seed(teamId, 5, 'lc');
    await env.control.startDualRead();
    const url = new URL(realServerUrl() as string);
    proxy = await startCuttingProxy(
      { host: url.hostname, port: Number(url.port || 5432) },
      url.pathname.slice(1),
      decodeURIComponent(url.username),
    );
    handle = await openDatabase(proxy.url, { maxConnections: 2 });
    migration = createPersonsMigration({
      db: handle,
      schema: env.schema,
      controlSchema: env.controlSchema,
    });
    repo = migration.repository();
  });
  afterAll(async () => {
    await migration?.close();
    await handle?.close();
    await proxy?.close();
    await env?.close();
  });

  const stored = async (id: string) =>
    (await env.storedPersons('new', teamId, [id]))[0]?.properties ?? {};

  describe('a statement of the transaction lost', () => {
    it('throws that statement’s QueryFailedError (not a failed ROLLBACK’s), and nothing was written', async () => {
      proxy.cutOn((text) => text.includes(statementTagText('phase-fence')), 'before');
      const error = await repo
        .updatePerson(teamId, ids[0] as string, { properties: { lost: 'statement' } })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QueryFailedError);
      expect(error).not.toBeInstanceOf(OutcomeUnknownError);
      expect((error as QueryFailedError).sql).toContain('phase control');
      expect(proxy.cuts).toBe(1);
      expect(await stored(ids[0] as string)).not.toHaveProperty('lost');
      // The pool dropped the dead connection: the next write works.
      await expect(
        repo.updatePerson(teamId, ids[0] as string, { properties: { lost: 'no' } }),
      ).resolves.toMatchObject({ properties: { lost: 'no' } });
    });
  });

  describe('COMMIT sent, no answer', () => {
    it('lost before the server saw it: OutcomeUnknownError, and in fact nothing was written', async () => {
      proxy.cutOn(isCommit, 'before');
      const error = await repo
        .updatePerson(teamId, ids[1] as string, { properties: { lost: 'before-commit' } })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OutcomeUnknownError);
      expect((error as OutcomeUnknownError).code).toBe('OUTCOME_UNKNOWN');
      expect(await stored(ids[1] as string)).not.toHaveProperty('lost');
    });

    it('lost after the server committed: OutcomeUnknownError, and in fact the write is there', async () => {
      proxy.cutOn(isCommit, 'after-reply');
      const error = await repo
        .createPerson({ teamId, distinctIds: ['lc-after-commit'], properties: { lost: 'reply' } })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OutcomeUnknownError);
      await expect(repo.fetchPerson(teamId, 'lc-after-commit')).resolves.toMatchObject({
        properties: { lost: 'reply' },
      });
    });
  });

  describe('a backfill batch that loses its connection (no SQLSTATE)', () => {
    it('is retried, a batch committed without its answer included, and the backfill finishes', async () => {
      await env.seed(1303, 60, 'lcb');
      const retries: (string | undefined)[] = [];
      migration.events.on('backfill:retry', ({ sqlState }) => {
        retries.push(sqlState);
        // The second loss: the batch's COMMIT reaches the server, its answer does not.
        if (retries.length === 1) proxy.cutOn(isCommit, 'after-reply');
      });
      proxy.cutOn((text) => text.includes(statementTagText('backfill-batch')), 'before');
      const cutsBefore = proxy.cuts;
      const result = await migration.backfill({ workers: 1, batchSize: 10, targetBatchMs: 0 });
      expect(proxy.cuts - cutsBefore).toBe(2);
      expect(retries).toEqual([undefined, undefined]);
      expect(result).toMatchObject({ finished: true });
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM ${sql.id(env.schema, 'posthog_person_new')}
        WHERE team_id = 1303`.execute(env.admin.db);
      expect(rows[0]?.n).toBe(60);
    });
  });

  describe('a phase change whose COMMIT answer is lost', () => {
    it('throws OutcomeUnknownError; the phase did change (the operator re-reads status())', async () => {
      const other = await MigrationEnv.create('lost_phase');
      const operator = createPersonsMigration({
        db: handle,
        schema: other.schema,
        controlSchema: other.controlSchema,
      });
      try {
        proxy.cutOn(isCommit, 'after-reply');
        const error = await operator.startDualRead().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(OutcomeUnknownError);
        expect((await other.control.status()).phase).toBe('dual_read');
      } finally {
        await operator.close();
        await other.close();
      }
    });
  });
});

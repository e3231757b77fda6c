/**
 * Issue 13, item 10: a least-privilege runtime role. With exactly the grants of
 * `migration.runtimeGrants(role)` a service's repository, the backfill and verify run through
 * the whole of `old` and `dual_read`, while the role can neither change the phase (directly
 * or by locking the control row), nor pause, re-rate or reset the backfill, nor run DDL.
 * Before control migration 6, the phase fence (`FOR KEY SHARE` on the control row) needed
 * `UPDATE` on the control table: a role that could write persons could set the phase by hand.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import {
  createPersonsMigration,
  type PersonsMigration,
} from '../../src/migration/persons-migration.js';
import { runCliInProcess } from '../support/cli.js';
import { MigrationEnv } from '../support/concurrency.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

describeOnRealServer('a runtime role with runtimeGrants() only (real server)', () => {
  const role = `pgdr_runtime_${randomBytes(4).toString('hex')}`;
  const teamId = 1310;
  let env: MigrationEnv;
  let runtime: DatabaseHandle;
  let service: PersonsMigration;
  let ids: string[];

  beforeAll(async () => {
    env = await MigrationEnv.create('least_priv');
    ids = await env.seed(teamId, 40, 'lp');
    await sql`CREATE ROLE ${sql.id(role)} LOGIN`.execute(env.admin.db);
    for (const statement of await env.control.runtimeGrants(role)) {
      await sql.raw(statement).execute(env.admin.db);
    }
    const url = new URL(realServerUrl() as string);
    url.username = role;
    runtime = await openDatabase(url.toString(), { maxConnections: 3 });
    service = createPersonsMigration({
      db: runtime,
      schema: env.schema,
      controlSchema: env.controlSchema,
    });
  });
  afterAll(async () => {
    await service?.close();
    await runtime?.close();
    await env?.close();
    await sql`DROP OWNED BY ${sql.id(role)}`
      .execute((await openDatabase(realServerUrl() as string)).db)
      .catch(() => undefined);
  });

  const refused = async (statement: string) => {
    const error = await sql
      .raw(statement)
      .execute(runtime.db)
      .catch((e: unknown) => e);
    return (error as { code?: string }).code;
  };

  it('runs the repository in old and dual_read, the backfill and verify', async () => {
    const repo = service.repository();
    expect(await repo.createPerson({ teamId, distinctIds: ['lp-new-old'] })).toMatchObject({
      status: 'created',
    });
    await repo.updatePerson(teamId, ids[0] as string, { properties: { phase: 'old' } });
    await env.control.startDualRead();
    expect(
      await repo.createPerson({ teamId, distinctIds: ['lp-new-dual'], properties: { a: 1 } }),
    ).toMatchObject({ status: 'created' });
    await repo.updatePerson(teamId, ids[1] as string, { properties: { phase: 'dual_read' } });
    expect(await repo.addDistinctId(teamId, ids[2] as string, 'lp-extra')).toEqual({
      status: 'added',
    });
    expect(await repo.moveDistinctIds(teamId, ids[3] as string, ids[4] as string)).toMatchObject({
      status: 'moved',
    });
    expect(await repo.deletePerson(teamId, ids[3] as string)).toBe(true);
    expect(await service.backfill({ workers: 2, batchSize: 10, targetBatchMs: 0 })).toMatchObject({
      finished: true,
    });
    expect(await repo.deletePerson(teamId, ids[5] as string)).toBe(true);
    const verification = await service.verify();
    expect(verification).toMatchObject({ clean: true, full: true, mismatches: 0 });
  });

  it('cannot change the phase, steer the backfill, or run DDL', async () => {
    const control = `"${env.controlSchema}"`;
    expect(await refused(`UPDATE ${control}.migration SET phase = 'new'`)).toBe('42501');
    expect(await refused(`SELECT 1 FROM ${control}.migration FOR UPDATE`)).toBe('42501');
    expect(await refused(`SELECT 1 FROM ${control}.migration FOR KEY SHARE`)).toBe('42501');
    expect(await refused(`UPDATE ${control}.backfill SET paused = true`)).toBe('42501');
    expect(await refused(`UPDATE ${control}.backfill SET max_rows_per_second = 1`)).toBe('42501');
    expect(await refused(`DELETE FROM ${control}.backfill`)).toBe('42501');
    expect(await refused(`CREATE TABLE "${env.schema}".intruder (id int)`)).toBe('42501');
    expect(await refused(`DROP TABLE "${env.schema}".posthog_person_new`)).toBe('42501');
    expect(await refused(`ALTER TABLE "${env.schema}".posthog_person ADD COLUMN x int`)).toBe(
      '42501',
    );
    for (const call of [
      () => service.pauseBackfill(),
      () => service.setBackfillRate(10),
      () => service.resetBackfill(),
      () => service.startDualRead(),
    ]) {
      const error = await call().catch((e: unknown) => e);
      expect(error, String(call)).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42501' });
      expect((await service.status()).phase).toBe('dual_read');
    }
    const { rows } = await sql<{ paused: boolean; rate: number | null }>`
      SELECT paused, max_rows_per_second AS rate FROM ${sql.id(env.controlSchema, 'backfill')}`.execute(
      env.admin.db,
    );
    expect(rows[0]).toEqual({ paused: false, rate: null });
  });

  it('pg-dual-read grants --role prints the same statements; without --role it exits 2', async () => {
    const run = (argv: readonly string[]) => runCliInProcess(argv, realServerUrl() as string);
    const tables = ['--schema', env.schema, '--control-schema', env.controlSchema];
    const printed = await run(['grants', '--role', role, ...tables]);
    expect(printed.code).toBe(0);
    expect(printed.lines).toEqual(
      (await env.control.runtimeGrants(role)).map((statement) => `${statement};`),
    );
    const missing = await run(['grants', ...tables]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--role');
  });
});

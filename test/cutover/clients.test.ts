/**
 * Issue 14, the client registry: a repository registers on first use and heartbeats the epoch
 * it applied and its read counters; `status()` lists live instances and the fleet's fallback
 * rate; a live instance of an older protocol blocks the cutover (`old_clients`), a dead one
 * (no heartbeat) does not; `close()` removes the row. On PGlite and PostgreSQL 15.
 */

import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { TransitionRefusedError } from '../../src/errors.js';
import { createPersonsMigration } from '../../src/migration/persons-migration.js';
import { clientProtocol, libraryVersion } from '../../src/model/library-version.js';
import { waitUntil } from '../support/concurrency.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';

describe.each(availableBackends())('the client registry on %s', (backend) => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture;

  beforeAll(async () => {
    handle = await openBackend(backend);
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await fixture.drop();
  });

  it('registers on first use, shows the fleet, blocks the cutover while a live old client runs, forgets dead ones and closed ones', async () => {
    fixture = await createMigrationFixture(handle, { seed: 10, dualRead: true });
    const service = createPersonsMigration({
      db: handle,
      schema: fixture.schema,
      controlSchema: fixture.controlSchema,
      serviceName: 'ingestion',
      heartbeatIntervalMs: 1_000, // alive for 3 s: a loaded CI machine must not make it look dead
    });
    const repo = service.repository();
    expect(await repo.fetchPerson(1, 'seed-1')).toBeDefined(); // from the old table
    await waitUntil(
      async () => (await fixture.migration.status()).clients.live.length === 1,
      'the first heartbeat',
    );
    await waitUntil(
      async () => (await fixture.migration.status()).clients.fleet.rows > 0,
      'a heartbeat with the read counters',
    );
    const { clients } = await fixture.migration.status();
    expect(clients.live[0]).toMatchObject({
      service: 'ingestion',
      pid: process.pid,
      libraryVersion,
      protocol: clientProtocol,
      phase: 'dual_read',
    });
    expect(clients.fleet).toMatchObject({ reads: 1, rows: 1, oldRows: 1, fallbackRate: 1 });

    await fixture.migration.backfill({ workers: 1 });
    await fixture.migration.verify();
    const table = sql.id(fixture.controlSchema, 'client');
    const oldClient = (id: string, heartbeat: string) =>
      sql`INSERT INTO ${table} (migration, instance_id, service, host, pid, library_version,
          protocol, phase, epoch, heartbeat_interval_ms, last_heartbeat)
        VALUES ('persons', ${id}, 'legacy', 'host-9', 9, '0.0.9', 1, 'dual_read', 2, 60000,
          now() - ${heartbeat}::interval)`.execute(handle.db);
    await oldClient('dead', '1 hour'); // no heartbeat for an hour: dead, ignored
    await oldClient('live', '1 second');
    const error = await fixture.migration.cutover().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransitionRefusedError);
    expect((error as TransitionRefusedError).unmet.map((g) => g.guard)).toEqual(['old_clients']);
    expect((error as TransitionRefusedError).message).toContain('legacy on host-9 (pid 9, 0.0.9)');
    await sql`DELETE FROM ${table} WHERE instance_id = 'live'`.execute(handle.db);
    await expect(fixture.migration.cutover()).resolves.toMatchObject({ phase: 'new' });

    await service.close();
    expect((await fixture.migration.status()).clients.live).toEqual([]);
  });
});

it('libraryVersion is package.json version', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  expect(libraryVersion).toBe(pkg.version);
});

import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { createPersonsMigration, PhaseTransitionError } from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import {
  availableBackends,
  describeOnRealServer,
  openBackend,
  openDatabaseForTest,
} from '../support/test-database.js';

describe.each(availableBackends())('phase changes on %s', (backend) => {
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

  it('startDualRead() moves old -> dual_read, increments the epoch and records the change', async () => {
    fixture = await createMigrationFixture(handle, { seed: 1 });
    const before = await fixture.migration.status();
    expect(before).toMatchObject({ phase: 'old', epoch: '1' });
    const after = await fixture.migration.startDualRead();
    expect(after).toMatchObject({ phase: 'dual_read', epoch: '2' });
    const status = await fixture.migration.status();
    expect(status.phase).toBe('dual_read');
    expect(status.phaseChangedAt.getTime()).toBeGreaterThanOrEqual(before.phaseChangedAt.getTime());
    const history = await sql<{ from_phase: string; to_phase: string; epoch: string }>`
      SELECT from_phase, to_phase, epoch::text AS epoch
      FROM ${sql.id(fixture.controlSchema, 'phase_change')}`.execute(handle.db);
    expect(history.rows).toEqual([{ from_phase: 'old', to_phase: 'dual_read', epoch: '2' }]);
  });

  it('a transition out of order throws a typed error and changes nothing', async () => {
    fixture = await createMigrationFixture(handle, { seed: 1, dualRead: true });
    const error = await fixture.migration.startDualRead().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PhaseTransitionError);
    expect(error).toMatchObject({ code: 'PHASE_TRANSITION', from: 'dual_read', to: 'dual_read' });
    expect((error as Error).message).toContain('nothing was changed');
    expect(await fixture.migration.status()).toMatchObject({ phase: 'dual_read', epoch: '2' });
    await fixture.forcePhase('new');
    const fromNew = await fixture.migration.startDualRead().catch((e: unknown) => e);
    expect(fromNew).toMatchObject({ code: 'PHASE_TRANSITION', from: 'new' });
    expect(await fixture.migration.status()).toMatchObject({ phase: 'new', epoch: '3' });
  });

  it('another instance of the same migration learns the change through its next read', async () => {
    fixture = await createMigrationFixture(handle, { seed: 2 });
    const other = createPersonsMigration({
      db: handle,
      schema: fixture.schema,
      controlSchema: fixture.controlSchema,
      phaseRefreshIntervalMs: 600_000,
    });
    try {
      const retries: string[] = [];
      other.events.on('read:phase-retry', ({ from, to }) => retries.push(`${from}->${to}`));
      expect(await other.repository().fetchPerson(1, 'seed-1')).toMatchObject({ version: 0 });
      await fixture.migration.startDualRead();
      await fixture.migration
        .repository()
        .updatePerson(1, fixture.seededIds[0] ?? '', { isIdentified: true });
      expect(await other.repository().fetchPerson(1, 'seed-1')).toMatchObject({ version: 1 });
      expect((await other.currentPhase()).phase).toBe('dual_read');
      // LISTEN may have told `other` first; either way no stale answer was returned.
      expect(retries.every((r) => r === 'old->dual_read')).toBe(true);
    } finally {
      await other.close();
    }
  });
});

describeOnRealServer('phase change notifications on postgres', () => {
  let fixture: MigrationFixture;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    handle = await openDatabaseForTest();
    fixture = await createMigrationFixture(handle, { seed: 1 });
  });
  afterAll(async () => {
    await fixture.drop();
    await handle.close();
  });

  it('an idle instance on another connection learns a phase change through NOTIFY well within the refresh interval', async () => {
    const otherHandle = await openDatabaseForTest(2);
    const other = createPersonsMigration({
      db: otherHandle,
      schema: fixture.schema,
      controlSchema: fixture.controlSchema,
      phaseRefreshIntervalMs: 600_000,
    });
    try {
      expect((await other.currentPhase()).phase).toBe('old');
      const learnt = new Promise<number>((resolve) => {
        other.events.on('phase:changed', ({ phase }) => {
          if (phase === 'dual_read') resolve(Date.now());
        });
      });
      const changedAt = Date.now();
      await fixture.migration.startDualRead();
      const at = await Promise.race([
        learnt,
        new Promise<number>((_, reject) =>
          setTimeout(() => reject(new Error('not notified in 5 s')), 5_000),
        ),
      ]);
      expect(at - changedAt).toBeLessThan(5_000);
    } finally {
      await other.close();
      await otherHandle.close();
    }
  });
});

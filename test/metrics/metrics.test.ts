import { metrics } from '@opentelemetry/api';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  createPersonsMigration,
  DualReadEmitter,
  metricDefinitions,
  mismatchClasses,
  phases,
  UuidTakenError,
} from '../../src/index.js';
import { MigrationMetrics } from '../../src/metrics/migration-metrics.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { describeOnRealServer, openDatabaseForTest } from '../support/test-database.js';
import { inMemoryMetrics, type MetricsSnapshot } from './metric-reader.js';

const m = Object.fromEntries(
  Object.entries(metricDefinitions).map(([key, def]) => [key, def.name]),
) as { readonly [K in keyof typeof metricDefinitions]: string };

describeOnRealServer('OpenTelemetry metrics of a migration on postgres', () => {
  let handle: DatabaseHandle;
  let fixture: MigrationFixture | undefined;
  let telemetry: ReturnType<typeof inMemoryMetrics>;

  beforeAll(async () => {
    handle = await openDatabaseForTest();
  });
  afterAll(async () => {
    await handle.close();
  });
  afterEach(async () => {
    await fixture?.drop();
    fixture = undefined;
    await telemetry?.shutdown();
    metrics.disable();
  });

  /** Waits until every sampled shadow read has ended (they run after the caller's read). */
  async function shadowReadsSettled(f: MigrationFixture): Promise<void> {
    for (;;) {
      const { sampled, matched, mismatched, failed, skipped } = f.migration.repository().readStats()
        .totals.shadow;
      if (matched + mismatched + failed + skipped === sampled) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  function phaseGauges(snapshot: MetricsSnapshot): Record<string, number | undefined> {
    return Object.fromEntries(
      phases.map((phase) => [phase, snapshot.gauge(m.phase, { migration: 'persons', phase })]),
    );
  }

  it('a small migration records every documented metric with its attributes and plausible values', async () => {
    telemetry = inMemoryMetrics();
    const f = await createMigrationFixture(handle, {
      seed: 20,
      meterProvider: telemetry.provider,
      shadowReads: { sampleRate: 1, timeoutMs: 5_000 },
    });
    fixture = f;
    const repo = f.migration.repository();
    const persons = { migration: 'persons' };

    // Phase old: every person comes from the old table; the gauges show phase old.
    expect(await repo.fetchPerson(1, 'seed-1')).toBeDefined();
    let s = await telemetry.collect();
    expect(s.sum(m.readPersons, { method: 'fetchPerson', source: 'old' })).toBe(1);
    expect(s.sum(m.readPersons, { source: 'new' })).toBe(0);
    expect(phaseGauges(s)).toEqual({ old: 1, dual_read: 0, new: 0, finalized: 0 });
    const oldEpoch = s.gauge(m.epoch, persons);
    expect(oldEpoch).toBeGreaterThan(0);

    // dual_read before the backfill: the merged reads fall back to the old table.
    await f.migration.startDualRead();
    s = await telemetry.collect();
    expect(phaseGauges(s)).toEqual({ old: 0, dual_read: 1, new: 0, finalized: 0 });
    expect(s.gauge(m.epoch, persons)).toBe((oldEpoch ?? 0) + 1);
    const pairs = [1, 2, 3, 4, 5].map((n) => ({ teamId: 1, distinctId: `seed-${n}` }));
    expect(await repo.fetchPersonsByDistinctIds(pairs)).toHaveLength(5);
    await shadowReadsSettled(f);
    s = await telemetry.collect();
    expect(s.sum(m.readPersons, { method: 'fetchPersonsByDistinctIds', source: 'old' })).toBe(5);
    expect(s.sum(m.readPersons, { method: 'fetchPersonsByDistinctIds', source: 'new' })).toBe(0);
    // The shadow read finds the 5 persons missing in the new table (not copied yet).
    expect(s.sum(m.readShadowMismatches, { method: 'fetchPersonsByDistinctIds' })).toBe(5);

    // Writes: durations per method, with the outcome.
    const [first, second] = f.seededIds;
    expect(await repo.updatePerson(1, first ?? '', { properties: { plan: 'paid' } })).toBeDefined();
    expect(await repo.createPerson({ teamId: 1, distinctIds: ['fresh-1'] })).toMatchObject({
      status: 'created',
    });
    // A conflict is an answer, not an error.
    expect(await repo.createPerson({ teamId: 1, distinctIds: ['seed-3'] })).toMatchObject({
      status: 'conflict',
    });
    // A uuid an old person has is taken: createPerson throws, nothing written.
    const { rows } = await sql<{ uuid: string }>`SELECT uuid::text AS uuid FROM ${f.oldTable()}
      WHERE id = ${second}::bigint`.execute(handle.db);
    await expect(
      repo.createPerson({ teamId: 1, uuid: rows[0]?.uuid ?? '', distinctIds: ['taken'] }),
    ).rejects.toBeInstanceOf(UuidTakenError);
    s = await telemetry.collect();
    expect(s.histogram(m.writeDuration, { method: 'createPerson', outcome: 'ok' }).count).toBe(2);
    expect(s.histogram(m.writeDuration, { method: 'updatePerson', outcome: 'ok' }).count).toBe(1);
    expect(s.histogram(m.writeDuration, { method: 'createPerson', outcome: 'error' }).count).toBe(
      1,
    );
    expect(s.histogram(m.writeDuration, { outcome: 'error' }).count).toBe(1);
    expect(s.histogram(m.writeDuration).count).toBe(4);
    const writes = s.histogram(m.writeDuration);
    // Seconds, not milliseconds: four writes on a local server take well under a minute.
    expect(writes.sum).toBeGreaterThan(0);
    expect(writes.sum).toBeLessThan(60);

    // The backfill: the rows counted are the rows backfill() reports.
    const result = await f.migration.backfill({ workers: 2, batchSize: 5 });
    expect(result.finished).toBe(true);
    s = await telemetry.collect();
    expect(s.sum(m.backfillRows, { kind: 'scanned' })).toBe(result.rowsScanned);
    expect(s.sum(m.backfillRows, { kind: 'copied' })).toBe(result.rowsCopied);
    expect(result.rowsCopied).toBe(19); // 20 seeded, one copied earlier by updatePerson
    expect(s.histogram(m.backfillBatchDuration, persons).count).toBe(result.batches);
    expect(s.gauge(m.backfillProgress, persons)).toBe(1);
    expect(s.gauge(m.backfillEta, persons)).toBe(0);
    expect(s.gauge(m.backfillRate, persons)).toBeGreaterThanOrEqual(0);

    // After the backfill, the same reads come from the new table.
    expect(await repo.fetchPersonsByDistinctIds(pairs)).toHaveLength(5);
    await shadowReadsSettled(f);
    s = await telemetry.collect();
    expect(s.sum(m.readPersons, { method: 'fetchPersonsByDistinctIds', source: 'new' })).toBe(5);
    expect(s.sum(m.readPersons, { method: 'fetchPersonsByDistinctIds', source: 'old' })).toBe(5);
    expect(s.sum(m.readShadowMismatches)).toBe(5);

    // A verification finds the planted mismatches, by class.
    await sql`DELETE FROM ${f.newTable()} WHERE id = ${f.seededIds[5]}::bigint`.execute(handle.db);
    await sql`UPDATE ${f.newTable()} SET properties = properties || '{"planted": true}'
      WHERE id = ${f.seededIds[6]}::bigint`.execute(handle.db);
    const verification = await f.migration.verify({ settleMs: 0 });
    expect(verification.counts).toMatchObject({ missing_in_new: 1, content_differs: 1 });
    s = await telemetry.collect();
    for (const cls of mismatchClasses) {
      expect(s.sum(m.verifyMismatches, { class: cls }), cls).toBe(verification.counts[cls] ?? 0);
    }

    // The phase gauges follow a phase change; reads now all come from the new table.
    await f.migration.cutover({ force: true, actor: 'test:metrics' });
    s = await telemetry.collect();
    expect(phaseGauges(s)).toEqual({ old: 0, dual_read: 0, new: 1, finalized: 0 });
    expect(s.gauge(m.epoch, persons)).toBe((oldEpoch ?? 0) + 2);
    const before = s.sum(m.readPersons, { method: 'fetchPerson', source: 'new' });
    expect(await repo.fetchPerson(1, 'seed-2')).toBeDefined();
    s = await telemetry.collect();
    expect(s.sum(m.readPersons, { method: 'fetchPerson', source: 'new' })).toBe(before + 1);

    // Every documented metric is there, with exactly the documented attributes and unit.
    for (const def of Object.values(metricDefinitions)) {
      expect(s.metrics.get(def.name)?.unit, def.name).toBe(def.unit);
      expect(s.attributeNames(def.name), def.name).toEqual([...def.attributes].sort());
    }
    // Attribute values are names from the library's vocabulary, never row values.
    const values = [...s.metrics.values()].flatMap((metric) =>
      metric.points.flatMap((p) => Object.values(p.attributes).map(String)),
    );
    for (const value of values) expect(value).toMatch(/^[a-zA-Z_]+$/);
  }, 60_000);

  it('a closed migration records nothing more', async () => {
    telemetry = inMemoryMetrics();
    const f = await createMigrationFixture(handle, { seed: 3, meterProvider: telemetry.provider });
    fixture = f;
    await f.migration.repository().updatePerson(1, f.seededIds[0] ?? '', { properties: {} });
    expect((await telemetry.collect()).histogram(m.writeDuration).count).toBe(1);
    await f.migration.close();
    // The library's own events no longer reach the instruments.
    f.migration.events.emit('write:done', { method: 'updatePerson', ms: 1, ok: true });
    expect((await telemetry.collect()).histogram(m.writeDuration).count).toBe(1);
  });

  it('without an SDK nothing is recorded and everything works (the no-op path)', async () => {
    telemetry = inMemoryMetrics(); // an SDK that is neither passed nor installed globally
    expect(
      MigrationMetrics.attach(metrics.getMeterProvider(), 'x', new DualReadEmitter()).enabled,
    ).toBe(false);
    const f = await createMigrationFixture(handle, { seed: 10, dualRead: true });
    fixture = f;
    const repo = f.migration.repository();
    expect(await repo.fetchPerson(1, 'seed-1')).toBeDefined();
    expect(await repo.createPerson({ teamId: 1, distinctIds: ['fresh'] })).toMatchObject({
      status: 'created',
    });
    expect(await f.migration.backfill()).toMatchObject({ finished: true, rowsCopied: 10 });
    expect((await f.migration.verify()).clean).toBe(true);
    expect((await telemetry.collect()).metrics.size).toBe(0);
  });

  it('the global MeterProvider is used when no meterProvider is given', async () => {
    telemetry = inMemoryMetrics();
    metrics.setGlobalMeterProvider(telemetry.provider);
    const f = await createMigrationFixture(handle, { seed: 4, dualRead: true });
    fixture = f;
    await f.migration
      .repository()
      .fetchPersonsByPersonIds(f.seededIds.map((personId) => ({ teamId: 1, personId })));
    const s = await telemetry.collect();
    expect(s.sum(m.readPersons, { method: 'fetchPersonsByPersonIds', source: 'old' })).toBe(4);
  });

  it('a meterProvider that is not one is refused, naming the option', () => {
    expect(() => createPersonsMigration({ db: handle, meterProvider: {} as never })).toThrow(
      /meterProvider must be an OpenTelemetry MeterProvider/,
    );
  });
});

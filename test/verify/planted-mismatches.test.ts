/**
 * Proof that `verify()` names every mismatched key with its class, and nothing else: tables of
 * 10,000 persons, backfilled, then one person of each kind of mismatch planted (and
 * differences that must not count: JSON keys in another order, in a `jsonb` and in a `json`
 * column, and a timestamp written in another time zone for the same instant). Both methods:
 * the one-pass join and checksum-and-bisect (leaves small enough that bisection goes deep).
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import type { VerifyOptions } from '../../src/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';
import { availableBackends, openBackend } from '../support/test-database.js';
import {
  inStoredRange,
  key,
  type Planted,
  plantEveryKind,
  type ReportedKey,
  type StoredRange,
  storedRanges,
  streamed,
} from './verify-support.js';

/** The two methods, set up so that both really cut the key space into small ranges. */
const methods: Record<'join' | 'checksum', VerifyOptions> = {
  join: { method: 'join', chunkRows: 1_000, settleMs: 0 },
  // Chunks of 1,000 keys, each differing one cut in 4 down to leaves of at most 16 keys.
  checksum: { method: 'checksum', chunkRows: 1_000, leafRows: 16, fanout: 4, settleMs: 0 },
};
const methodNames = Object.keys(methods) as (keyof typeof methods)[];
/** Ranges halved again and again down to single keys. */
const deepChecksum: VerifyOptions = { method: 'checksum', leafRows: 1, fanout: 2, settleMs: 0 };

const countsOf = (keys: readonly ReportedKey[]) => {
  const counts: Record<string, number> = {};
  for (const k of keys) counts[k.class] = (counts[k.class] ?? 0) + 1;
  return counts;
};

describe.each(availableBackends())('verify() of planted mismatches on %s', (backend) => {
  let handle: DatabaseHandle;
  let planted: Planted;
  // The checksum variants of the option tests (columns, ranges) run on one backend: the real
  // server when there is one. Their SQL is the same on PGlite, which runs them 3-5x slower.
  const optionMethods = backend === availableBackends().at(-1) ? methodNames : ['join' as const];

  beforeAll(async () => {
    handle = await openBackend(backend);
    planted = await plantEveryKind(handle, { ranges: 4 });
  }, 120_000);

  afterAll(async () => {
    await planted?.f.drop();
    await handle?.close();
  });

  it.each(methodNames)(
    'reports each planted key with its exact key and class and nothing else, with %s',
    async (name) => {
      const options = methods[name];
      const result = await planted.f.migration.verify(options);
      expect(result.keys).toEqual(planted.expected);
      expect(result).toMatchObject({
        clean: false,
        method: options.method,
        full: true,
        mismatches: 8,
        truncated: false,
        oldRows: 9_998,
        newRows: 9_998,
        repair: undefined,
      });
      // 9,998 persons in both tables, minus the missing, stale and 4 changed ones.
      expect(result.counts).toEqual({ same: 9_992, ...planted.expectedCounts });
      expect(await streamed(planted.f.migration, result.id)).toEqual(planted.expected);
    },
  );

  it('checksums bisected down to single keys name exactly the planted keys of the range checked', async () => {
    const [first] = await storedRanges(planted.f);
    if (!first) throw new Error('no backfill range');
    const inside = planted.expected.filter((k) => inStoredRange(first, k));
    expect(inside.map((k) => k.personId)).toEqual([
      planted.missing,
      planted.stale,
      planted.changed,
    ]);
    const result = await planted.f.migration.verify({ ...deepChecksum, ranges: [first.rangeId] });
    expect(result.keys).toEqual(inside);
    expect(result.counts).toEqual({
      same: result.oldRows - 3,
      missing_in_new: 1,
      older_in_new: 1,
      content_differs: 1,
    });
  });

  it('JSON keys in another order and a timestamp written in another time zone do not count, though the stored texts differ', async () => {
    const { f } = planted;
    const db = handle.db;
    const { rows } = await sql<{
      id: string;
      old_extra: string;
      new_extra: string;
      old_properties: string;
      new_properties: string;
      same_instant: boolean;
    }>`
      SELECT o.id::text AS id, o.extra::text AS old_extra, n.extra::text AS new_extra,
        o.properties::text AS old_properties, n.properties::text AS new_properties,
        o.created_at = n.created_at AS same_instant
      FROM ${f.oldTable()} AS o JOIN ${f.newTable()} AS n ON n.team_id = o.team_id AND n.id = o.id
      WHERE o.id = ANY(${[planted.jsonReordered, planted.sameInstant, planted.reordered]}::bigint[])
      ORDER BY o.id`.execute(db);
    const [reordered, jsonReordered, sameInstant] = rows;
    // jsonb normalises key order: the rewrite stored the same value (and must not count).
    expect(reordered?.new_properties).toBe(reordered?.old_properties);
    // A json column keeps its text: the two rows really differ as text, not as JSON.
    expect(jsonReordered?.new_extra).not.toBe(jsonReordered?.old_extra);
    expect(JSON.parse(jsonReordered?.new_extra ?? 'null')).toEqual(
      JSON.parse(jsonReordered?.old_extra ?? 'null'),
    );
    expect(sameInstant?.same_instant).toBe(true);

    // The checksum run is limited to the backfill range holding both json rows (run time).
    const second = (await storedRanges(f))[1] as StoredRange;
    expect(inStoredRange(second, { teamId: 1, personId: planted.jsonReordered })).toBe(true);
    expect(inStoredRange(second, { teamId: 1, personId: planted.jsonChanged })).toBe(true);
    for (const name of optionMethods) {
      const onlyExtra = await f.migration.verify({
        ...methods[name],
        columns: ['extra'],
        ...(name === 'checksum' ? { ranges: [second.rangeId] } : {}),
      });
      const contentKeys = onlyExtra.keys.filter((k) => k.class === 'content_differs');
      expect(contentKeys, name).toEqual([key(1, planted.jsonChanged, 'content_differs')]);
    }
  });

  it.each(optionMethods)('with columns, compares only those columns (%s)', async (name) => {
    const cases: [string[], string[]][] = [
      [
        ['is_identified', 'created_at'],
        [planted.instantChanged, planted.team2Changed],
      ],
    ];
    if (name === 'join') cases.push([['properties'], [planted.changed]]);
    // The checksum runs are limited to the backfill ranges 2 and 4 (run time).
    const ranges = await storedRanges(planted.f);
    const checked = name === 'checksum' ? [2, 4] : [1, 2, 3, 4];
    const inChecked = (k: ReportedKey) =>
      ranges.some((r) => checked.includes(r.rangeId) && inStoredRange(r, k));
    for (const [columns, changed] of cases) {
      const result = await planted.f.migration.verify({
        ...methods[name],
        columns,
        ...(name === 'checksum' ? { ranges: checked } : {}),
      });
      expect(result.keys, columns.join()).toEqual(
        planted.expected.filter(
          (k) => inChecked(k) && (k.class !== 'content_differs' || changed.includes(k.personId)),
        ),
      );
      expect(result.columns).toEqual(columns);
      expect(result.counts.content_differs, columns.join()).toBe(changed.length);
      expect((await planted.f.migration.verification())?.columns).toEqual(columns);
    }
  });

  it.each(optionMethods)(
    'with ranges, checks exactly the keys of the given backfill ranges (%s)',
    async (name) => {
      const ranges = await storedRanges(planted.f);
      expect(ranges.map((r) => r.rangeId)).toEqual([1, 2, 3, 4]);
      let oldRows = 0;
      let newRows = 0;
      const seen: ReportedKey[] = [];
      for (const range of ranges) {
        const result = await planted.f.migration.verify({
          ...methods[name],
          ...(name === 'checksum' ? { leafRows: 100, fanout: 8 } : {}),
          ranges: [range.rangeId],
        });
        const inside = planted.expected.filter((k) => inStoredRange(range, k));
        expect(result.keys, `range ${range.rangeId}`).toEqual(inside);
        expect(result.full).toBe(false);
        oldRows += result.oldRows;
        newRows += result.newRows;
        seen.push(...result.keys);
        const stored = await planted.f.migration.verification();
        expect(stored).toMatchObject({
          id: result.id,
          full: false,
          range: `backfill ranges ${range.rangeId}`,
        });
      }
      // The ranges cover every key exactly once: no key lost or counted twice at their edges.
      expect(oldRows).toBe(9_998);
      expect(newRows).toBe(9_998);
      expect(seen).toEqual(planted.expected);
      if (name === 'checksum') return; // two ranges at once: with the join only (run time)
      const [first, , third] = ranges as [StoredRange, StoredRange, StoredRange];
      const two = await planted.f.migration.verify({ ...methods[name], ranges: [3, 1] });
      expect(two.keys).toEqual(
        planted.expected.filter((k) => inStoredRange(first, k) || inStoredRange(third, k)),
      );
      expect(two.keys.length).toBeGreaterThan(0);
      expect(two.keys.length).toBeLessThan(planted.expected.length);
    },
  );

  it('mismatches() streams every key in key order across pages when there are more than maxKeys', async () => {
    const { migration } = planted.f;
    const result = await migration.verify({ ...methods.join, maxKeys: 3 });
    expect(result.keys).toEqual(planted.expected.slice(0, 3));
    expect(result.truncated).toBe(true);
    expect(result.mismatches).toBe(8);
    for (const pageSize of [1, 2, 3, 1_000]) {
      expect(await streamed(migration, result.id, { pageSize }), `pageSize ${pageSize}`).toEqual(
        planted.expected,
      );
    }
    expect(countsOf(planted.expected)).toEqual(planted.expectedCounts);
    const none = await migration.verify({ ...methods.join, maxKeys: 0 });
    expect(none).toMatchObject({ keys: [], truncated: true, mismatches: 8 });
    expect(await streamed(migration, none.id, { pageSize: 4 })).toEqual(planted.expected);
  });

  it('stores each run: verification() and status().verification show the latest, verification(id) an earlier one', async () => {
    const { migration } = planted.f;
    const first = await migration.verify({ ...methods.checksum, ranges: [4] });
    // Defaults: join, re-checks after 500 ms; real mismatches survive the re-check.
    const latest = await migration.verify();
    expect(latest.rechecks).toBeGreaterThanOrEqual(1);
    expect(latest.keys).toEqual(planted.expected);
    const stored = await migration.verification();
    expect(stored).toMatchObject({
      id: latest.id,
      method: 'join',
      status: 'mismatched',
      full: true,
      range: 'every key',
      columns: latest.columns,
      oldRows: 9_998,
      newRows: 9_998,
      counts: latest.counts,
      mismatches: 8,
      newerThanBackfill: true,
    });
    expect(stored?.finishedAt?.getTime()).toBeGreaterThanOrEqual(stored?.startedAt.getTime() ?? 0);
    expect((await migration.status()).verification).toEqual(stored);
    expect(await migration.verification(first.id)).toMatchObject({
      id: first.id,
      method: 'checksum',
      status: 'mismatched',
      full: false,
      range: 'backfill ranges 4',
      counts: first.counts,
      mismatches: first.mismatches,
    });
    expect(first.mismatches).toBeGreaterThan(0);
    expect(Number(latest.id)).toBeGreaterThan(Number(first.id));
  });

  it('before the backfill every old key is missing_in_new (all 2,500 named); after it the run is clean and newer than the backfill', async () => {
    const f = await createMigrationFixture(handle, { seed: 2_500, dualRead: true });
    try {
      const allMissing = f.seededIds.map((id) => key(1, id, 'missing_in_new'));
      expect(allMissing[9]?.personId).toBe('10'); // ids 1..2,500: text order would differ
      const before: string[] = [];
      // Checksums with the default leaves: a table of missing keys is all leaves anyway.
      const wholeTable: Record<string, VerifyOptions> = {
        join: methods.join,
        checksum: { method: 'checksum', settleMs: 0 },
      };
      for (const [name, options] of Object.entries(wholeTable)) {
        const result = await f.migration.verify(options);
        expect(result, name).toMatchObject({
          clean: false,
          mismatches: 2_500,
          oldRows: 2_500,
          newRows: 0,
          counts: { missing_in_new: 2_500 },
          truncated: true,
        });
        expect(Object.keys(result.counts), name).toEqual(['missing_in_new']);
        expect(result.keys, name).toEqual(allMissing.slice(0, 1_000));
        expect(await streamed(f.migration, result.id, { pageSize: 777 }), name).toEqual(allMissing);
        before.push(result.id);
      }
      expect(await f.migration.verification()).toMatchObject({
        status: 'mismatched',
        newerThanBackfill: false,
      });

      await f.migration.backfill();
      for (const [name, options] of Object.entries(wholeTable)) {
        const result = await f.migration.verify(options);
        expect(result, name).toMatchObject({
          clean: true,
          mismatches: 0,
          keys: [],
          truncated: false,
          counts: { same: 2_500 },
          oldRows: 2_500,
          newRows: 2_500,
        });
        expect(await streamed(f.migration, result.id)).toEqual([]);
        expect(await f.migration.verification()).toMatchObject({
          id: result.id,
          status: 'clean',
          full: true,
          mismatches: 0,
          newerThanBackfill: true,
        });
      }
      // A run from before the backfill is not newer than it.
      expect(await f.migration.verification(before[0])).toMatchObject({
        status: 'mismatched',
        newerThanBackfill: false,
      });
    } finally {
      await f.drop();
    }
  });
  describe('the two methods agree on what counts as the same JSON', () => {
    let f: MigrationFixture;
    let ids: string[];
    beforeAll(async () => {
      f = await createMigrationFixture(handle, { seed: 200, dualRead: true });
      await f.migration.backfill();
      ids = f.seededIds;
    });
    afterAll(async () => {
      await f?.drop();
    });

    it.each(methodNames)(
      'a JSON number written with another scale (1.5 and 1.50) is the same JSON and not a mismatch (%s)',
      async (name) => {
        const [a, b] = [ids[50], ids[150]] as [string, string];
        await sql`UPDATE ${f.oldTable()} SET properties = properties || '{"score": 1.5, "n2": 2}'
        WHERE id = ANY(${[a, b]}::bigint[])`.execute(handle.db);
        await sql`UPDATE ${f.newTable()} SET properties = properties || '{"score": 1.50, "n2": 2.0}'
        WHERE id = ANY(${[a, b]}::bigint[])`.execute(handle.db);
        const { rows } = await sql<{ equal: boolean; same_text: boolean }>`
        SELECT o.properties = n.properties AS equal, o.properties::text = n.properties::text AS same_text
        FROM ${f.oldTable()} AS o JOIN ${f.newTable()} AS n ON n.id = o.id WHERE o.id = ${a}::bigint`.execute(
          handle.db,
        );
        try {
          // Postgres itself says the values are equal; only their text differs.
          expect(rows[0]).toEqual({ equal: true, same_text: false });
          const result = await f.migration.verify({ ...methods[name], leafRows: 8 });
          expect(result.keys).toEqual([]);
          expect(result).toMatchObject({ clean: true, counts: { same: 200 } });
        } finally {
          await sql`UPDATE ${f.newTable()} AS n SET properties = o.properties FROM ${f.oldTable()} AS o
          WHERE o.id = n.id AND n.id = ANY(${[a, b]}::bigint[])`.execute(handle.db);
        }
      },
    );

    it.each(methodNames)(
      'SQL NULL and JSON null in a jsonb column are different content, and reported (%s)',
      async (name) => {
        const c = ids[100] as string;
        await sql`UPDATE ${f.oldTable()} SET properties_last_operation = NULL WHERE id = ${c}::bigint`.execute(
          handle.db,
        );
        await sql`UPDATE ${f.newTable()} SET properties_last_operation = 'null'::jsonb
        WHERE id = ${c}::bigint`.execute(handle.db);
        try {
          const result = await f.migration.verify({ ...methods[name], leafRows: 8 });
          expect(result.keys).toEqual([key(1, c, 'content_differs')]);
        } finally {
          await sql`UPDATE ${f.newTable()} SET properties_last_operation = NULL
          WHERE id = ${c}::bigint`.execute(handle.db);
        }
      },
    );
  });
});

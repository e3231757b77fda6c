/**
 * Shared setup of the verification suites: a migration whose tables hold a known set of
 * planted mismatches (and of planted differences that must not count), plus small helpers to
 * read what the control schema stored.
 */
import { sql } from 'kysely';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import type { MismatchClass, PersonsMigration } from '../../src/index.js';
import { seedPersons } from '../../src/testing/index.js';
import { createMigrationFixture, type MigrationFixture } from '../support/migration-fixture.js';

/** A key as `verify()` and `mismatches()` report it (never values). */
export interface ReportedKey {
  readonly teamId: number;
  readonly personId: string;
  readonly class: MismatchClass;
  readonly repaired: boolean;
}

/** Key order of the reports: `(team_id, person_id, class)`, ids compared as numbers. */
export function byKey(a: ReportedKey, b: ReportedKey): number {
  if (a.teamId !== b.teamId) return a.teamId - b.teamId;
  const x = BigInt(a.personId);
  const y = BigInt(b.personId);
  if (x !== y) return x < y ? -1 : 1;
  return a.class < b.class ? -1 : a.class > b.class ? 1 : 0;
}

export function key(
  teamId: number,
  personId: string,
  cls: MismatchClass,
  repaired = false,
): ReportedKey {
  return { teamId, personId, class: cls, repaired };
}

/** Every key of a run, through `migration.mismatches()`. */
export async function streamed(
  migration: PersonsMigration,
  id: string,
  options: { pageSize?: number; includeRepaired?: boolean } = {},
): Promise<ReportedKey[]> {
  const keys: ReportedKey[] = [];
  for await (const k of migration.mismatches(id, options)) keys.push({ ...k });
  return keys;
}

/** Rows of the control schema's verification table of this fixture (every migration). */
export async function storedRuns(f: MigrationFixture): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM ${sql.id(f.controlSchema, 'verification')}`.execute(f.handle.db);
  return rows[0]?.n ?? -1;
}

/** A backfill range's bounds as stored: keys `> start` (from the first when null) and `<= end`. */
export interface StoredRange {
  readonly rangeId: number;
  readonly start: { team: number; id: bigint } | undefined;
  readonly end: { team: number; id: bigint };
}

export async function storedRanges(f: MigrationFixture): Promise<StoredRange[]> {
  const { rows } = await sql<{
    range_id: number;
    start_team: string | null;
    start_id: string | null;
    end_team: string;
    end_id: string;
  }>`SELECT range_id, start_team::text AS start_team, start_id::text AS start_id,
      end_team::text AS end_team, end_id::text AS end_id
    FROM ${sql.id(f.controlSchema, 'backfill_range')} ORDER BY range_id`.execute(f.handle.db);
  return rows.map((r) => ({
    rangeId: r.range_id,
    start:
      r.start_team === null || r.start_id === null
        ? undefined
        : { team: Number(r.start_team), id: BigInt(r.start_id) },
    end: { team: Number(r.end_team), id: BigInt(r.end_id) },
  }));
}

export function inStoredRange(range: StoredRange, k: { teamId: number; personId: string }) {
  const id = BigInt(k.personId);
  const after = (t: number, i: bigint) => k.teamId > t || (k.teamId === t && id > i);
  const atMost = (t: number, i: bigint) => k.teamId < t || (k.teamId === t && id <= i);
  return (
    (range.start === undefined || after(range.start.team, range.start.id)) &&
    atMost(range.end.team, range.end.id)
  );
}

/** Properties with their keys in reverse order, as JSON text. */
function reversedJson(value: Record<string, unknown>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(value).reverse()));
}

/**
 * The planted mismatches, one person each, by what was done to it. Team 2 was seeded first
 * (ids 1..500), team 1 after (ids 501..10,000): key order `(team_id, id)` is not id order,
 * and ids of different lengths also tell numeric from text order.
 */
export interface Planted {
  readonly f: MigrationFixture;
  readonly team1: readonly string[];
  readonly team2: readonly string[];
  /** Deleted from the new table only. */
  readonly missing: string;
  /** Old row at version 3 with other content, new row still at version 0. */
  readonly stale: string;
  /** New row: a property changed, same version. */
  readonly changed: string;
  /** New row: `properties` rewritten from JSON text with the keys in reverse order. */
  readonly reordered: string;
  /** New row: the `json` column `extra` rewritten with other key order and whitespace. */
  readonly jsonReordered: string;
  /** New row: the `json` column `extra` with another value. */
  readonly jsonChanged: string;
  /** `created_at` written in Asia/Tokyo in the new row, in UTC in the old: the same instant. */
  readonly sameInstant: string;
  /** New row: `created_at` one second later. */
  readonly instantChanged: string;
  /** Deleted through the repository, then the copy put back into the new table by SQL. */
  readonly resurrected: string;
  /** Deleted through the repository; a distinct id pointing at it inserted by SQL. */
  readonly orphan: string;
  /** Its distinct id deleted. */
  readonly withoutDistinctId: string;
  /** Team 2, new row: `is_identified` flipped, same version. */
  readonly team2Changed: string;
  /** Every key the full run must report, in key order. */
  readonly expected: readonly ReportedKey[];
  /** Open keys per class of a full run. */
  readonly expectedCounts: Readonly<Record<string, number>>;
}

/**
 * 10,000 persons (team 2: 500, team 1: 9,500) with a `json` column `extra` added to the old
 * table before `prepare()` (so the new table has it too), backfilled in `ranges` ranges by one
 * worker, then every kind of mismatch planted by SQL and through the repository.
 */
export async function plantEveryKind(
  handle: DatabaseHandle,
  options: { ranges?: number } = {},
): Promise<Planted> {
  const db = handle.db;
  const f = await createMigrationFixture(handle, { seed: 0, prepare: false });
  try {
    const old = f.oldTable();
    const neu = f.newTable();
    const distinctIds = sql.id(f.schema, 'posthog_persondistinctid');
    await sql`ALTER TABLE ${old} ADD COLUMN extra json`.execute(db);
    const team2 = await seedPersons(handle, {
      schema: f.schema,
      teamId: 2,
      count: 500,
      prefix: 't2',
    });
    const team1 = await seedPersons(handle, { schema: f.schema, teamId: 1, count: 9_500 });
    const at = (ids: readonly string[], i: number) => ids[i] as string;
    const p = {
      missing: at(team1, 100),
      stale: at(team1, 1_000),
      changed: at(team1, 2_000),
      reordered: at(team1, 3_000),
      jsonReordered: at(team1, 3_500),
      jsonChanged: at(team1, 3_600),
      sameInstant: at(team1, 4_000),
      instantChanged: at(team1, 4_100),
      resurrected: at(team1, 5_000),
      orphan: at(team1, 6_000),
      withoutDistinctId: at(team1, 7_000),
      team2Changed: at(team2, 10),
    };
    await sql`UPDATE ${old} SET extra = json_build_object('a', (properties->>'n')::int, 'b', 'x')`.execute(
      db,
    );
    await sql`UPDATE ${old} SET created_at = '2024-03-01 12:00:00+00'
      WHERE id = ${p.sameInstant}::bigint`.execute(db);

    await f.migration.install();
    await f.migration.prepare();
    await f.migration.startDualRead();
    const backfilled = await f.migration.backfill({
      workers: 1,
      ranges: options.ranges ?? 4,
      batchSize: 5_000,
      maxBatchSize: 5_000,
    });
    if (!backfilled.finished) throw new Error('the backfill did not finish');

    // -- mismatches
    await sql`DELETE FROM ${neu} WHERE id = ${p.missing}::bigint`.execute(db);
    await sql`UPDATE ${old} SET version = 3, properties = properties || '{"plan":"paid"}'
      WHERE id = ${p.stale}::bigint`.execute(db);
    await sql`UPDATE ${neu} SET properties = properties || '{"plan":"team"}'
      WHERE id = ${p.changed}::bigint`.execute(db);
    await sql`UPDATE ${neu} SET extra = json_build_object('a', (properties->>'n')::int, 'b', 'y')
      WHERE id = ${p.jsonChanged}::bigint`.execute(db);
    await sql`UPDATE ${neu} SET created_at = created_at + interval '1 second'
      WHERE id = ${p.instantChanged}::bigint`.execute(db);
    await sql`UPDATE ${neu} SET is_identified = NOT is_identified
      WHERE id = ${p.team2Changed}::bigint`.execute(db);
    const repo = f.migration.repository();
    // A deleted person copied back: save the copy, delete through the repository, put it back.
    const saved = sql.id(f.schema, 'saved_copy');
    await sql`CREATE TABLE ${saved} AS SELECT * FROM ${neu} WHERE id = ${p.resurrected}::bigint`.execute(
      db,
    );
    if (!(await repo.deletePerson(1, p.resurrected))) throw new Error('nothing deleted');
    await sql`INSERT INTO ${neu} SELECT * FROM ${saved}`.execute(db);
    // An orphan distinct id: its person deleted through the repository, the id put back.
    if (!(await repo.deletePerson(1, p.orphan))) throw new Error('nothing deleted');
    await sql`INSERT INTO ${distinctIds} (team_id, distinct_id, person_id, version)
      VALUES (1, 'orphan-of-6001', ${p.orphan}::bigint, 0)`.execute(db);
    await sql`DELETE FROM ${distinctIds} WHERE person_id = ${p.withoutDistinctId}::bigint`.execute(
      db,
    );

    // -- differences that must not count
    const { rows } = await sql<{ properties: Record<string, unknown> }>`
      SELECT properties FROM ${neu} WHERE id = ${p.reordered}::bigint`.execute(db);
    const reversed = reversedJson(rows[0]?.properties ?? {});
    await sql`UPDATE ${neu} SET properties = ${reversed}::jsonb WHERE id = ${p.reordered}::bigint`.execute(
      db,
    );
    await sql`UPDATE ${neu} SET extra = ('{ "b":"x",' || chr(10) || '  "a": ' || (properties->>'n') || '}')::json
      WHERE id = ${p.jsonReordered}::bigint`.execute(db);
    await db.transaction().execute(async (trx) => {
      await sql`SET LOCAL TimeZone = 'Asia/Tokyo'`.execute(trx);
      await sql`UPDATE ${neu} SET created_at = '2024-03-01 21:00:00'
        WHERE id = ${p.sameInstant}::bigint`.execute(trx);
    });

    const expected = [
      key(1, p.missing, 'missing_in_new'),
      key(1, p.stale, 'older_in_new'),
      key(1, p.changed, 'content_differs'),
      key(1, p.jsonChanged, 'content_differs'),
      key(1, p.instantChanged, 'content_differs'),
      // The copy that came back has no distinct id (the delete removed them): both are true.
      key(1, p.resurrected, 'resurrected'),
      key(1, p.resurrected, 'person_without_distinct_id'),
      key(1, p.orphan, 'orphan_distinct_id'),
      key(1, p.withoutDistinctId, 'person_without_distinct_id'),
      key(2, p.team2Changed, 'content_differs'),
    ].sort(byKey);
    return {
      f,
      team1,
      team2,
      ...p,
      expected,
      expectedCounts: {
        missing_in_new: 1,
        older_in_new: 1,
        content_differs: 4,
        resurrected: 1,
        orphan_distinct_id: 1,
        person_without_distinct_id: 2,
      },
    };
  } catch (error) {
    await f.drop();
    throw error;
  }
}

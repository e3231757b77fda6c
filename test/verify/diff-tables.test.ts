import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import {
  diffTables,
  InvalidOptionsError,
  openDatabase,
  VerifyRefusedError,
} from '../../src/index.js';
import { describeOnRealServer, realServerUrl, uniqueSchemaName } from '../support/test-database.js';

/** The same 5,000 persons in a table of each database: deterministic values, no random uuids. */
async function personsTable(handle: DatabaseHandle, schema: string): Promise<void> {
  await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(handle.db);
  await sql`CREATE TABLE ${sql.id(schema, 'persons')} (
    id bigint NOT NULL, team_id integer NOT NULL, uuid uuid NOT NULL,
    properties jsonb NOT NULL, created_at timestamptz NOT NULL, version bigint,
    PRIMARY KEY (team_id, id))`.execute(handle.db);
  await sql`INSERT INTO ${sql.id(schema, 'persons')}
    SELECT g, 1 + g % 7, md5(g::text)::uuid,
      jsonb_build_object('n', g, 'plan', 'free', 'score', 1.5),
      timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', 0
    FROM generate_series(1, 5000) AS g`.execute(handle.db);
}

describeOnRealServer('diffTables() across two databases (real server)', () => {
  let left: DatabaseHandle;
  let right: DatabaseHandle;
  const schema = uniqueSchemaName('diff');

  beforeAll(async () => {
    const url = realServerUrl() ?? '';
    left = await openDatabase(url);
    // A second database on the same server, made if missing (CREATE DATABASE cannot be undone
    // by a transaction, so it is kept; the schema inside is dropped).
    await sql`CREATE DATABASE pg_dual_read_diff_test`.execute(left.db).catch((error: unknown) => {
      if ((error as { code?: string }).code !== '42P04') throw error;
    });
    const other = new URL(url);
    other.pathname = '/pg_dual_read_diff_test';
    right = await openDatabase(other.toString());
    await personsTable(left, schema);
    await personsTable(right, schema);
  });
  afterAll(async () => {
    for (const h of [left, right]) {
      await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(h.db);
      await h.close();
    }
  });

  const sides = () => ({
    old: { db: left, schema, table: 'persons' },
    new: { db: right, schema, table: 'persons' },
  });

  it('finds nothing when the two databases hold the same rows', async () => {
    const result = await diffTables({ ...sides(), chunkRows: 1_000, leafRows: 50, fanout: 4 });
    expect(result).toMatchObject({ clean: true, oldRows: 5000, newRows: 5000, mismatches: 0 });
    expect(result.counts.same).toBe(5000);
  });

  it('names each differing key with its class, and ignores what is the same JSON or instant', async () => {
    const t = sql.id(schema, 'persons');
    const db = right.db;
    await sql`DELETE FROM ${t} WHERE id = 101`.execute(db);
    await sql`UPDATE ${t} SET version = -1 WHERE id = 2002`.execute(db);
    await sql`UPDATE ${t} SET properties = properties || '{"plan": "paid"}' WHERE id = 3003`.execute(
      db,
    );
    // Not differences: keys in another order, 1.5 written as 1.50, the instant in another zone.
    await sql`UPDATE ${t} SET properties = ('{"score": 1.50, "plan": "free", "n": ' || id || '}')::jsonb,
        created_at = (created_at AT TIME ZONE 'Asia/Tokyo') AT TIME ZONE 'Asia/Tokyo'
      WHERE id BETWEEN 4000 AND 4010`.execute(db);
    // Only in the new table: counted, not a mismatch.
    await sql`INSERT INTO ${t} VALUES (9001, 3, md5('x')::uuid, '{}', now(), 0)`.execute(db);
    const seen: string[] = [];
    const result = await diffTables({
      ...sides(),
      chunkRows: 1_000,
      leafRows: 50,
      fanout: 4,
      maxKeys: 2,
      onMismatch: (key) => {
        seen.push(`${key.class} ${key.teamId} ${key.personId}`);
      },
    });
    const expected = [
      `missing_in_new ${1 + (101 % 7)} 101`,
      `older_in_new ${1 + (2002 % 7)} 2002`,
      `content_differs ${1 + (3003 % 7)} 3003`,
    ];
    expect(seen.sort()).toEqual([...expected].sort());
    expect(result).toMatchObject({ clean: false, mismatches: 3, truncated: true, oldRows: 5000 });
    expect(result.keys).toHaveLength(2);
    expect(result.counts).toMatchObject({
      missing_in_new: 1,
      older_in_new: 1,
      content_differs: 1,
      created_in_new: 1,
    });
  });

  it('refuses a table that does not exist and options that are wrong, naming them', async () => {
    await expect(
      diffTables({ ...sides(), new: { db: right, schema, table: 'nope' } }),
    ).rejects.toBeInstanceOf(VerifyRefusedError);
    const error = await diffTables({ ...sides(), fanout: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain('fanout');
  });
});

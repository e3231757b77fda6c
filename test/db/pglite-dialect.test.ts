import { PGlite } from '@electric-sql/pglite';
import { isAbortedTransactionError, Kysely, sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { PGliteDialect } from '../../src/db/pglite-dialect.js';
import { assertExactBigints, pgliteParsers } from '../../src/db/type-parsers.js';

interface Tables {
  items: { id: number; label: string };
  big: { id: string };
}

let pglite: PGlite;
let db: Kysely<Tables>;

beforeAll(async () => {
  pglite = await PGlite.create({ parsers: pgliteParsers });
  db = new Kysely<Tables>({ dialect: new PGliteDialect({ pglite }) });
  await sql`create table items (id int primary key, label text not null)`.execute(db);
  await sql`create table big (id int8 primary key)`.execute(db);
}, 60_000);

afterAll(async () => {
  await db?.destroy();
  await pglite?.close();
});

beforeEach(async () => {
  await sql`truncate items, big`.execute(db);
});

const ids = async () =>
  (await db.selectFrom('items').select('id').orderBy('id').execute()).map((r) => r.id);

describe('PGliteDialect', () => {
  it('leaves exactly the committed rows when 10 parallel transactions run and half throw', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        db.transaction().execute(async (trx) => {
          await trx
            .insertInto('items')
            .values({ id: i, label: `row ${i}` })
            .execute();
          await new Promise((r) => setTimeout(r, 5)); // give the others a chance to interleave
          if (i % 2 === 1) throw new Error(`transaction ${i} fails`);
        }),
      ),
    );
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(5);
    expect(await ids()).toEqual([0, 2, 4, 6, 8]);
  });

  it("removes a rolled-back transaction's row while a concurrent committed one stays", async () => {
    const failing = db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ id: 1, label: 'rolled back' }).execute();
      throw new Error('boom');
    });
    const committing = db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ id: 2, label: 'committed' }).execute();
    });
    await expect(failing).rejects.toThrow('boom');
    await committing;
    expect(await ids()).toEqual([2]);
  });

  it('makes a plain query wait until an open controlled transaction ends', async () => {
    const trx = await db.startTransaction().execute();
    await trx.insertInto('items').values({ id: 1, label: 'uncommitted' }).execute();
    let settled = false;
    const count = db
      .selectFrom('items')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow()
      .finally(() => {
        settled = true;
      });
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false);
    await trx.rollback().execute();
    expect((await count).n).toBe('0');
  });

  it('honours the isolation level and access mode of a transaction', async () => {
    const { isolation, readOnly } = await db
      .transaction()
      .setIsolationLevel('serializable')
      .setAccessMode('read only')
      .execute(async (trx) => ({
        isolation: (
          await sql<{ transaction_isolation: string }>`show transaction_isolation`.execute(trx)
        ).rows[0]?.transaction_isolation,
        readOnly: (
          await sql<{ transaction_read_only: string }>`show transaction_read_only`.execute(trx)
        ).rows[0]?.transaction_read_only,
      }));
    expect(isolation).toBe('serializable');
    expect(readOnly).toBe('on');
  });

  it('reports numAffectedRows as a bigint for insert, update and delete', async () => {
    const inserted = await db
      .insertInto('items')
      .values([1, 2, 3, 4].map((id) => ({ id, label: 'a' })))
      .executeTakeFirstOrThrow();
    expect(inserted.numInsertedOrUpdatedRows).toBe(4n);
    const updated = await db
      .updateTable('items')
      .set({ label: 'b' })
      .where('id', '<=', 3)
      .executeTakeFirstOrThrow();
    expect(updated.numUpdatedRows).toBe(3n);
    const deleted = await db.deleteFrom('items').where('id', '=', 4).executeTakeFirstOrThrow();
    expect(deleted.numDeletedRows).toBe(1n);
  });

  it('undoes only the work after a savepoint when a controlled transaction rolls back to it', async () => {
    const trx = await db.startTransaction().execute();
    await trx.insertInto('items').values({ id: 1, label: 'before' }).execute();
    const withSavepoint = await trx.savepoint('sp1').execute();
    await withSavepoint.insertInto('items').values({ id: 2, label: 'after' }).execute();
    const rolledBack = await withSavepoint.rollbackToSavepoint('sp1').execute();
    await rolledBack.insertInto('items').values({ id: 3, label: 'after rollback' }).execute();
    const released = await rolledBack.savepoint('sp2').execute();
    await (await released.releaseSavepoint('sp2').execute()).commit().execute();
    expect(await ids()).toEqual([1, 3]);
  });

  it('throws AbortedTransactionError when committing a transaction an error aborted', async () => {
    const trx = await db.startTransaction().execute();
    await trx.insertInto('items').values({ id: 1, label: 'lost' }).execute();
    await expect(sql`select 1 / 0`.execute(trx)).rejects.toMatchObject({ code: '22012' });
    const commit = trx.commit().execute();
    await expect(commit).rejects.toSatisfy(isAbortedTransactionError);
    expect(await ids()).toEqual([]);
  });

  it('round-trips int8 9007199254740993 exactly as the string "9007199254740993"', async () => {
    await db.insertInto('big').values({ id: '9007199254740993' }).execute();
    const row = await db.selectFrom('big').select('id').executeTakeFirstOrThrow();
    expect(row.id).toBe('9007199254740993');
    const numeric = await sql<{ n: unknown }>`select 12345678901234567890.5::numeric as n`.execute(
      db,
    );
    expect(numeric.rows[0]?.n).toBe('12345678901234567890.5');
    await expect(assertExactBigints(db)).resolves.toBeUndefined();
  });

  it('drops the bound parameters PGlite attaches to its errors', async () => {
    const err: unknown = await sql`select ${'zz-secret'}::int`.execute(db).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: '22P02' });
    expect(err).not.toHaveProperty('params');
  });

  it('streams a result in chunks of the requested size', async () => {
    await db
      .insertInto('items')
      .values([1, 2, 3, 4, 5].map((id) => ({ id, label: 'x' })))
      .execute();
    const chunks: number[][] = [];
    for await (const row of db.selectFrom('items').select('id').orderBy('id').stream(2)) {
      const last = chunks.at(-1);
      if (last && last.length < 2) last.push(row.id);
      else chunks.push([row.id]);
    }
    expect(chunks).toEqual([[1, 2], [3, 4], [5]]);
  });

  it('delivers a pg_notify payload sent through Kysely to a PGlite listener', async () => {
    const received: string[] = [];
    const unlisten = await pglite.listen('dialect_test', (payload) => received.push(payload));
    await sql`select pg_notify('dialect_test', 'hello')`.execute(db);
    await expect.poll(() => received).toEqual(['hello']);
    await unlisten();
  });
});

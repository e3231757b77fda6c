import { sql } from 'kysely';
import { expect, it } from 'vitest';
import { openDatabase } from '../../src/db/open-database.js';
import { preparedStatementMarker } from '../../src/db/prepared-statements.js';
import { describeOnRealServer, realServerUrl } from '../support/test-database.js';

const marked = sql`${sql.raw(preparedStatementMarker)}SELECT ${1}::int + 1 AS x`;
const unmarked = sql`SELECT ${1}::int + 2 AS y`;

async function preparedOnTheConnection(preparedStatements: boolean) {
  const handle = await openDatabase(realServerUrl() ?? '', {
    maxConnections: 1,
    preparedStatements,
  });
  try {
    for (let i = 0; i < 3; i++) {
      expect((await marked.execute(handle.db)).rows).toEqual([{ x: 2 }]);
      expect((await unmarked.execute(handle.db)).rows).toEqual([{ y: 3 }]);
    }
    // One connection: this query sees the same session's prepared statements.
    const { rows } = await sql<{ name: string; statement: string }>`
      SELECT name, statement FROM pg_prepared_statements`.execute(handle.db);
    return rows;
  } finally {
    await handle.close();
  }
}

describeOnRealServer('prepared statements on postgres', () => {
  it('marked statements run as one named prepared statement per connection, others stay unnamed', async () => {
    const rows = await preparedOnTheConnection(true);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.name).toMatch(/^pgdr_[0-9a-f]{24}$/);
    expect(rows[0]?.statement).toContain('+ 1 AS x');
  });

  it('preparedStatements: false prepares nothing', async () => {
    expect(await preparedOnTheConnection(false)).toEqual([]);
  });
});

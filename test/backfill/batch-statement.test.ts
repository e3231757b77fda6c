/**
 * The batch statement is built by a pure function: its SQL is inspected here without a
 * database (what runs is proven by the backfill, race and kill suites).
 */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { type BatchRequest, batchStatement } from '../../src/backfill/batch-statement.js';
import { statementTagText } from '../../src/db/statement-tag.js';
import { resolveMigrationOptions } from '../../src/options/migration-options.js';
import { migrationTables } from '../../src/persons/tables.js';

// Compiling needs a dialect, never a connection: the pool is never asked for one.
const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none' });
const db = new Kysely({ dialect: new PostgresDialect({ pool }) });
const options = resolveMigrationOptions({
  db: { db, backend: 'postgres', close: async () => {} },
  schema: 'app',
  controlSchema: 'app_ctl',
});

function request(overrides: Partial<BatchRequest> = {}): BatchRequest {
  return {
    tables: migrationTables(options),
    columns: ['id', 'team_id', 'uuid', 'properties', 'version'],
    workerId: 'worker-7',
    range: {
      rangeId: 3,
      after: { team: '424242', id: '9007199254740993' },
      end: { team: '515151', id: '9007199254740999' },
      rowsEstimated: 1_000,
      rowsScanned: 0,
    },
    limit: 500,
    leaseMs: 30_000,
    lockMode: 'ranges',
    arbiter: 'when-needed',
    ...overrides,
  };
}

afterAll(async () => {
  await db.destroy();
});

describe('batchStatement()', () => {
  it('is one tagged statement whose keys, worker and limit are parameters, never inlined', () => {
    const { sql, parameters } = batchStatement(request()).compile(db);
    expect(sql.startsWith(statementTagText('backfill-batch'))).toBe(true);
    // One statement: no separator outside its comments.
    expect(sql.replace(/--.*$/gm, '')).not.toContain(';');
    for (const value of ['424242', '9007199254740993', '515151', '9007199254740999', 'worker-7']) {
      expect(sql, value).not.toContain(value);
      expect(parameters, value).toContain(value);
    }
    expect(sql).toContain('"app"."posthog_person"');
    expect(sql).toContain('"app_ctl"."backfill_range"');
  });

  it("reads the old rows FOR SHARE in lockMode 'rows' only (the range fence is a statement of its own)", () => {
    const rows = batchStatement(request({ lockMode: 'rows' })).compile(db).sql;
    const ranges = batchStatement(request({ lockMode: 'ranges' })).compile(db).sql;
    expect(rows.match(/FOR SHARE OF o/g)).toHaveLength(2);
    expect(ranges).not.toContain('FOR SHARE OF o');
  });

  it("gates its two inserts by the window probe, or always takes the arbiter after a race ('always')", () => {
    const probed = batchStatement(request()).compile(db).sql;
    expect(probed).toContain('(SELECT found FROM window_in_new)');
    expect(probed).toContain('NOT (SELECT found FROM window_in_new)');
    const always = batchStatement(request({ arbiter: 'always' })).compile(db).sql;
    expect(always).not.toContain('SELECT found FROM window_in_new)');
    expect(always).toContain('ON CONFLICT (team_id, id) DO NOTHING');
  });

  it('starts from the first key of the plan when the range has no checkpoint', () => {
    const first = batchStatement(
      request({
        range: { ...request().range, after: undefined },
      }),
    ).compile(db);
    expect(first.parameters).not.toContain('424242');
    expect(first.sql).toContain('IS NOT DISTINCT FROM');
  });
});

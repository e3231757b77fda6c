/**
 * Helpers of the real-server backfill suites that kill workers (kill-and-resume.test.ts,
 * multi-process.test.ts): what the new table must hold, a copy audit, the ranges as stored,
 * a sampler of live leases, and pg_stat_activity checks for a child's sessions.
 */
import { sql } from 'kysely';
import { expect } from 'vitest';
import { type MigrationEnv, waitUntil } from '../support/concurrency.js';
import { realServerUrl } from '../support/test-database.js';

/** The server URL with an application_name (to find a worker's sessions) and extra params. */
export function urlFor(applicationName: string, params: Record<string, string> = {}): string {
  const base = realServerUrl();
  if (!base) throw new Error('the backfill kill suites need the real server');
  const url = new URL(base);
  url.searchParams.set('application_name', applicationName);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.toString();
}

/**
 * Records every row the new table is asked to insert (a BEFORE INSERT row trigger fires
 * even for a row that `ON CONFLICT DO NOTHING` then skips) in `copy_audit`, in the inserting
 * transaction: a killed batch leaves no audit row, a committed one leaves one per key it read.
 * So "each old key audited exactly once" means no committed batch ever read a key another
 * committed batch had read. Install it after the test's own repository writes.
 */
export async function installCopyAudit(env: MigrationEnv): Promise<void> {
  const audit = sql.id(env.schema, 'copy_audit');
  const fn = sql.id(env.schema, 'audit_copy');
  await sql`CREATE TABLE ${audit} (team_id integer NOT NULL, id bigint NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(), pid integer NOT NULL DEFAULT pg_backend_pid())`.execute(
    env.admin.db,
  );
  await sql`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO ${audit} (team_id, id) VALUES (NEW.team_id, NEW.id);
      RETURN NEW;
    END $$`.execute(env.admin.db);
  await sql`CREATE TRIGGER audit_copy BEFORE INSERT ON ${sql.id(env.schema, 'posthog_person_new')}
    FOR EACH ROW EXECUTE FUNCTION ${fn}()`.execute(env.admin.db);
}

/** What the audit saw: attempts, distinct keys, keys read twice, old keys never read. */
export async function readCopyAudit(env: MigrationEnv): Promise<{
  attempts: number;
  distinctKeys: number;
  readTwice: string[];
  neverRead: string[];
}> {
  const audit = sql.id(env.schema, 'copy_audit');
  const old = sql.id(env.schema, 'posthog_person');
  const { rows } = await sql<{ attempts: number; distinct_keys: number }>`
    SELECT count(*)::int AS attempts, count(DISTINCT (team_id, id))::int AS distinct_keys
    FROM ${audit}`.execute(env.admin.db);
  const twice = await sql<{ key: string }>`
    SELECT team_id || ':' || id AS key FROM ${audit} GROUP BY team_id, id HAVING count(*) > 1
    ORDER BY 1 LIMIT 20`.execute(env.admin.db);
  const never = await sql<{ key: string }>`
    SELECT o.team_id || ':' || o.id AS key FROM ${old} AS o
    WHERE NOT EXISTS (SELECT 1 FROM ${audit} AS a WHERE a.team_id = o.team_id AND a.id = o.id)
    ORDER BY 1 LIMIT 20`.execute(env.admin.db);
  return {
    attempts: rows[0]?.attempts ?? 0,
    distinctKeys: rows[0]?.distinct_keys ?? 0,
    readTwice: twice.rows.map((r) => r.key),
    neverRead: never.rows.map((r) => r.key),
  };
}

/** A table's rows as `team:id` -> `version:hash of every other column`, straight from SQL. */
export async function tableRows(
  env: MigrationEnv,
  which: 'old' | 'new',
): Promise<Map<string, string>> {
  const table = sql.id(env.schema, which === 'old' ? 'posthog_person' : 'posthog_person_new');
  const { rows } = await sql<{ key: string; value: string }>`
    SELECT team_id || ':' || id AS key,
      COALESCE(version, 0) || ':' || md5(concat_ws('|', uuid::text, properties::text,
        properties_last_updated_at::text, properties_last_operation::text, created_at::text,
        is_identified::text, is_user_id::text)) AS value
    FROM ${table}`.execute(env.admin.db);
  return new Map(rows.map((r) => [r.key, r.value]));
}

/**
 * What the new table must hold after the backfill, from the tables as they are before it:
 * every row already in the new table (copies made by copy-on-write keep their newer version,
 * persons created in dual_read stay), plus every old row the new table lacks. Deleted persons
 * are in neither table, so they stay out.
 */
export async function expectedNewTable(env: MigrationEnv): Promise<Map<string, string>> {
  const expected = await tableRows(env, 'new');
  for (const [key, value] of await tableRows(env, 'old')) {
    if (!expected.has(key)) expected.set(key, value);
  }
  return expected;
}

/** Asserts the new table holds exactly `expected` (naming a few missing, extra, changed rows). */
export async function expectNewTable(
  env: MigrationEnv,
  expected: Map<string, string>,
): Promise<void> {
  const actual = await tableRows(env, 'new');
  const missing = [...expected.keys()].filter((k) => !actual.has(k));
  const extra = [...actual.keys()].filter((k) => !expected.has(k));
  const changed = [...expected.entries()]
    .filter(([k, v]) => actual.has(k) && actual.get(k) !== v)
    .map(([k, v]) => `${k}: expected ${v}, got ${actual.get(k)}`);
  expect({
    size: actual.size,
    missing: missing.slice(0, 10),
    extra: extra.slice(0, 10),
    changed: changed.slice(0, 10),
  }).toEqual({ size: expected.size, missing: [], extra: [], changed: [] });
}

/** A `(team_id, id)` key; `undefined` is below every key. */
export type Key = readonly [bigint, bigint] | undefined;

function compare(a: Key, b: Key): number {
  if (a === undefined || b === undefined) return a === b ? 0 : a === undefined ? -1 : 1;
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return a[1] === b[1] ? 0 : a[1] < b[1] ? -1 : 1;
}

const show = (k: Key) => (k === undefined ? '-inf' : `(${k[0]},${k[1]})`);

/** One stored range, read in one statement with the others (one snapshot). */
export interface StoredRange {
  readonly rangeId: number;
  readonly status: 'pending' | 'running' | 'done';
  readonly start: Key;
  readonly end: Key;
  readonly cursor: Key;
  readonly owner: string | null;
  /** Owner set and lease not expired, by the server's clock at the read. */
  readonly live: boolean;
  readonly leaseExpiresAt: Date | null;
  readonly rowsScanned: number;
  readonly rowsCopied: number;
  readonly rowsEstimated: number;
  readonly splitFrom: number | null;
}

const key = (team: string | null, id: string | null): Key =>
  team === null || id === null ? undefined : [BigInt(team), BigInt(id)];

/** The ranges of the migration's plan, as stored. */
export async function readRanges(env: MigrationEnv): Promise<StoredRange[]> {
  const { rows } = await sql<{
    range_id: number;
    status: StoredRange['status'];
    start_team: string | null;
    start_id: string | null;
    end_team: string;
    end_id: string;
    cursor_team: string | null;
    cursor_id: string | null;
    lease_owner: string | null;
    live: boolean;
    lease_expires_at: Date | null;
    rows_scanned: string;
    rows_copied: string;
    rows_estimated: string;
    split_from: number | null;
  }>`SELECT range_id, status, start_team::text, start_id::text, end_team::text, end_id::text,
      cursor_team::text, cursor_id::text, lease_owner,
      (lease_owner IS NOT NULL AND lease_expires_at > clock_timestamp()) AS live,
      lease_expires_at, rows_scanned::text, rows_copied::text, rows_estimated::text, split_from
    FROM ${sql.id(env.controlSchema, 'backfill_range')} WHERE migration = 'persons'
    ORDER BY range_id`.execute(env.admin.db);
  return rows.map((r) => ({
    rangeId: r.range_id,
    status: r.status,
    start: key(r.start_team, r.start_id),
    end: key(r.end_team, r.end_id),
    cursor: key(r.cursor_team, r.cursor_id),
    owner: r.lease_owner,
    live: r.live,
    leaseExpiresAt: r.lease_expires_at,
    rowsScanned: Number(r.rows_scanned),
    rowsCopied: Number(r.rows_copied),
    rowsEstimated: Number(r.rows_estimated),
    splitFrom: r.split_from,
  }));
}

/**
 * What is wrong with one snapshot of the ranges: the ranges must partition the keys up to the
 * plan's end (sorted by start, each starts where the previous ends: no gap, no overlap), each
 * cursor must lie inside its range, no two live leases may cover overlapping keys (the part
 * still to copy, `(cursor or start, end]`), and no worker may hold two live leases.
 */
export function rangeViolations(ranges: readonly StoredRange[]): string[] {
  const problems: string[] = [];
  const sorted = [...ranges].sort((a, b) => compare(a.start, b.start));
  for (const [i, r] of sorted.entries()) {
    if (compare(r.start, r.end) >= 0) problems.push(`range ${r.rangeId} is empty or inverted`);
    if (
      r.cursor !== undefined &&
      (compare(r.cursor, r.start) <= 0 || compare(r.cursor, r.end) > 0)
    ) {
      problems.push(
        `range ${r.rangeId}: cursor ${show(r.cursor)} outside (${show(r.start)}, ${show(r.end)}]`,
      );
    }
    const previous = sorted[i - 1];
    if (i === 0 && r.start !== undefined) problems.push(`first range starts at ${show(r.start)}`);
    if (previous && compare(previous.end, r.start) !== 0) {
      problems.push(
        `${compare(previous.end, r.start) > 0 ? 'overlap' : 'gap'} between range ${previous.rangeId} ` +
          `(..${show(previous.end)}] and range ${r.rangeId} (${show(r.start)}..`,
      );
    }
  }
  const live = ranges.filter((r) => r.live && r.status === 'running');
  for (const [i, a] of live.entries()) {
    for (const b of live.slice(i + 1)) {
      const aFrom = a.cursor ?? a.start;
      const bFrom = b.cursor ?? b.start;
      // (aFrom, a.end] and (bFrom, b.end] overlap when each starts below the other's end.
      if (compare(aFrom, b.end) < 0 && compare(bFrom, a.end) < 0) {
        problems.push(
          `live leases overlap: range ${a.rangeId} (${a.owner}) (${show(aFrom)}, ${show(a.end)}] ` +
            `and range ${b.rangeId} (${b.owner}) (${show(bFrom)}, ${show(b.end)}]`,
        );
      }
      if (a.owner === b.owner) {
        problems.push(`${a.owner} holds ranges ${a.rangeId} and ${b.rangeId}`);
      }
    }
  }
  return problems;
}

/**
 * Reads the ranges every few ms while a backfill runs and keeps every violation seen
 * (`rangeViolations`), with how many snapshots had two or more live leases (so a test can
 * show the check was not vacuous).
 */
export class RangeSampler {
  samples = 0;
  samplesWithConcurrentLeases = 0;
  maxLiveLeases = 0;
  readonly violations: string[] = [];
  private running = true;
  private readonly loop: Promise<void>;

  constructor(private readonly env: MigrationEnv) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
      const ranges = await readRanges(this.env);
      this.samples += 1;
      const live = ranges.filter((r) => r.live && r.status === 'running').length;
      this.maxLiveLeases = Math.max(this.maxLiveLeases, live);
      if (live >= 2) this.samplesWithConcurrentLeases += 1;
      for (const problem of rangeViolations(ranges)) {
        if (this.violations.length < 20) this.violations.push(`sample ${this.samples}: ${problem}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
  }

  async stop(): Promise<this> {
    this.running = false;
    await this.loop;
    return this;
  }
}

/** Sessions whose application_name is `name`. */
export async function sessionsOf(
  env: MigrationEnv,
  name: string,
): Promise<{ pid: number; state: string | null; waitEventType: string | null; query: string }[]> {
  const { rows } = await sql<{
    pid: number;
    state: string | null;
    waitEventType: string | null;
    query: string;
  }>`SELECT pid, state, wait_event_type AS "waitEventType", query FROM pg_stat_activity
    WHERE application_name = ${name}`.execute(env.admin.db);
  return rows;
}

/** Waits until no session of `name` is left (a killed worker's statement may still run). */
export async function waitForSessionsGone(env: MigrationEnv, name: string): Promise<void> {
  await waitUntil(
    async () => (await sessionsOf(env, name)).length === 0,
    `the sessions of ${name} to end`,
    10_000,
    10,
  );
}

/** Sum of rows_scanned and rows_copied over every range. */
export function progress(ranges: readonly StoredRange[]): { scanned: number; copied: number } {
  return {
    scanned: ranges.reduce((s, r) => s + r.rowsScanned, 0),
    copied: ranges.reduce((s, r) => s + r.rowsCopied, 0),
  };
}

/** Rows of the old table (the backfill's fixed end: in dual_read nothing adds old rows). */
export async function countRows(env: MigrationEnv, which: 'old' | 'new'): Promise<number> {
  const table = sql.id(env.schema, which === 'old' ? 'posthog_person' : 'posthog_person_new');
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${table}`.execute(
    env.admin.db,
  );
  return rows[0]?.n ?? 0;
}

/** The largest old key (where the last range must end). */
export async function maxOldKey(env: MigrationEnv): Promise<Key> {
  const { rows } = await sql<{ team: string; id: string }>`
    SELECT o.team_id::text AS team, o.id::text AS id FROM ${sql.id(env.schema, 'posthog_person')} AS o
    ORDER BY o.team_id DESC, o.id DESC LIMIT 1 -- qualified: a bare id sorts by the text alias`.execute(
    env.admin.db,
  );
  const row = rows[0];
  return row ? [BigInt(row.team), BigInt(row.id)] : undefined;
}

/** Asserts the final plan: every range done and the ranges cover exactly (-inf, max old key]. */
export async function expectCompletePlan(env: MigrationEnv): Promise<StoredRange[]> {
  const ranges = await readRanges(env);
  expect(ranges.filter((r) => r.status !== 'done').map((r) => r.rangeId)).toEqual([]);
  expect(rangeViolations(ranges)).toEqual([]);
  const last = [...ranges].sort((a, b) => compare(a.end, b.end)).at(-1);
  expect(show(last?.end)).toBe(show(await maxOldKey(env)));
  return ranges;
}

/** Remaining old keys of a range: `(cursor or start, end]`, counted on the table. */
export async function keysLeft(env: MigrationEnv, range: StoredRange): Promise<number> {
  const from = range.cursor ?? range.start;
  const end = range.end;
  if (!end) return 0;
  const old = sql.id(env.schema, 'posthog_person');
  const after = from
    ? sql`AND (team_id, id) > (${String(from[0])}::int8, ${String(from[1])}::int8)`
    : sql``;
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM ${old}
    WHERE (team_id, id) <= (${String(end[0])}::int8, ${String(end[1])}::int8) ${after}`.execute(
    env.admin.db,
  );
  return rows[0]?.n ?? 0;
}

/** A random integer in [min, max]. */
export function randomInt(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

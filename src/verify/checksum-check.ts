import { type RawBuilder, sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { KeyRange } from '../model/key.js';
import { isAgreeing } from '../model/mismatch-class.js';
import { inRange, splitRange } from '../persons/key-range.js';
import type { ComparedColumn } from './compared-columns.js';
import { canonical, contentHash } from './compared-columns.js';
import type { ChunkCounts } from './join-check.js';

/**
 * What a checksum comparison needs beyond the two sides: the compared columns, the id
 * high-water mark (null: every new-only key counts as created) and where mismatched keys go
 * (the control schema for `verify()`, the caller for `diffTables()`). @internal
 */
export interface ChecksumContext {
  readonly columns: readonly ComparedColumn[];
  readonly highWater: string | null;
  /** Takes mismatched keys (never values) as parallel arrays. */
  readonly record: (teams: string[], ids: string[], classes: string[]) => Promise<void>;
}

/** One table of a checksum comparison, reached through its own connection. @internal */
export interface ChecksumSide {
  readonly db: AnyDb;
  readonly table: RawBuilder<unknown>;
}

/** How far the bisection goes before comparing keys one by one. @internal */
export interface BisectSettings {
  /** A range with at most this many rows on both sides is compared key by key. */
  readonly leafRows: number;
  /** How many parts a differing range is cut into. */
  readonly fanout: number;
}

interface RangeChecksum {
  readonly rows: number;
  readonly sum: string;
}

interface LeafRow {
  readonly version: bigint;
  readonly content: string;
}

/**
 * The checksum-and-bisect check of one key range, for tables that cannot be joined (another
 * database) or when asked for: each side computes, **in Postgres**, the row count and a sum
 * of 60-bit row hashes of the range; equal ranges are done, differing ones are cut into
 * `fanout` parts by key quantiles and compared again, down to ranges of `leafRows` rows whose
 * keys, versions and content hashes (never values) are compared in Node. The two sides are
 * read in separate statements, so a key written meanwhile can differ falsely: the run's
 * re-check settles those. Mismatched keys are stored like the join check's.
 * @internal
 */
export async function checkRangeByChecksum(
  context: ChecksumContext,
  old: ChecksumSide,
  fresh: ChecksumSide,
  range: KeyRange,
  settings: BisectSettings,
): Promise<ChunkCounts & { readonly comparedRanges: number }> {
  const byClass: Record<string, number> = {};
  const add = (cls: string, n: number) => {
    if (n > 0) byClass[cls] = (byClass[cls] ?? 0) + n;
  };
  let comparedRanges = 0;
  const sums = async (r: KeyRange) => {
    comparedRanges++;
    const [a, b] = await Promise.all([
      rangeChecksum(context, old, r),
      rangeChecksum(context, fresh, r),
    ]);
    return [a, b] as const;
  };
  const visit = async (r: KeyRange, a: RangeChecksum, b: RangeChecksum): Promise<void> => {
    if (a.rows === b.rows && a.sum === b.sum) {
      add('same', a.rows);
      return;
    }
    if (a.rows === 0 || b.rows === 0) {
      // Every key of the range is on one side only: no need to bisect to find them.
      const counts = await oneSided(context, a.rows === 0 ? fresh : old, a.rows === 0, r);
      for (const [cls, n] of Object.entries(counts)) add(cls, n);
      return;
    }
    if (Math.max(a.rows, b.rows) <= settings.leafRows) {
      const counts = await compareLeaf(context, old, fresh, r);
      for (const [cls, n] of Object.entries(counts)) add(cls, n);
      return;
    }
    const [side, rows] = a.rows >= b.rows ? [old, a.rows] : [fresh, b.rows];
    const parts = await splitRange(side.db, side.table, r, rows, settings.fanout);
    if (parts.length < 2) {
      const counts = await compareLeaf(context, old, fresh, r);
      for (const [cls, n] of Object.entries(counts)) add(cls, n);
      return;
    }
    for (const part of parts) {
      const [pa, pb] = await sums(part);
      await visit(part, pa, pb);
    }
  };
  const [a, b] = await sums(range);
  await visit(range, a, b);
  return { oldRows: a.rows, newRows: b.rows, byClass, comparedRanges };
}

async function rangeChecksum(
  context: ChecksumContext,
  side: ChecksumSide,
  range: KeyRange,
): Promise<RangeChecksum> {
  // Key, version and canonical content of each row, hashed; the range's digest is their sum.
  const parts = [sql`t.team_id`, sql`t.id`, sql`coalesce(t.version, 0)`];
  const row = sql`jsonb_build_array(${sql.join([...parts, ...context.columns.map((c) => canonical('t', c))])})::text`;
  const { rows } = await sql<{ rows: string; sum: string }>`
    SELECT count(*)::text AS rows,
      coalesce(sum(('x' || substr(md5(${row}), 1, 15))::bit(60)::int8), 0)::text AS sum
    FROM ${side.table} AS t WHERE ${inRange(range, 't')}`.execute(side.db);
  return { rows: Number(rows[0]?.rows ?? 0), sum: rows[0]?.sum ?? '0' };
}

async function leafRows(
  context: ChecksumContext,
  side: ChecksumSide,
  range: KeyRange,
): Promise<Map<string, LeafRow>> {
  const { rows } = await sql<{ team: string; id: string; version: string; content: string }>`
    SELECT t.team_id::text AS team, t.id::text AS id, coalesce(t.version, 0)::text AS version,
      ${contentHash(context.columns, 't')} AS content
    FROM ${side.table} AS t WHERE ${inRange(range, 't')}`.execute(side.db);
  return new Map(
    rows.map((r) => [`${r.team}:${r.id}`, { version: BigInt(r.version), content: r.content }]),
  );
}

/** Keys listed at once when a range has rows on one side only. */
const oneSidedPage = 10_000;

/**
 * Classifies the keys of a range that only `side` has rows in (`isNew`: the new table), a page
 * of keys at a time (keys only, never values), storing the mismatches.
 */
async function oneSided(
  context: ChecksumContext,
  side: ChecksumSide,
  isNew: boolean,
  range: KeyRange,
): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const highWater = context.highWater === null ? undefined : BigInt(context.highWater);
  let after = range.after;
  for (;;) {
    const { rows } = await sql<{ team: string; id: string }>`
      SELECT t.team_id::text AS team, t.id::text AS id FROM ${side.table} AS t
      WHERE ${inRange({ after, upTo: range.upTo }, 't')}
      ORDER BY t.team_id, t.id LIMIT ${oneSidedPage}`.execute(side.db);
    if (rows.length === 0) break;
    const stored = { teams: [] as string[], ids: [] as string[], classes: [] as string[] };
    for (const row of rows) {
      const cls = isNew
        ? classify(undefined, { version: 0n, content: '' }, BigInt(row.id), highWater)
        : 'missing_in_new';
      counts[cls] = (counts[cls] ?? 0) + 1;
      if (!isAgreeing(cls)) {
        stored.teams.push(row.team);
        stored.ids.push(row.id);
        stored.classes.push(cls);
      }
    }
    await storeMismatches(context, stored.teams, stored.ids, stored.classes);
    const last = rows.at(-1);
    if (!last || rows.length < oneSidedPage) break;
    after = { team: last.team, id: last.id };
  }
  return counts;
}

async function storeMismatches(
  context: ChecksumContext,
  teams: string[],
  ids: string[],
  classes: string[],
): Promise<void> {
  if (classes.length > 0) await context.record(teams, ids, classes);
}

/** Compares a small range key by key, stores its mismatches, returns keys per class. */
async function compareLeaf(
  context: ChecksumContext,
  old: ChecksumSide,
  fresh: ChecksumSide,
  range: KeyRange,
): Promise<Record<string, number>> {
  const [o, n] = await Promise.all([
    leafRows(context, old, range),
    leafRows(context, fresh, range),
  ]);
  const counts: Record<string, number> = {};
  const teams: string[] = [];
  const ids: string[] = [];
  const classes: string[] = [];
  const highWater = context.highWater === null ? undefined : BigInt(context.highWater);
  for (const key of new Set([...o.keys(), ...n.keys()])) {
    const cls = classify(
      o.get(key),
      n.get(key),
      BigInt(key.slice(key.indexOf(':') + 1)),
      highWater,
    );
    counts[cls] = (counts[cls] ?? 0) + 1;
    if (!isAgreeing(cls)) {
      teams.push(key.slice(0, key.indexOf(':')));
      ids.push(key.slice(key.indexOf(':') + 1));
      classes.push(cls);
    }
  }
  await storeMismatches(context, teams, ids, classes);
  return counts;
}

/** The same decision as `classOf`, on one key's leaf rows. */
function classify(
  o: LeafRow | undefined,
  n: LeafRow | undefined,
  id: bigint,
  highWater: bigint | undefined,
): string {
  if (!n) return 'missing_in_new';
  if (!o) return highWater !== undefined && id <= highWater ? 'resurrected' : 'created_in_new';
  if (n.version < o.version) return 'older_in_new';
  if (n.version > o.version) return 'newer_in_new';
  return n.content === o.content ? 'same' : 'content_differs';
}

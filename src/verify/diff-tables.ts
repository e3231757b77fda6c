import { sql } from 'kysely';
import { regclassText } from '../db/identifiers.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { readTableShape, type TableShape } from '../db/table-shape.js';
import { VerifyRefusedError } from '../errors.js';
import { everyKey } from '../model/key.js';
import type { AgreeingClass } from '../model/mismatch-class.js';
import {
  type DiffedKey,
  type DiffTablesOptions,
  type ResolvedDiffTablesOptions,
  resolveDiffTablesOptions,
} from '../options/diff-tables-options.js';
import { estimateRows, splitRange } from '../persons/key-range.js';
import { type ChecksumContext, type ChecksumSide, checkRangeByChecksum } from './checksum-check.js';
import { comparedColumns } from './compared-columns.js';

/**
 * What {@link diffTables} found: rows on each side, keys per class, and the differing keys
 * (the first `maxKeys`; every one went to `onMismatch`).
 *
 * @example
 * ```ts
 * const { clean, counts, keys } = await diffTables({ old, new: copy });
 * ```
 */
export interface DiffTablesResult {
  /** No key is missing in the new table, older there, or different at the same version. */
  readonly clean: boolean;
  /** Rows of the old table compared. */
  readonly oldRows: number;
  /** Rows of the new table compared. */
  readonly newRows: number;
  /** Keys per class, the agreeing ones included. */
  readonly counts: Readonly<Partial<Record<DiffedKey['class'] | AgreeingClass, number>>>;
  /** Keys that differ (every class but the agreeing ones). */
  readonly mismatches: number;
  /** The first `maxKeys` differing keys. */
  readonly keys: readonly DiffedKey[];
  /** True when more keys differ than `keys` holds. */
  readonly truncated: boolean;
  /** How long the diff took, in milliseconds. */
  readonly ms: number;
}

/**
 * Compares two persons tables that one statement cannot join — in two databases, or on two
 * servers — with the checksum-and-bisect method of `verify({ method: 'checksum' })`: each side
 * computes row counts and sums of row hashes per key range in its own database, differing
 * ranges are cut by key quantiles down to `leafRows` rows, whose keys, versions and content
 * hashes (never values) are compared here. Classes as in `verify()`: a key only in `new`
 * counts as `created_in_new` (no `resurrected` without a migration's id high-water mark).
 * Nothing is written anywhere; rows changing during the diff can show up as differences (run
 * it again, or use `migration.verify()`, which re-checks). JSON hashes are comparable between
 * servers of the same major version.
 *
 * @example
 * ```ts
 * import { diffTables, openDatabase } from 'pg-dual-read';
 *
 * const result = await diffTables({
 *   old: { db: await openDatabase(process.env.PRIMARY_URL), table: 'posthog_person' },
 *   new: { db: await openDatabase(process.env.RESTORED_URL), table: 'posthog_person' },
 * });
 * if (!result.clean) console.error(result.counts, result.keys);
 * ```
 */
export async function diffTables(options: DiffTablesOptions): Promise<DiffTablesResult> {
  const resolved = resolveDiffTablesOptions(options);
  const started = performance.now();
  return sanitizeErrors('diffTables()', async () => {
    const [oldShape, newShape] = await Promise.all([
      personsTableShape('old', resolved.old),
      personsTableShape('new', resolved.new),
    ]);
    const found = keyCollector(resolved);
    const context: ChecksumContext = {
      columns: comparedColumns(oldShape, newShape, resolved.columns),
      highWater: null,
      record: found.record,
    };
    const old: ChecksumSide = {
      db: resolved.old.db.db,
      table: sql.id(resolved.old.schema, resolved.old.table),
    };
    const fresh: ChecksumSide = {
      db: resolved.new.db.db,
      table: sql.id(resolved.new.schema, resolved.new.table),
    };
    const rows = await estimateRows(
      old.db,
      old.table,
      regclassText(resolved.old.schema, resolved.old.table),
    );
    const parts = Math.max(1, Math.ceil(rows / resolved.chunkRows));
    const counts: Record<string, number> = {};
    let oldRows = 0;
    let newRows = 0;
    for (const chunk of await splitRange(old.db, old.table, everyKey, rows, parts)) {
      const chunkCounts = await checkRangeByChecksum(context, old, fresh, chunk, {
        leafRows: resolved.leafRows,
        fanout: resolved.fanout,
      });
      oldRows += chunkCounts.oldRows;
      newRows += chunkCounts.newRows;
      for (const [cls, n] of Object.entries(chunkCounts.byClass))
        counts[cls] = (counts[cls] ?? 0) + n;
    }
    return {
      clean: found.mismatches() === 0,
      oldRows,
      newRows,
      counts,
      mismatches: found.mismatches(),
      keys: found.keys.slice(0, resolved.maxKeys),
      truncated: found.keys.length > resolved.maxKeys,
      ms: performance.now() - started,
    };
  });
}

/** The shape of one side, refused when it is missing or is not a persons table. */
async function personsTableShape(
  which: 'old' | 'new',
  side: ResolvedDiffTablesOptions['old'],
): Promise<TableShape> {
  const shape = await readTableShape(side.db.db, side.schema, side.table);
  if (!shape) {
    throw new VerifyRefusedError(
      `diffTables(): the ${which} table ${side.schema}.${side.table} does not exist in its database.`,
    );
  }
  const missing = ['team_id', 'id', 'version'].filter(
    (c) => !shape.columns.some((column) => column.name === c),
  );
  if (missing.length > 0) {
    throw new VerifyRefusedError(
      `diffTables(): the ${which} table ${side.schema}.${side.table} lacks ${missing.join(', ')}: ` +
        'it compares persons tables keyed by (team_id, id) with a version.',
    );
  }
  return shape;
}

/** Counts the differing keys, keeps the first `maxKeys` (and one more) and hands each to `onMismatch`. */
function keyCollector(resolved: ResolvedDiffTablesOptions) {
  const keys: DiffedKey[] = [];
  let mismatches = 0;
  const record = async (teams: string[], ids: string[], classes: string[]) => {
    for (const [i, cls] of classes.entries()) {
      const key = {
        teamId: Number(teams[i]),
        personId: ids[i] ?? '',
        class: cls as DiffedKey['class'],
      };
      mismatches++;
      if (keys.length <= resolved.maxKeys) keys.push(key);
      await resolved.onMismatch?.(key);
    }
  };
  return { keys, record, mismatches: () => mismatches };
}

import { sql } from 'kysely';
import { z } from 'zod';
import { regclassText } from '../db/identifiers.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { readTableShape } from '../db/table-shape.js';
import { VerifyRefusedError } from '../errors.js';
import { everyKey } from '../model/key.js';
import { databaseHandle } from '../options/database-handle-option.js';
import { estimateRows, splitRange } from '../persons/key-range.js';
import { integerIn, parseOptions } from '../util/parse-options.js';
import { type ChecksumContext, type ChecksumSide, checkRangeByChecksum } from './checksum-check.js';
import { comparedColumns } from './compared-columns.js';
import type { AgreeingClass, MismatchClass } from './mismatch-class.js';

const side = (name: string) =>
  z
    .object({
      db: databaseHandle,
      schema: z
        .string({ error: `${name}.schema must be a string` })
        .min(1)
        .default('public'),
      table: z.string({ error: `${name}.table must be a table name` }).min(1),
    })
    .strict();

const diffTablesSchema = z
  .object({
    old: side('old'),
    new: side('new'),
    columns: z
      .array(z.string())
      .min(1, { error: 'columns must name at least one column' })
      .optional(),
    chunkRows: integerIn('chunkRows', 1_000, 100_000_000).default(1_000_000),
    leafRows: integerIn('leafRows', 1, 1_000_000).default(2_000),
    fanout: integerIn('fanout', 2, 1_024).default(16),
    maxKeys: integerIn('maxKeys', 0, 1_000_000).default(1_000),
    onMismatch: z
      .custom<(key: DiffedKey) => void | Promise<void>>((v) => typeof v === 'function', {
        error: 'onMismatch must be a function',
      })
      .optional(),
  })
  .strict();

/**
 * Options of {@link diffTables}.
 *
 * @example
 * ```ts
 * const options: DiffTablesOptions = {
 *   old: { db: primary, table: 'posthog_person' },
 *   new: { db: archive, schema: 'persons', table: 'posthog_person' },
 *   onMismatch: (key) => console.log(key.class, key.teamId, key.personId),
 * };
 * ```
 */
export type DiffTablesOptions = z.input<typeof diffTablesSchema>;

/** One key that differs between the two tables of {@link diffTables}. */
export interface DiffedKey {
  readonly teamId: number;
  readonly personId: string;
  readonly class: Extract<MismatchClass, 'missing_in_new' | 'older_in_new' | 'content_differs'>;
}

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
  readonly oldRows: number;
  readonly newRows: number;
  readonly counts: Readonly<Partial<Record<DiffedKey['class'] | AgreeingClass, number>>>;
  readonly mismatches: number;
  readonly keys: readonly DiffedKey[];
  readonly truncated: boolean;
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
  const resolved = parseOptions(diffTablesSchema, options, 'diffTables()');
  const started = performance.now();
  return sanitizeErrors('diffTables()', async () => {
    const [oldShape, newShape] = await Promise.all([
      readTableShape(resolved.old.db.db, resolved.old.schema, resolved.old.table),
      readTableShape(resolved.new.db.db, resolved.new.schema, resolved.new.table),
    ]);
    for (const [which, shape, given] of [
      ['old', oldShape, resolved.old],
      ['new', newShape, resolved.new],
    ] as const) {
      if (!shape) {
        throw new VerifyRefusedError(
          `diffTables(): the ${which} table ${given.schema}.${given.table} does not exist in its database.`,
        );
      }
      const missing = ['team_id', 'id', 'version'].filter(
        (c) => !shape.columns.some((column) => column.name === c),
      );
      if (missing.length > 0) {
        throw new VerifyRefusedError(
          `diffTables(): the ${which} table ${given.schema}.${given.table} lacks ${missing.join(', ')}: ` +
            'it compares persons tables keyed by (team_id, id) with a version.',
        );
      }
    }
    if (!oldShape || !newShape) throw new Error('unreachable');
    const columns = comparedColumns(oldShape, newShape, resolved.columns);
    const keys: DiffedKey[] = [];
    let mismatches = 0;
    const context: ChecksumContext = {
      columns,
      highWater: null,
      record: async (teams, ids, classes) => {
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
      },
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
    const chunks = await splitRange(
      old.db,
      old.table,
      everyKey,
      rows,
      Math.max(1, Math.ceil(rows / resolved.chunkRows)),
    );
    const counts: Record<string, number> = {};
    let oldRows = 0;
    let newRows = 0;
    for (const chunk of chunks) {
      const found = await checkRangeByChecksum(context, old, fresh, chunk, {
        leafRows: resolved.leafRows,
        fanout: resolved.fanout,
      });
      oldRows += found.oldRows;
      newRows += found.newRows;
      for (const [cls, n] of Object.entries(found.byClass)) counts[cls] = (counts[cls] ?? 0) + n;
    }
    return {
      clean: mismatches === 0,
      oldRows,
      newRows,
      counts,
      mismatches,
      keys: keys.slice(0, resolved.maxKeys),
      truncated: keys.length > resolved.maxKeys,
      ms: performance.now() - started,
    };
  });
}

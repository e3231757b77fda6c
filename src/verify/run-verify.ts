import createDebug from 'debug';
import { sql } from 'kysely';
import type { DatabaseHandle } from '../db/database-handle.js';
import { regclassText } from '../db/identifiers.js';
import { isSqlState, sanitizeErrors } from '../db/query-failed.js';
import { readTableShape } from '../db/table-shape.js';
import { NotInstalledError, VerifyRefusedError } from '../errors.js';
import type { DualReadEmitter } from '../events.js';
import { everyKey, type KeyRange } from '../model/key.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import type { ResolvedVerifyOptions } from '../options/verify-options.js';
import { estimateRows, splitRange } from '../persons/key-range.js';
import { loadPersonColumns } from '../persons/person-columns.js';
import { migrationTables } from '../persons/tables.js';
import { type ChecksumContext, checkRangeByChecksum } from './checksum-check.js';
import { comparedColumns } from './compared-columns.js';
import { type ChunkCounts, checkRangeByJoin } from './join-check.js';
import { type AgreeingClass, isAgreeing, type MismatchClass } from './mismatch-class.js';
import { confirmRepairs, recheckUntilSettled } from './recheck.js';
import { checkDistinctIds } from './referential-check.js';
import { type RepairResult, repairMismatches } from './repair.js';
import { type MismatchedKey, VerificationStore } from './verification-store.js';
import type { VerifyContext } from './verify-context.js';

const debug = createDebug('pg-dual-read:verify');

/**
 * What `migration.verify()` found: counts per class, the first mismatched keys (all of them
 * through `migration.mismatches(id)`), and whether the run is clean. Never row values.
 *
 * @example
 * ```ts
 * const result = await migration.verify();
 * if (!result.clean) {
 *   console.error(`${result.mismatches} mismatched keys`, result.counts);
 *   for await (const key of migration.mismatches(result.id)) console.error(key);
 * }
 * ```
 */
export interface VerificationResult {
  /** The run's id in the control schema. */
  readonly id: string;
  /** No key in a class that makes a run unclean remains after re-checks (and repair). */
  readonly clean: boolean;
  readonly method: 'join' | 'checksum';
  /** True when every key was checked (not only some backfill ranges). */
  readonly full: boolean;
  readonly columns: readonly string[];
  /** Rows of each table the check looked at. */
  readonly oldRows: number;
  readonly newRows: number;
  /** Keys per class: mismatches (open, after re-checks) and agreeing classes (at scan time). */
  readonly counts: Readonly<Partial<Record<MismatchClass | AgreeingClass, number>>>;
  /** Open keys in classes that make a run unclean. */
  readonly mismatches: number;
  /** The first `maxKeys` open mismatched keys, in key order. */
  readonly keys: readonly MismatchedKey[];
  /** True when there are more open keys than `keys` holds. */
  readonly truncated: boolean;
  /** Re-checks made while changed keys settled. */
  readonly rechecks: number;
  /** What `repair: true` changed; undefined without it. */
  readonly repair: RepairResult | undefined;
  readonly ms: number;
}

interface ControlRow {
  phase: string;
  epoch: string;
  high_water: string | null;
}

/** Runs one verification of a migration (see `PersonsMigration.verify`). @internal */
export async function runVerify(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  verify: ResolvedVerifyOptions,
  events: DualReadEmitter,
): Promise<VerificationResult> {
  const started = performance.now();
  const db = handle.db;
  const store = new VerificationStore(db, options);
  const control = await sanitizeErrors('verify()', () => readControl(handle, options));
  const tables = migrationTables(options);
  const { chunks, full, description, columns } = await sanitizeErrors(
    'verify() planning',
    async () => {
      const [oldShape, newShape] = await Promise.all([
        readTableShape(db, options.schema, options.oldTable),
        readTableShape(db, options.schema, options.newTable),
      ]);
      if (!oldShape || !newShape) {
        throw new NotInstalledError(
          `The persons tables of migration "${options.name}" are missing: run migration.prepare() to check them.`,
        );
      }
      const compared = comparedColumns(oldShape, newShape, verify.columns);
      return { ...(await planChunks(handle, options, verify)), columns: compared };
    },
  );
  const id = await sanitizeErrors('verify()', () =>
    store.create({
      method: verify.method,
      full,
      range: description,
      columns: columns.map((c) => c.name),
      epoch: control.epoch,
    }),
  );
  const context: VerifyContext = {
    db,
    options,
    tables,
    mismatchTable: store.mismatchTable,
    columns,
    highWater: control.high_water,
    verificationId: id,
  };
  const checksumContext: ChecksumContext = {
    columns,
    highWater: control.high_water,
    record: async (teams, ids, classes) => {
      await sql`INSERT INTO ${store.mismatchTable} (verification_id, team_id, person_id, class)
        SELECT ${id}::bigint, k.team_id, k.person_id, k.class
        FROM unnest(${teams}::bigint[], ${ids}::bigint[], ${classes}::text[]) AS k(team_id, person_id, class)
        ON CONFLICT DO NOTHING`.execute(db);
    },
  };
  try {
    return await sanitizeErrors('verify()', async () => {
      const agreeing: Record<string, number> = {};
      let oldRows = 0;
      let newRows = 0;
      for (const [index, chunk] of chunks.entries()) {
        verify.signal?.throwIfAborted();
        const chunkStarted = performance.now();
        const counts: ChunkCounts =
          verify.method === 'join'
            ? await checkRangeByJoin(context, chunk, chunks.length > 1)
            : await checkRangeByChecksum(
                checksumContext,
                { db, table: tables.old },
                { db, table: tables.new },
                chunk,
                { leafRows: verify.leafRows, fanout: verify.fanout },
              );
        oldRows += counts.oldRows;
        newRows += counts.newRows;
        let mismatches = 0;
        for (const [cls, n] of Object.entries(counts.byClass)) {
          if (isAgreeing(cls)) {
            agreeing[cls] = (agreeing[cls] ?? 0) + n;
          } else if (cls !== 'gone') {
            mismatches += n;
          }
        }
        events.emit('verify:chunk', {
          verificationId: id,
          chunk: index + 1,
          chunks: chunks.length,
          mismatches,
          ms: performance.now() - chunkStarted,
        });
      }
      if (verify.distinctIds) {
        verify.signal?.throwIfAborted();
        for (const range of full ? [everyKey] : chunks) await checkDistinctIds(context, range);
      }
      let rechecks = await recheckUntilSettled(
        context,
        verify.settleMs,
        verify.recheckAttempts,
        verify.signal,
      );
      let repair: RepairResult | undefined;
      if (verify.repair) {
        repair = await repairMismatches(context, await loadPersonColumns(db, options));
        await confirmRepairs(context);
        rechecks += await recheckUntilSettled(
          context,
          verify.settleMs,
          verify.recheckAttempts,
          verify.signal,
        );
      }
      const after = await readControl(handle, options);
      if (after.epoch !== control.epoch) {
        throw new VerifyRefusedError(
          `The phase of migration "${options.name}" changed during verify() (now ${after.phase}): ` +
            'the result would mix two phases and was discarded. Run verify() again.',
        );
      }
      const open = await store.openCounts(id);
      const mismatches = await store.failing(id);
      const counts = { ...agreeing, ...open };
      const clean = mismatches === 0;
      await store.finish(id, {
        status: clean ? 'clean' : 'mismatched',
        oldRows,
        newRows,
        counts,
        mismatches,
        ...(repair ? { repaired: { ...repair } } : {}),
      });
      const page = await store.page(id, undefined, verify.maxKeys + 1, false);
      const ms = performance.now() - started;
      debug(
        'verification %s of %s: %s, %d mismatches, %d ms',
        id,
        options.name,
        clean ? 'clean' : 'mismatched',
        mismatches,
        Math.round(ms),
      );
      events.emit('verify:done', { verificationId: id, clean, mismatches, ms });
      return {
        id,
        clean,
        method: verify.method,
        full,
        columns: columns.map((c) => c.name),
        oldRows,
        newRows,
        counts,
        mismatches,
        keys: page.slice(0, verify.maxKeys),
        truncated: page.length > verify.maxKeys,
        rechecks,
        repair,
        ms,
      };
    });
  } catch (error) {
    const aborted = verify.signal?.aborted === true;
    await store.markEnded(id, aborted ? 'aborted' : 'failed').catch(() => undefined);
    // An abort surfaces as the signal's reason (an AbortError), as fetch() does.
    throw aborted ? verify.signal?.reason : error;
  }
}

/** The control row, with the phase guard every verification starts from. */
async function readControl(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
): Promise<ControlRow> {
  let row: ControlRow | undefined;
  try {
    const { rows } = await sql<ControlRow>`
      SELECT phase, epoch::text AS epoch, dual_read_id_high_water::text AS high_water
      FROM ${sql.id(options.controlSchema, 'migration')} WHERE name = ${options.name}`.execute(
      handle.db,
    );
    row = rows[0];
  } catch (error) {
    if (isSqlState(error, '42P01') || isSqlState(error, '3F000') || isSqlState(error, '42703')) {
      throw new NotInstalledError(
        `The control schema "${options.controlSchema}" is missing or older than this version: ` +
          'run install() (CLI: pg-dual-read install), then retry.',
      );
    }
    throw error;
  }
  if (!row) {
    throw new NotInstalledError(
      `Migration "${options.name}" is not registered: run install() and prepare() first.`,
    );
  }
  if (row.phase !== 'dual_read') {
    throw new VerifyRefusedError(
      `verify() checks the invariant of phase dual_read (every old key has a new row at least ` +
        `as new), but migration "${options.name}" is in phase ${row.phase}. ` +
        (row.phase === 'old'
          ? 'Run startDualRead() and backfill() first.'
          : 'Verification is over once the new table serves reads.'),
    );
  }
  return row;
}

/** Key ranges to check: quantile chunks of every key, or the backfill ranges asked for. */
async function planChunks(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  verify: ResolvedVerifyOptions,
): Promise<{ chunks: KeyRange[]; full: boolean; description: string }> {
  const db = handle.db;
  if (verify.ranges) {
    const wanted = [...new Set(verify.ranges)].sort((a, b) => a - b);
    const { rows } = await sql<{
      range_id: number;
      start_team: string | null;
      start_id: string | null;
      end_team: string;
      end_id: string;
    }>`SELECT range_id, start_team::text AS start_team, start_id::text AS start_id,
        end_team::text AS end_team, end_id::text AS end_id
      FROM ${sql.id(options.controlSchema, 'backfill_range')}
      WHERE migration = ${options.name} AND range_id = ANY(${wanted}::int[])
      ORDER BY range_id`.execute(db);
    const missing = wanted.filter((r) => !rows.some((row) => row.range_id === r));
    if (missing.length > 0) {
      const { rows: known } = await sql<{ n: number; max: number | null }>`
        SELECT count(*)::int AS n, max(range_id) AS max
        FROM ${sql.id(options.controlSchema, 'backfill_range')}
        WHERE migration = ${options.name}`.execute(db);
      const count = known[0]?.n ?? 0;
      throw new VerifyRefusedError(
        `ranges: backfill range(s) ${missing.join(', ')} do not exist in migration "${options.name}" ` +
          (count === 0
            ? '(it has no backfill plan: run backfill() first, or verify without ranges).'
            : `(its plan has ${count} ranges, ids up to ${known[0]?.max}; see backfillStatus().ranges).`),
      );
    }
    return {
      chunks: rows.map((r) => ({
        after:
          r.start_team === null || r.start_id === null
            ? undefined
            : { team: r.start_team, id: r.start_id },
        upTo: { team: r.end_team, id: r.end_id },
      })),
      full: false,
      description: `backfill ranges ${wanted.join(', ')}`,
    };
  }
  const tables = migrationTables(options);
  const oldRows = await estimateRows(
    db,
    tables.old,
    regclassText(options.schema, options.oldTable),
  );
  const newRows = await estimateRows(
    db,
    tables.new,
    regclassText(options.schema, options.newTable),
  );
  const parts = Math.max(1, Math.ceil(Math.max(oldRows, newRows) / verify.chunkRows));
  // Cut at quantiles of the old keys; the first and last chunks are open-ended, so keys
  // created in the new table beyond the old ones are checked too.
  const chunks = await splitRange(db, tables.old, everyKey, oldRows, parts);
  return { chunks, full: true, description: 'every key' };
}

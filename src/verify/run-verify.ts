import createDebug from 'debug';
import { PlanStore } from '../backfill/plan-store.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { regclassText } from '../db/identifiers.js';
import { sanitizeErrors } from '../db/query-failed.js';
import { readTableShape } from '../db/table-shape.js';
import { NotInstalledError, VerifyRefusedError } from '../errors.js';
import type { DualReadEmitter } from '../events.js';
import { everyKey, type KeyRange } from '../model/key.js';
import {
  type AgreeingClass,
  isAgreeing,
  type MismatchClass,
  mismatchClasses,
} from '../model/mismatch-class.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import type { ResolvedVerifyOptions } from '../options/verify-options.js';
import { estimateRows, splitRange } from '../persons/key-range.js';
import { loadPersonColumns } from '../persons/person-columns.js';
import { migrationTables } from '../persons/tables.js';
import { type ControlRowWithHighWater, PhaseStore } from '../phases/phase-store.js';
import { StrayWrites } from '../phases/stray-writes.js';
import { type ChecksumContext, checkRangeByChecksum } from './checksum-check.js';
import { type ComparedColumn, comparedColumns } from './compared-columns.js';
import { type ChunkCounts, checkRangeByJoin } from './join-check.js';
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
  /** The option `method` it ran with. */
  readonly method: 'join' | 'checksum';
  /** True when every key was checked (not only some backfill ranges). */
  readonly full: boolean;
  /** The columns whose content was compared. */
  readonly columns: readonly string[];
  /** Rows of the old table the check looked at. */
  readonly oldRows: number;
  /** Rows of the new table the check looked at. */
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
  /**
   * Keys of the old table written by something other than the library since `dual_read` began
   * (rule `stray-writes`; the keys are in `status().strayWrites`): they do not make the run
   * unclean by themselves, they block the cutover.
   */
  readonly strayWrites: number;
  /** How long the run took, in milliseconds. */
  readonly ms: number;
}

/** What a run checks, decided before it starts. */
interface VerifyPlan {
  readonly chunks: readonly KeyRange[];
  readonly full: boolean;
  readonly description: string;
  readonly columns: readonly ComparedColumn[];
}

/** What the chunks of a run found, before re-checks. */
interface ChunkTotals {
  readonly oldRows: number;
  readonly newRows: number;
  /** Keys of agreeing classes (counted at scan time, never stored). */
  readonly agreeing: Readonly<Record<string, number>>;
}

/**
 * Runs one verification of a migration (see `PersonsMigration.verify`): plan the chunks, check
 * them, settle the mismatches (re-checks, and the repair when asked), finish the run. A failed
 * or aborted run is stored as such. @internal
 *
 * @example
 * ```ts
 * const result = await runVerify(handle, options, resolveVerifyOptions({ repair: true }), events);
 * ```
 */
export async function runVerify(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  verify: ResolvedVerifyOptions,
  events: DualReadEmitter,
): Promise<VerificationResult> {
  const started = performance.now();
  const db = handle.db;
  const store = new VerificationStore(options);
  const control = await readDualReadControl(handle, options);
  const plan = await sanitizeErrors('verify() planning', () => planRun(handle, options, verify));
  const id = await sanitizeErrors('verify()', () =>
    store.create(db, {
      method: verify.method,
      full: plan.full,
      range: plan.description,
      columns: plan.columns.map((c) => c.name),
      epoch: control.state.epoch,
    }),
  );
  const context: VerifyContext = {
    db,
    options,
    tables: migrationTables(options),
    mismatchTable: store.mismatchTable,
    columns: plan.columns,
    highWater: control.idHighWater,
    verificationId: id,
  };
  try {
    return await sanitizeErrors('verify()', async () => {
      const totals = await checkChunks(context, store, plan, verify, events);
      const { rechecks, repair } = await settle(context, verify);
      await refuseIfPhaseChanged(handle, options, control);
      return await finishRun(context, store, {
        plan,
        verify,
        totals,
        rechecks,
        repair,
        started,
        events,
      });
    });
  } catch (error) {
    const aborted = verify.signal?.aborted === true;
    await store.markEnded(db, id, aborted ? 'aborted' : 'failed').catch(() => undefined);
    // An abort surfaces as the signal's reason (an AbortError), as fetch() does.
    throw aborted ? verify.signal?.reason : error;
  }
}

/** The control row, with the phase guard every verification starts from. */
async function readDualReadControl(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
): Promise<ControlRowWithHighWater> {
  const control = await new PhaseStore(options).readWithHighWater(handle.db);
  const { phase } = control.state;
  if (phase !== 'dual_read') {
    throw new VerifyRefusedError(
      `verify() checks the invariant of phase dual_read (every old key has a new row at least ` +
        `as new), but migration "${options.name}" is in phase ${phase}. ` +
        (phase === 'old'
          ? 'Run startDualRead() and backfill() first.'
          : 'Verification is over once the new table serves reads.'),
    );
  }
  return control;
}

/** The columns to compare and the key ranges to check. */
async function planRun(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  verify: ResolvedVerifyOptions,
): Promise<VerifyPlan> {
  const db = handle.db;
  const [oldShape, newShape] = await Promise.all([
    readTableShape(db, options.schema, options.oldTable),
    readTableShape(db, options.schema, options.newTable),
  ]);
  if (!oldShape || !newShape) {
    throw new NotInstalledError(
      `The persons tables of migration "${options.name}" are missing: run migration.prepare() to check them.`,
    );
  }
  const columns = comparedColumns(oldShape, newShape, verify.columns);
  const chunks = verify.ranges
    ? await backfillRangeChunks(handle, options, verify.ranges)
    : await quantileChunks(handle, options, verify.chunkRows);
  return { ...chunks, columns };
}

/** Checks each chunk with the run's method, storing its mismatched keys; counts rows and agreeing keys. */
async function checkChunks(
  context: VerifyContext,
  store: VerificationStore,
  plan: VerifyPlan,
  verify: ResolvedVerifyOptions,
  events: DualReadEmitter,
): Promise<ChunkTotals> {
  const { db, tables, verificationId } = context;
  const checksumContext: ChecksumContext = {
    columns: plan.columns,
    highWater: context.highWater,
    record: (teams, ids, classes) =>
      store.recordMismatches(db, verificationId, { teams, ids, classes }),
  };
  const agreeing: Record<string, number> = {};
  let oldRows = 0;
  let newRows = 0;
  for (const [index, chunk] of plan.chunks.entries()) {
    verify.signal?.throwIfAborted();
    const chunkStarted = performance.now();
    const counts: ChunkCounts =
      verify.method === 'join'
        ? await checkRangeByJoin(context, chunk, plan.chunks.length > 1)
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
      if (isAgreeing(cls)) agreeing[cls] = (agreeing[cls] ?? 0) + n;
      else if (cls !== 'gone') mismatches += n;
    }
    events.emit('verify:chunk', {
      verificationId,
      chunk: index + 1,
      chunks: plan.chunks.length,
      mismatches,
      ms: performance.now() - chunkStarted,
    });
  }
  if (verify.distinctIds) {
    verify.signal?.throwIfAborted();
    for (const range of plan.full ? [everyKey] : plan.chunks)
      await checkDistinctIds(context, range);
  }
  return { oldRows, newRows, agreeing };
}

/**
 * Re-checks the stored mismatches once writes settle (rule `one-snapshot-check`); with
 * `repair`, repairs the copyable ones, confirms them and re-checks again.
 */
async function settle(
  context: VerifyContext,
  verify: ResolvedVerifyOptions,
): Promise<{ rechecks: number; repair: RepairResult | undefined }> {
  const recheck = () =>
    recheckUntilSettled(context, verify.settleMs, verify.recheckAttempts, verify.signal);
  let rechecks = await recheck();
  if (!verify.repair) return { rechecks, repair: undefined };
  const repair = await repairMismatches(
    context,
    await loadPersonColumns(context.db, context.options),
  );
  await confirmRepairs(context);
  rechecks += await recheck();
  return { rechecks, repair };
}

/** A run that spans a phase change would mix two phases: it is discarded. */
async function refuseIfPhaseChanged(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  before: ControlRowWithHighWater,
): Promise<void> {
  const now = await new PhaseStore(options).read(handle.db);
  if (now.epoch === before.state.epoch) return;
  throw new VerifyRefusedError(
    `The phase of migration "${options.name}" changed during verify() (now ${now.phase}): ` +
      'the result would mix two phases and was discarded. Run verify() again.',
  );
}

/** Stores the run's outcome and builds the result with its first keys. */
async function finishRun(
  context: VerifyContext,
  store: VerificationStore,
  run: {
    readonly plan: VerifyPlan;
    readonly verify: ResolvedVerifyOptions;
    readonly totals: ChunkTotals;
    readonly rechecks: number;
    readonly repair: RepairResult | undefined;
    readonly started: number;
    readonly events: DualReadEmitter;
  },
): Promise<VerificationResult> {
  const { db, verificationId: id, options } = context;
  const { plan, verify, totals, repair } = run;
  const counts = { ...totals.agreeing, ...(await store.openCounts(db, id)) };
  const mismatches = await store.failing(db, id);
  const clean = mismatches === 0;
  await store.finish(db, id, {
    status: clean ? 'clean' : 'mismatched',
    oldRows: totals.oldRows,
    newRows: totals.newRows,
    counts,
    mismatches,
    ...(repair ? { repaired: { ...repair } } : {}),
  });
  const page = await store.page(db, id, undefined, verify.maxKeys + 1, false);
  const ms = performance.now() - run.started;
  debug(
    'verification %s of %s: %s, %d mismatches, %d ms',
    id,
    options.name,
    clean ? 'clean' : 'mismatched',
    mismatches,
    Math.round(ms),
  );
  run.events.emit('verify:done', {
    verificationId: id,
    clean,
    mismatches,
    counts: mismatchCounts(counts),
    ms,
  });
  return {
    id,
    clean,
    method: verify.method,
    full: plan.full,
    columns: plan.columns.map((c) => c.name),
    oldRows: totals.oldRows,
    newRows: totals.newRows,
    counts,
    mismatches,
    keys: page.slice(0, verify.maxKeys),
    truncated: page.length > verify.maxKeys,
    rechecks: run.rechecks,
    repair,
    strayWrites: (await new StrayWrites(options).read(db, 0)).count,
    ms,
  };
}

/** Every mismatch class with its open keys (0 when none), for the `verify:done` event. */
function mismatchCounts(
  counts: Readonly<Partial<Record<string, number>>>,
): Record<MismatchClass, number> {
  const byClass = {} as Record<MismatchClass, number>;
  for (const cls of mismatchClasses) byClass[cls] = counts[cls] ?? 0;
  return byClass;
}

/** The backfill ranges asked for, as chunks; unknown range ids are refused, naming them. */
async function backfillRangeChunks(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  rangeIds: readonly number[],
): Promise<Omit<VerifyPlan, 'columns'>> {
  const wanted = [...new Set(rangeIds)].sort((a, b) => a - b);
  const plans = new PlanStore(options);
  const ranges = await plans.rangesById(handle.db, wanted);
  const missing = wanted.filter((r) => !ranges.some((range) => range.rangeId === r));
  if (missing.length > 0) {
    const { count, maxRangeId } = await plans.rangeCount(handle.db);
    throw new VerifyRefusedError(
      `ranges: backfill range(s) ${missing.join(', ')} do not exist in migration "${options.name}" ` +
        (count === 0
          ? '(it has no backfill plan: run backfill() first, or verify without ranges).'
          : `(its plan has ${count} ranges, ids up to ${maxRangeId}; see backfillStatus().ranges).`),
    );
  }
  return {
    chunks: ranges.map(({ after, upTo }) => ({ after, upTo })),
    full: false,
    description: `backfill ranges ${wanted.join(', ')}`,
  };
}

/**
 * Every key, cut at quantiles of the old keys into chunks of about `chunkRows` rows; the first
 * and last chunks are open-ended, so keys created in the new table beyond the old ones are
 * checked too.
 */
async function quantileChunks(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  chunkRows: number,
): Promise<Omit<VerifyPlan, 'columns'>> {
  const db = handle.db;
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
  const parts = Math.max(1, Math.ceil(Math.max(oldRows, newRows) / chunkRows));
  const chunks = await splitRange(db, tables.old, everyKey, oldRows, parts);
  return { chunks, full: true, description: 'every key' };
}

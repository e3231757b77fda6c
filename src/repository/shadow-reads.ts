import createDebug from 'debug';
import type { DatabaseHandle } from '../db/database-handle.js';
import { setLocal } from '../db/local-settings.js';
import { describeError, toQueryFailedError } from '../db/query-failed.js';
import { QueryFailedError } from '../errors.js';
import type { DualReadEmitter } from '../events.js';
import type { PersonColumns } from '../persons/person-columns.js';
import type { PersonReads } from './person-reads.js';
import type { ReadStatsMethod, ReadStatsRecorder } from './read-stats.js';

const debug = createDebug('pg-dual-read:shadow');

/** Shadow reads running at once per repository; more sampled reads are skipped. @internal */
export const maxConcurrentShadowReads = 4;

/** The resolved option `shadowReads`. @internal */
export interface ShadowReadsConfig {
  readonly sampleRate: number;
  readonly timeoutMs: number;
}

/** What a shadow read needs of the repository's SQL. @internal */
export interface ShadowSql {
  readonly reads: PersonReads;
  readonly columns: PersonColumns;
}

/** One person of a merged answer, as the caller got it (a deep copy, so the caller may mutate). */
interface Expected {
  readonly teamId: number;
  readonly personId: string;
  readonly values: readonly unknown[];
}

/**
 * Scientist-style shadow reads: a sampled merged read in `dual_read` is compared, after the
 * caller has its answer, with a read of the new table alone.
 *
 * **Off the hot path.** The read only draws the sample and copies its answer (sampled reads
 * only); the shadow read is scheduled with `setImmediate` (unref'd) and never awaited by it.
 * Nothing it does can throw into the caller or change the answer: every error ends as a
 * `read:shadow-failed` event.
 *
 * **Bounded.** At most {@link maxConcurrentShadowReads} run at once. Each is one read-only
 * transaction: `set_config('statement_timeout', timeoutMs, true)` (local to it) then one
 * SELECT by the `(team_id, id)` keys of the answer, and a timer (unref'd) gives up after
 * `timeoutMs` even while the read waits for a connection (the transaction is then abandoned
 * at its next step). The transaction issues its statements back to back through its own
 * connection: on PGlite, whose one session the dialect hands to one transaction at a time, it
 * never waits on another query while holding the session.
 *
 * **What counts as a mismatch.** A key present in the merged answer that the new table lacks,
 * or holds with another version or other content (JSON compared as values, timestamps as
 * instants). A key the merged answer took from the old table is a mismatch until it is
 * copied; a row changed between the two reads is one too (a true difference at that instant).
 * Events carry keys only, never row values.
 * @internal
 */
export class ShadowReads {
  private running = 0;
  private closed = false;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly config: ShadowReadsConfig | undefined,
    private readonly handle: DatabaseHandle,
    private readonly events: DualReadEmitter,
    private readonly stats: ReadStatsRecorder,
  ) {}

  /**
   * Called by a `dual_read` read with the rows it returns: draws the sample and, when drawn,
   * schedules the comparison. Never throws.
   */
  offer(method: ReadStatsMethod, rows: readonly Record<string, unknown>[], s: ShadowSql): void {
    const config = this.config;
    if (!config || rows.length === 0 || this.closed) return;
    if (config.sampleRate < 1 && Math.random() >= config.sampleRate) return;
    const generation = this.stats.generation;
    this.stats.recordShadow(method, 'sampled', generation);
    if (this.running >= maxConcurrentShadowReads) {
      this.stats.recordShadow(method, 'skipped', generation);
      return;
    }
    let expected: Expected[];
    try {
      expected = snapshot(rows, s.columns.all);
    } catch (error) {
      this.fail(method, generation, error);
      return;
    }
    this.running += 1;
    const done = new Promise<void>((resolve) => {
      setImmediate(() => {
        this.compare(method, generation, expected, s, config)
          .catch((error: unknown) =>
            debug('shadow read bookkeeping failed: %s', describeError(error)),
          )
          .finally(resolve);
      }).unref();
    });
    this.inFlight.add(done);
    void done.finally(() => {
      this.running -= 1;
      this.inFlight.delete(done);
    });
  }

  /**
   * Stops sampling; shadow reads still running finish (bounded by `timeoutMs`) without
   * emitting events, counted as skipped. Errors after close are swallowed. Resolves when
   * they have.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.inFlight]);
  }

  private async compare(
    method: ReadStatsMethod,
    generation: number,
    expected: readonly Expected[],
    s: ShadowSql,
    config: ShadowReadsConfig,
  ): Promise<void> {
    if (this.closed) {
      this.stats.recordShadow(method, 'skipped', generation);
      return;
    }
    const db = this.handle.db;
    const query = s.reads.newTableByPersonKeys(
      expected.map((e) => e.teamId),
      expected.map((e) => e.personId),
    );
    // Compiled only to describe a failure: SQL text and parameter count, never the values.
    const compiled = () => {
      try {
        return query.compile(db);
      } catch {
        return { sql: '(shadow read)', parameters: [] };
      }
    };
    const timedOut = () =>
      new QueryFailedError(
        `Shadow read of ${method} timed out after ${config.timeoutMs} ms (shadowReads.timeoutMs); ` +
          'the caller got the merged answer.',
        compiled().sql,
        compiled().parameters.length,
        '57014',
      );
    const deadline = Date.now() + config.timeoutMs;
    const read = db
      .transaction()
      .setAccessMode('read only')
      .execute(async (trx) => {
        // Waited too long for a connection (or for PGlite's session): give up before reading.
        if (Date.now() >= deadline) throw timedOut();
        await setLocal(trx, { statement_timeout: String(config.timeoutMs) }, 'shadow-read-timeout');
        return (await query.execute(trx)).rows as Record<string, unknown>[];
      });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      read.then(
        (rows) => ({ rows }),
        (error: unknown) => ({ error }),
      ),
      new Promise<{ error: unknown }>((resolve) => {
        timer = setTimeout(() => resolve({ error: timedOut() }), config.timeoutMs);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
    this.report(method, generation, expected, s, outcome, compiled);
    // A timed-out transaction still counts as running (and close() waits for it) until it
    // really ends; its late result or error is dropped.
    await read.then(
      () => undefined,
      () => undefined,
    );
  }

  private report(
    method: ReadStatsMethod,
    generation: number,
    expected: readonly Expected[],
    s: ShadowSql,
    outcome: { rows: Record<string, unknown>[] } | { error: unknown },
    compiled: () => { sql: string; parameters: readonly unknown[] },
  ): void {
    if (this.closed) {
      this.stats.recordShadow(method, 'skipped', generation);
      return;
    }
    if ('error' in outcome) {
      let error: QueryFailedError;
      if (outcome.error instanceof QueryFailedError) error = outcome.error;
      else {
        const { sql: text, parameters } = compiled();
        error = toQueryFailedError(outcome.error, text, parameters.length);
      }
      this.fail(method, generation, error);
      return;
    }
    const mismatched = differences(expected, outcome.rows, s.columns.all);
    if (mismatched.length === 0) {
      this.stats.recordShadow(method, 'matched', generation);
      return;
    }
    this.stats.recordShadow(method, 'mismatched', generation, mismatched.length);
    this.events.emit('read:shadow-mismatch', { method, keys: mismatched });
  }

  private fail(method: ReadStatsMethod, generation: number, error: unknown): void {
    if (this.closed) {
      this.stats.recordShadow(method, 'skipped', generation);
      return;
    }
    debug('shadow read of %s failed: %s', method, describeError(error));
    this.stats.recordShadow(method, 'failed', generation);
    this.events.emit('read:shadow-failed', { method, error });
  }
}

function keyOf(teamId: unknown, personId: unknown): string {
  return `${String(teamId)}/${String(personId)}`;
}

/** The persons of an answer, one per key, deep-copied before the caller can change them. */
function snapshot(
  rows: readonly Record<string, unknown>[],
  columns: readonly string[],
): Expected[] {
  const seen = new Set<string>();
  const expected: Expected[] = [];
  for (const row of rows) {
    const key = keyOf(row.team_id, row.id);
    if (seen.has(key)) continue; // several distinct ids of one person
    seen.add(key);
    expected.push({
      teamId: Number(row.team_id),
      personId: String(row.id),
      values: structuredClone(columns.map((c) => row[c])),
    });
  }
  return expected;
}

/** Keys of `expected` that `actual` (the new table's rows) lacks or holds differently. */
function differences(
  expected: readonly Expected[],
  actual: readonly Record<string, unknown>[],
  columns: readonly string[],
): { teamId: number; personId: string }[] {
  const byKey = new Map(actual.map((row) => [keyOf(row.team_id, row.id), row]));
  const mismatched: { teamId: number; personId: string }[] = [];
  for (const e of expected) {
    const row = byKey.get(keyOf(e.teamId, e.personId));
    if (!row || !columns.every((c, i) => sameValue(e.values[i], row[c]))) {
      mismatched.push({ teamId: e.teamId, personId: e.personId });
    }
  }
  return mismatched;
}

/** Deep equality of values as the driver returns them: JSON by value, dates as instants. @internal */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  }
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (!ArrayBuffer.isView(a) || !ArrayBuffer.isView(b) || a.byteLength !== b.byteLength) {
      return false;
    }
    return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
      Buffer.from(b.buffer, b.byteOffset, b.byteLength),
    );
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return (
      Array.isArray(a) &&
      Array.isArray(b) &&
      a.length === b.length &&
      a.every((v, i) => sameValue(v, b[i]))
    );
  }
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  return keys.every((k) => Object.hasOwn(y, k) && sameValue(x[k], y[k]));
}

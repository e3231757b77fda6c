/**
 * The soak's history checker can fail: each kind of violation, planted in a small history or
 * in the final tables, is counted (and a clean history counts none). No database: the checker
 * reads the history and the final state it is given.
 */
import { describe, expect, it } from 'vitest';
import {
  checkHistory,
  type FinalPerson,
  noViolations,
  type SeededPerson,
  type Violations,
} from '../../soak/checker.js';
import type { Answer, HistoryOp, Invocation, Outcome, PersonRef } from '../../soak/history.js';

const A: PersonRef = [1, '10'];
const B: PersonRef = [1, '11'];
const H: PersonRef = [1, '99'];

function history(...steps: [number, Invocation, Outcome, Answer?][]): HistoryOp[] {
  return steps.map(([writer, invocation, outcome, answer], i) => ({
    writer,
    n: i + 1,
    invocation,
    outcome,
    ...(answer ? { answer } : {}),
    start: i * 10,
    ...(outcome === 'unknown' ? {} : { end: i * 10 + 5 }),
  }));
}

/** Seeded A and B (writer 0's), hot H; each with one distinct id. */
const seeded = new Map<string, SeededPerson>([
  ['1:10', { version: 0, dids: ['a'] }],
  ['1:11', { version: 0, dids: ['b'] }],
  ['1:99', { version: 0, dids: ['h'] }],
]);

function check(
  ops: HistoryOp[],
  persons: Record<string, FinalPerson>,
  dids: Record<string, string>,
): Violations {
  const final = {
    persons: new Map(Object.entries(persons)),
    dids: new Map(Object.entries(dids)),
  };
  return checkHistory(ops, final, seeded, [H]).violations;
}

const zero: Violations = noViolations();
const untouched = {
  '1:10': { version: 0, properties: {} },
  '1:11': { version: 0, properties: {} },
};
const hotAt = (version: number, properties: Record<string, unknown> = {}) => ({
  '1:99': { version, properties },
});
const baseDids = { '1:a': '10', '1:b': '11', '1:h': '99' };

describe('soak history checker', () => {
  it('counts nothing when the final tables reflect every acknowledged operation', () => {
    const ops = history(
      [0, { op: 'update', p: A, seq: 1, hot: false }, 'ok', { found: true, version: 1 }],
      [0, { op: 'read', p: A }, 'ok', { read: { s: 1, version: 1 } }],
      [0, { op: 'merge', source: B, target: A }, 'ok', { status: 'moved', found: true }],
      [0, { op: 'update', p: H, seq: 3, hot: true }, 'ok', { found: true, version: 1 }],
      [1, { op: 'update', p: H, seq: 1, hot: true }, 'unknown'],
    );
    const violations = check(
      ops,
      { '1:10': { version: 1, properties: { s0: 1 } }, ...hotAt(2, { s0: 3, s1: 1 }) },
      { '1:a': '10', '1:b': '10', '1:h': '99' },
    );
    expect(violations).toEqual(zero);
  });

  it('a lost update, a resurrected person, an orphan distinct id', () => {
    const ops = history(
      [0, { op: 'update', p: A, seq: 1, hot: false }, 'ok', { found: true, version: 1 }],
      [0, { op: 'delete', p: B }, 'ok', { found: true }],
    );
    const violations = check(
      ops,
      { ...untouched, ...hotAt(0) },
      { ...baseDids, '1:b': '11', '1:x': '404' },
    );
    expect(violations).toMatchObject({ lost: 1, resurrected: 1, orphans: 1 });
  });

  it('half of a merge whose outcome is unknown', () => {
    const ops = history([0, { op: 'merge', source: B, target: A }, 'unknown']);
    // B is gone but its distinct id did not move to A: neither before nor after.
    const violations = check(
      ops,
      { '1:10': { version: 0, properties: {} }, ...hotAt(0) },
      { '1:a': '10', '1:h': '99' },
    );
    expect(violations.halfDone).toBe(1);
  });

  it('a failed update that happened, and a failed create that left a person', () => {
    const ops = history(
      [0, { op: 'update', p: A, seq: 7, hot: false }, 'fail'],
      [0, { op: 'create', team: 1, did: 'w0-c8', seq: 8 }, 'fail'],
    );
    const violations = check(
      ops,
      {
        '1:10': { version: 1, properties: { s0: 7 } },
        '1:11': { version: 0, properties: {} },
        '1:12': { version: 0, properties: { soak_c: 'w0-c8', s0: 8 } },
        ...hotAt(0),
      },
      { ...baseDids, '1:w0-c8': '12' },
    );
    expect(violations.phantom).toBe(2);
  });

  it('a stale read, and an update answered with a version that went back', () => {
    const ops = history(
      [0, { op: 'update', p: A, seq: 1, hot: false }, 'ok', { found: true, version: 1 }],
      [0, { op: 'read', p: A }, 'ok', { read: { s: null, version: 0 } }],
      [0, { op: 'update', p: B, seq: 2, hot: false }, 'ok', { found: true, version: 5 }],
    );
    const violations = check(
      ops,
      {
        '1:10': { version: 1, properties: { s0: 1 } },
        '1:11': { version: 5, properties: { s0: 2 } },
        ...hotAt(0),
      },
      baseDids,
    );
    expect(violations).toMatchObject({ staleReads: 1, versions: 1 });
  });

  it('two acknowledged updates of a hot person that returned one version', () => {
    const ops = history(
      [0, { op: 'update', p: H, seq: 1, hot: true }, 'ok', { found: true, version: 1 }],
      [1, { op: 'update', p: H, seq: 1, hot: true }, 'ok', { found: true, version: 1 }],
    );
    const violations = check(ops, { ...untouched, ...hotAt(1, { s0: 1, s1: 1 }) }, baseDids);
    expect(violations.lost).toBeGreaterThanOrEqual(1);
    expect(violations.versions).toBeGreaterThanOrEqual(1);
  });

  it('two operations of one writer on one person that overlapped (a harness bug)', () => {
    const ops = history(
      [0, { op: 'update', p: A, seq: 1, hot: false }, 'ok', { found: true, version: 1 }],
      [0, { op: 'update', p: A, seq: 2, hot: false }, 'ok', { found: true, version: 2 }],
    ).map((op, i) => (i === 1 ? { ...op, start: op.start - 8 } : op));
    const violations = check(
      ops,
      {
        '1:10': { version: 2, properties: { s0: 2 } },
        '1:11': { version: 0, properties: {} },
        ...hotAt(0),
      },
      baseDids,
    );
    expect(violations).toEqual({ ...zero, overlaps: 1 });
  });

  it('an unknown create that left a person without its distinct id', () => {
    const ops = history([0, { op: 'create', team: 1, did: 'w0-c1', seq: 1 }, 'unknown']);
    const violations = check(
      ops,
      { ...untouched, '1:12': { version: 0, properties: { soak_c: 'w0-c1' } }, ...hotAt(0) },
      baseDids,
    );
    expect(violations.halfDone).toBe(1);
  });
});

/**
 * The soak's history checker: decides a run from its history and the final tables alone
 * (Jepsen's rule: every acknowledged operation is reflected; one whose outcome is unknown may
 * have happened or not, but not half; one that failed did not happen).
 *
 * Each writer's own persons are replayed in the writer's order (it never runs two operations
 * of one person at once), against a model that starts from what the harness read of them;
 * after an operation of unknown outcome the writer leaves its persons alone, so their final
 * state must be the model's state before it or after it. The hot persons, written by every
 * writer at once, are checked by arithmetic: each writer's own property key holds its last
 * acknowledged value (or a later unknown one), the version moved by the acknowledged updates
 * plus some of the unknown ones, and no two acknowledged updates returned the same version
 * or went back in time.
 */
import type { HistoryOp, Invocation, PersonRef } from './history.js';

/** A person as the final tables hold it. */
export interface FinalPerson {
  readonly version: number;
  readonly properties: Record<string, unknown>;
}

/** The final tables, as read after the run. */
export interface FinalState {
  /** Every person the repository reads, by `team:id`. */
  readonly persons: ReadonlyMap<string, FinalPerson>;
  /** Every distinct id row: `team:distinct id` -> person id. */
  readonly dids: ReadonlyMap<string, string>;
}

/** What the harness read of a seeded person before the writers started. */
export interface SeededPerson {
  readonly version: number;
  readonly dids: readonly string[];
}

/** The counts that decide a run: every one must be 0. */
export interface Violations {
  /** Acknowledged writes not reflected (content, existence, version or distinct id). */
  lost: number;
  /** Persons readable after an acknowledged delete (or merge). */
  resurrected: number;
  /** Distinct ids pointing at no person. */
  orphans: number;
  /** Operations of unknown outcome that left neither the state before nor the state after. */
  halfDone: number;
  /** Failed operations (they said nothing happened) that happened anyway. */
  phantom: number;
  /** Versions that went back, repeated, or did not move by one per acknowledged update. */
  versions: number;
  /** Reads of a person that did not return its last acknowledged state. */
  staleReads: number;
  /**
   * Operations of one writer on one person that overlapped in time: the writers promise never
   * to do that (their histories replay in order only then), so a count here is a harness bug.
   */
  overlaps: number;
}

export interface Verdict {
  readonly violations: Violations;
  /** Operations by `op/outcome`, e.g. `update/ok`. */
  readonly operations: Readonly<Record<string, number>>;
  /** The first findings, with keys only (never property values). */
  readonly findings: readonly string[];
}

interface ModelPerson {
  alive: boolean;
  version: number;
  /** The writer's own property `s<writer>`; null when absent. */
  s: number | null;
  dids: Set<string>;
}

const key = (team: number, id: string) => `${team}:${id}`;
const refKey = ([team, id]: PersonRef) => key(team, id);

/** Every count at 0: what a run must end with. */
export function noViolations(): Violations {
  return {
    lost: 0,
    resurrected: 0,
    orphans: 0,
    halfDone: 0,
    phantom: 0,
    versions: 0,
    staleReads: 0,
    overlaps: 0,
  };
}

class Checker {
  readonly violations: Violations = noViolations();
  readonly findings: string[] = [];
  /** Per writer and person, when its last operation ended (undefined: never, or unknown). */
  private readonly lastEnd = new Map<string, number | undefined>();
  /** `team:person id` -> its distinct ids in the final table. */
  private readonly didsByPerson = new Map<string, Set<string>>();

  constructor(
    readonly final: FinalState,
    private readonly seeded: ReadonlyMap<string, SeededPerson>,
  ) {
    for (const [k, personId] of final.dids) {
      const team = k.slice(0, k.indexOf(':'));
      const owner = `${team}:${personId}`;
      const set = this.didsByPerson.get(owner) ?? new Set<string>();
      set.add(k.slice(team.length + 1));
      this.didsByPerson.set(owner, set);
    }
  }

  flag(kind: keyof Violations, finding: string): void {
    this.violations[kind] += 1;
    if (this.findings.length < 40) this.findings.push(`${kind}: ${finding}`);
  }

  /** Flags an operation of writer `w` on `ref` that started before the previous one ended. */
  inOrder(w: number, ref: PersonRef, op: HistoryOp): void {
    const k = `${w}/${refKey(ref)}`;
    if (this.lastEnd.has(k)) {
      const end = this.lastEnd.get(k);
      if (end === undefined || end > op.start) {
        this.flag(
          'overlaps',
          `w${w}#${op.n} ${op.invocation.op} on ${refKey(ref)} overlapped the previous one`,
        );
      }
    }
    this.lastEnd.set(k, op.end);
  }

  /** The model of a writer's person, from the seed when first seen. */
  seededModel(ref: PersonRef): ModelPerson {
    const seed = this.seeded.get(refKey(ref));
    return {
      alive: seed !== undefined,
      version: seed?.version ?? 0,
      s: null,
      dids: new Set(seed?.dids ?? []),
    };
  }

  /** The final state of a person in the model's terms, for writer `w`. */
  finalModel(team: number, id: string, w: number): ModelPerson {
    const row = this.final.persons.get(key(team, id));
    const dids = new Set(this.didsByPerson.get(key(team, id)) ?? []);
    if (!row) return { alive: false, version: 0, s: null, dids };
    const s = row.properties[`s${w}`];
    return { alive: true, version: row.version, s: typeof s === 'number' ? s : null, dids };
  }

  didsOf(team: number, id: string): Set<string> {
    return this.finalModel(team, id, -1).dids;
  }
}

/** Whether two model states are the same (a dead person's version and property don't count). */
function same(a: ModelPerson, b: ModelPerson): boolean {
  if (a.alive !== b.alive) return false;
  if (a.dids.size !== b.dids.size || [...a.dids].some((d) => !b.dids.has(d))) return false;
  return !a.alive || (a.version === b.version && a.s === b.s);
}

function clone(p: ModelPerson): ModelPerson {
  return { ...p, dids: new Set(p.dids) };
}

/** Decides a run. `seeded`: the seeded persons the writers were dealt, and the hot ones. */
export function checkHistory(
  ops: readonly HistoryOp[],
  final: FinalState,
  seeded: ReadonlyMap<string, SeededPerson>,
  hot: readonly PersonRef[],
): Verdict {
  const checker = new Checker(final, seeded);
  const operations: Record<string, number> = {};
  for (const op of ops) {
    const name = `${op.invocation.op}${'hot' in op.invocation && op.invocation.hot ? '(hot)' : ''}/${op.outcome}`;
    operations[name] = (operations[name] ?? 0) + 1;
  }
  const hotKeys = new Set(hot.map(refKey));
  const byWriter = new Map<number, HistoryOp[]>();
  for (const op of ops) {
    const list = byWriter.get(op.writer) ?? [];
    list.push(op);
    byWriter.set(op.writer, list);
  }
  for (const [writer, list] of byWriter) {
    list.sort((a, b) => a.n - b.n);
    replayWriter(
      checker,
      writer,
      list.filter((op) => !isHot(op.invocation, hotKeys)),
    );
  }
  for (const ref of hot) {
    checkHotPerson(
      checker,
      ref,
      ops.filter(
        (op) => isHot(op.invocation, hotKeys) && refKey(personOf(op.invocation)) === refKey(ref),
      ),
    );
  }
  checkOrphans(checker, final);
  checkCreatedMarkers(checker, ops, final);
  return { violations: checker.violations, operations, findings: checker.findings };
}

function isHot(inv: Invocation, hotKeys: ReadonlySet<string>): boolean {
  return 'hot' in inv && inv.hot && hotKeys.has(refKey(inv.p));
}

function personOf(inv: Invocation): PersonRef {
  if ('p' in inv) return inv.p;
  throw new Error(`no single person in ${inv.op}`);
}

// ------------------------------------------------------------------ a writer's own persons

/** Replays one writer's operations on its own persons, then compares with the final state. */
function replayWriter(checker: Checker, w: number, ops: readonly HistoryOp[]): void {
  const model = new Map<string, ModelPerson>();
  /** Persons left after an unknown operation: the two states the final one may be. */
  const pending: { refs: PersonRef[]; before: ModelPerson[]; after: ModelPerson[]; op: string }[] =
    [];
  const get = (ref: PersonRef) => {
    let p = model.get(refKey(ref));
    if (!p) {
      p = checker.seededModel(ref);
      model.set(refKey(ref), p);
    }
    return p;
  };
  const refsById = new Map<string, PersonRef>();
  /** Failed operations per person: if the final state shows one, it is a phantom. */
  const failed = new Map<string, Invocation[]>();
  for (const op of ops) {
    const inv = op.invocation;
    const named =
      inv.op === 'merge' ? [inv.source, inv.target] : inv.op === 'create' ? [] : [inv.p];
    for (const ref of named) checker.inOrder(w, ref, op);
    if (op.outcome === 'fail') {
      // The persons it named are compared at the end, even if nothing else touched them.
      if (inv.op === 'merge') for (const ref of [inv.source, inv.target]) get(ref);
      else if (inv.op !== 'create') get(inv.p);
      if (inv.op !== 'create' && inv.op !== 'merge' && inv.op !== 'read') {
        failed.set(refKey(inv.p), [...(failed.get(refKey(inv.p)) ?? []), inv]);
        refsById.set(refKey(inv.p), inv.p);
      }
      continue;
    }
    if (inv.op === 'create') {
      if (op.outcome === 'ok' && op.answer?.id) {
        const ref: PersonRef = [inv.team, op.answer.id];
        refsById.set(refKey(ref), ref);
        model.set(refKey(ref), {
          alive: true,
          version: op.answer.version ?? 0,
          s: inv.seq,
          dids: new Set([inv.did]),
        });
      }
      continue; // unknown creates: checkCreatedMarkers
    }
    const refs = inv.op === 'merge' ? [inv.source, inv.target] : [personOf(inv)];
    for (const ref of refs) refsById.set(refKey(ref), ref);
    const persons = refs.map(get);
    if (op.outcome === 'unknown') {
      const before = persons.map(clone);
      const after = persons.map(clone);
      applyAssumingSuccess(inv, after);
      pending.push({ refs, before, after, op: `w${w}#${op.n} ${inv.op}` });
      for (const ref of refs) model.delete(refKey(ref));
      continue;
    }
    applyAcknowledged(checker, w, op, persons);
  }
  const pendingKeys = new Set(pending.flatMap((p) => p.refs.map(refKey)));
  for (const [k, expected] of model) {
    if (pendingKeys.has(k)) continue;
    const ref = refsById.get(k) ?? (k.split(':') as unknown as PersonRef);
    const [team, id] = [Number(ref[0]), String(ref[1])];
    const actual = checker.finalModel(team, id, w);
    // Both gone: distinct ids left behind are counted as orphans.
    if (same(expected, actual) || (!expected.alive && !actual.alive)) continue;
    const shown = (failed.get(k) ?? []).find((inv) => showsIn(inv, expected, actual));
    if (shown) checker.flag('phantom', `person ${k} (writer ${w}): a failed ${shown.op} happened`);
    else if (!expected.alive) checker.flag('resurrected', `person ${k} (writer ${w})`);
    else if (actual.alive && actual.version !== expected.version && actual.s === expected.s)
      checker.flag(
        'versions',
        `person ${k}: version ${actual.version}, expected ${expected.version}`,
      );
    else checker.flag('lost', `person ${k} (writer ${w}): ${describeDiff(expected, actual)}`);
  }
  for (const { refs, before, after, op } of pending) {
    const actual = refs.map((ref) => checker.finalModel(ref[0], ref[1], w));
    const isBefore = actual.every((a, i) => same(before[i] as ModelPerson, a));
    const isAfter = actual.every((a, i) => same(after[i] as ModelPerson, a));
    if (!isBefore && !isAfter) {
      checker.flag(
        'halfDone',
        `${op} on ${refs.map(refKey).join(', ')}: ${describeDiff(after[0] as ModelPerson, actual[0] as ModelPerson)}`,
      );
    }
  }
}

/** Whether the final state differs from the model the way failed operation `inv` would make it. */
function showsIn(inv: Invocation, expected: ModelPerson, actual: ModelPerson): boolean {
  if (inv.op === 'update' || inv.op === 'assert') return actual.alive && actual.s === inv.seq;
  if (inv.op === 'delete') return expected.alive && !actual.alive;
  if (inv.op === 'add') return actual.dids.has(inv.did) && !expected.dids.has(inv.did);
  return false;
}

function describeDiff(expected: ModelPerson, actual: ModelPerson): string {
  if (expected.alive !== actual.alive) return expected.alive ? 'missing' : 'present';
  if (expected.s !== actual.s) return 'last acknowledged update missing';
  if (expected.version !== actual.version) return 'version differs';
  return 'distinct ids differ';
}

/** Applies an operation to the model as if it succeeded (the "after" of an unknown one). */
function applyAssumingSuccess(inv: Invocation, persons: ModelPerson[]): void {
  const [a, b] = persons;
  if (!a) return;
  if (inv.op === 'update' || inv.op === 'assert') {
    if (!a.alive || (inv.op === 'assert' && inv.expected !== a.version)) return;
    a.version += 1;
    a.s = inv.seq;
  } else if (inv.op === 'delete') {
    a.alive = false;
    a.dids.clear();
  } else if (inv.op === 'add') {
    if (a.alive) a.dids.add(inv.did);
  } else if (inv.op === 'merge' && b && a.alive && b.alive) {
    for (const d of a.dids) b.dids.add(d);
    a.dids.clear();
    a.alive = false;
  }
}

/** Checks an acknowledged answer against the model, then applies it. */
function applyAcknowledged(
  checker: Checker,
  w: number,
  op: HistoryOp,
  persons: ModelPerson[],
): void {
  const inv = op.invocation;
  const answer = op.answer ?? {};
  const [a] = persons;
  if (!a) return;
  const where = `w${w}#${op.n} ${inv.op} ${'p' in inv ? refKey(inv.p) : ''}`;
  const expectAlive = (found: boolean) => {
    if (found && !a.alive) checker.flag('resurrected', `${where} found a deleted person`);
    if (!found && a.alive) checker.flag('lost', `${where} did not find a live person`);
  };
  switch (inv.op) {
    case 'update':
      expectAlive(answer.found !== false);
      if (answer.found !== false && answer.version !== a.version + 1)
        checker.flag(
          'versions',
          `${where} returned version ${answer.version}, expected ${a.version + 1}`,
        );
      break;
    case 'assert':
      if (answer.status === 'no_match' && a.alive && inv.expected === a.version)
        checker.flag('lost', `${where}: no_match on the version the writer last acknowledged`);
      if (answer.status === 'updated' && answer.version !== inv.expected + 1)
        checker.flag(
          'versions',
          `${where} returned version ${answer.version}, expected ${inv.expected + 1}`,
        );
      break;
    case 'delete':
      expectAlive(answer.found === true);
      break;
    case 'add':
      expectAlive(answer.status !== 'person_not_found');
      if (answer.status === 'conflict')
        checker.flag('lost', `${where}: a fresh distinct id conflicted`);
      break;
    case 'merge':
      expectAlive(answer.status === 'moved');
      break;
    case 'read': {
      const read = answer.read ?? null;
      const fresh =
        read === null ? !a.alive : a.alive && read.s === a.s && read.version === a.version;
      if (read !== null && !a.alive)
        checker.flag('resurrected', `${where}: a deleted person was read`);
      else if (!fresh)
        checker.flag('staleReads', `${where}: the read was not the last acknowledged state`);
      return;
    }
    default:
      return;
  }
  // The model follows what the database said, so that one finding is not counted again.
  if (inv.op === 'update' && answer.found !== false) {
    a.alive = true;
    a.version = answer.version ?? a.version + 1;
    a.s = inv.seq;
  } else if (inv.op === 'assert' && answer.status === 'updated') {
    a.version = answer.version ?? a.version + 1;
    a.s = inv.seq;
  } else if (inv.op !== 'update' && inv.op !== 'assert') {
    applyAssumingSuccess(inv, persons);
  }
}

// ------------------------------------------------------------------ the hot persons

/** The hot person `ref` against every writer's operations on it. */
function checkHotPerson(checker: Checker, ref: PersonRef, ops: readonly HistoryOp[]): void {
  const k = refKey(ref);
  const seed = checker.seededModel(ref);
  const row = checker.final.persons.get(k);
  if (!row) {
    checker.flag('lost', `hot person ${k} is missing`);
    return;
  }
  const isUpdate = (op: HistoryOp) =>
    op.invocation.op === 'update' || op.invocation.op === 'assert';
  const acked = ops.filter(
    (op) =>
      op.outcome === 'ok' &&
      isUpdate(op) &&
      (op.answer?.status === 'updated' || (op.invocation.op === 'update' && op.answer?.found)),
  );
  const unknown = ops.filter((op) => op.outcome === 'unknown' && isUpdate(op));
  const moved = row.version - seed.version;
  if (moved < acked.length)
    checker.flag(
      'lost',
      `hot person ${k}: ${acked.length - moved} acknowledged updates missing from its version`,
    );
  if (moved > acked.length + unknown.length)
    checker.flag(
      'phantom',
      `hot person ${k}: version moved by ${moved}, at most ${acked.length + unknown.length} updates could have`,
    );
  checkHotVersions(checker, k, acked, seed.version, row.version);
  const writers = new Set(ops.map((op) => op.writer));
  for (const w of writers)
    checkHotWriter(
      checker,
      k,
      w,
      ops.filter((op) => op.writer === w),
      row,
    );
  const finalDids = checker.didsOf(ref[0], ref[1]);
  for (const op of ops) {
    if (op.invocation.op !== 'add') continue;
    const present = finalDids.has(op.invocation.did);
    if (op.outcome === 'ok' && op.answer?.status === 'added' && !present)
      checker.flag(
        'lost',
        `hot person ${k}: acknowledged distinct id w${op.writer}#${op.n} missing`,
      );
    if (op.outcome === 'fail' && present)
      checker.flag('phantom', `hot person ${k}: failed distinct id w${op.writer}#${op.n} present`);
  }
}

/** Acknowledged updates of one person returned distinct versions, in real-time order. */
function checkHotVersions(
  checker: Checker,
  k: string,
  acked: readonly HistoryOp[],
  from: number,
  to: number,
): void {
  const seen = new Set<number>();
  for (const op of acked) {
    const v = op.answer?.version ?? Number.NaN;
    if (seen.has(v))
      checker.flag('lost', `hot person ${k}: two acknowledged updates returned version ${v}`);
    if (!(v > from && v <= to))
      checker.flag('versions', `hot person ${k}: version ${v} outside (${from}, ${to}]`);
    seen.add(v);
  }
  // An update that ended before another began returned a lower version.
  const byEnd = [...acked].sort((a, b) => (a.end ?? 0) - (b.end ?? 0));
  const byStart = [...acked].sort((a, b) => a.start - b.start);
  let i = 0;
  let highest: HistoryOp | undefined;
  for (const op of byStart) {
    while (i < byEnd.length && (byEnd[i]?.end ?? 0) < op.start) {
      const ended = byEnd[i];
      if ((ended?.answer?.version ?? 0) > (highest?.answer?.version ?? Number.NEGATIVE_INFINITY)) {
        highest = ended;
      }
      i++;
    }
    const version = op.answer?.version ?? 0;
    if (highest && version <= (highest.answer?.version ?? 0))
      checker.flag(
        'versions',
        `hot person ${k}: w${op.writer}#${op.n} returned a version below an earlier update's ` +
          `(${version}, began ${(op.start - (highest.end ?? 0)).toFixed(1)} ms after ` +
          `w${highest.writer}#${highest.n} returned ${highest.answer?.version})`,
      );
  }
}

/** Writer `w`'s own key on a hot person holds its last acknowledged value or a later unknown one. */
function checkHotWriter(
  checker: Checker,
  k: string,
  w: number,
  ops: readonly HistoryOp[],
  row: FinalPerson,
): void {
  const raw = row.properties[`s${w}`];
  const actual = typeof raw === 'number' ? raw : null;
  const sorted = [...ops].sort((a, b) => a.n - b.n);
  for (const op of sorted) if ('p' in op.invocation) checker.inOrder(w, op.invocation.p, op);
  let candidates = new Set<number | null>([null]);
  const failed = new Set<number>();
  for (const op of sorted) {
    const inv = op.invocation;
    if (inv.op !== 'update' && inv.op !== 'assert') continue;
    const applied =
      op.outcome === 'ok' &&
      (op.answer?.status === 'updated' || (inv.op === 'update' && op.answer?.found));
    if (applied) candidates = new Set([inv.seq]);
    else if (op.outcome === 'unknown') candidates.add(inv.seq);
    else if (op.outcome === 'fail') failed.add(inv.seq);
  }
  if (candidates.has(actual)) return;
  if (actual !== null && failed.has(actual))
    checker.flag('phantom', `hot person ${k}: writer ${w}'s failed update is there`);
  else checker.flag('lost', `hot person ${k}: writer ${w}'s last acknowledged update is missing`);
}

// ------------------------------------------------------------------ the whole tables

function checkOrphans(checker: Checker, final: FinalState): void {
  for (const [k, personId] of final.dids) {
    const team = k.slice(0, k.indexOf(':'));
    if (!final.persons.has(`${team}:${personId}`))
      checker.flag(
        'orphans',
        `distinct id row of team ${team} points at missing person ${personId}`,
      );
  }
}

/**
 * Every person a create left (its `soak_c` marker) comes from an acknowledged or unknown
 * create, with its distinct id; an acknowledged one is there, a failed one is not.
 */
function checkCreatedMarkers(checker: Checker, ops: readonly HistoryOp[], final: FinalState): void {
  const markers = new Map<string, string>();
  for (const [k, p] of final.persons) {
    const marker = p.properties.soak_c;
    if (typeof marker === 'string') markers.set(marker, k);
  }
  for (const op of ops) {
    const inv = op.invocation;
    if (inv.op !== 'create') continue;
    const at = markers.get(inv.did);
    markers.delete(inv.did);
    const didOwner = final.dids.get(`${inv.team}:${inv.did}`);
    if (op.outcome === 'fail') {
      if (at || didOwner)
        checker.flag('phantom', `failed create w${op.writer}#${op.n} left a person`);
    } else if (op.outcome === 'unknown') {
      // A deleted or merged-away person cannot follow an unknown create (its writer never knew it).
      const whole = (at === undefined) === (didOwner === undefined);
      if (!whole)
        checker.flag(
          'halfDone',
          `unknown create w${op.writer}#${op.n}: person and distinct id disagree`,
        );
    }
  }
  for (const [marker, k] of markers)
    checker.flag('phantom', `person ${k} (${marker}) has no create in the history`);
}

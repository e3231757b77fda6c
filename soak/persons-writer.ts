/**
 * What a soak writer does: picks operations on its own persons and the hot ones from a seeded
 * mix, performs them through the repository, and records each in its history before it starts
 * and after it settles. Used by the writer processes (`writer.ts`) and by the property test
 * that explores interleavings (`test/soak/interleavings.test.ts`).
 *
 * A writer never runs two operations of one person at once, so its history replays in order;
 * after an operation of unknown outcome it leaves that operation's persons alone.
 */
import { rng } from '../bench/support.js';
import type { PersonsRepository } from '../src/index.js';
import type { Answer, Invocation, Outcome, PersonRef } from './history.js';

/** A seeded person dealt to one writer, with what the harness read of it. */
export interface OwnedSeed {
  readonly team: number;
  readonly id: string;
  readonly version: number;
  readonly dids: readonly string[];
}

/** Who a writer is and what it writes. */
export interface WriterSettings {
  /** Unique per run, replacements included: names the history and the distinct ids. */
  readonly writer: number;
  /** Operations in flight at most (`tick()` skips beyond). */
  readonly maxInFlight: number;
  /** Teams 1..teams for the persons it creates. */
  readonly teams: number;
  readonly seed: number;
  readonly owned: readonly OwnedSeed[];
  readonly hot: readonly PersonRef[];
}

/** The operations and their shares of the schedule. */
const mix = {
  create: 14,
  update: 18,
  assert: 8,
  delete: 6,
  add: 8,
  merge: 5,
  read: 12,
  readGone: 4,
  hotUpdate: 14,
  hotAssert: 8,
  hotAdd: 5,
} as const;

/** What this writer knows of one of its persons (for choosing operations; the checker replays). */
interface Owned {
  readonly team: number;
  readonly id: string;
  version: number;
  readonly dids: string[];
  busy: boolean;
  /** Gone (deleted or merged away), or left alone after an operation of unknown outcome. */
  retired: boolean;
}

interface Hot {
  readonly ref: PersonRef;
  busy: boolean;
  retired: boolean;
}

/**
 * Milliseconds on the machine's monotonic clock (CLOCK_MONOTONIC, one for every process):
 * the checker orders operations of different processes by it. Not `timeOrigin + now()`: each
 * process takes its `timeOrigin` from the wall clock when it starts, so a step of the wall
 * clock between two writers' starts shifts one's operations against the other's.
 */
const clock = () => Number(process.hrtime.bigint()) / 1e6;

function errorCode(error: unknown): string {
  const e = error as { code?: unknown; sqlState?: unknown; name?: unknown };
  const code = typeof e.code === 'string' ? e.code : typeof e.name === 'string' ? e.name : 'Error';
  return typeof e.sqlState === 'string' ? `${code}/${e.sqlState}` : code;
}

/** Where a writer records its operations (a history file, or memory in tests). */
export interface HistoryRecorder {
  invoked(n: number, t: number, inv: Invocation): void;
  completed(n: number, t: number, outcome: Outcome, detail: { code?: string; a?: Answer }): void;
}

/** The operations a writer picks from (`hot*` aim at the hot persons). */
export type Pick = keyof typeof mix;

export class PersonsWriter {
  private readonly random: () => number;
  private readonly owned: Owned[];
  private readonly hot: Hot[];
  /** Persons this writer deleted or merged away, with acknowledgement. */
  private readonly gone: Owned[] = [];
  private readonly thresholds: [Pick, number][];
  private inFlight = 0;
  private serial = 0;
  /** Numbers the values written and the distinct ids (unique per writer, taken synchronously). */
  private seqs = 0;
  private idle: (() => void) | undefined;

  constructor(
    private readonly config: WriterSettings,
    private readonly repo: PersonsRepository,
    private readonly history: HistoryRecorder,
  ) {
    this.random = rng(config.seed);
    this.owned = config.owned.map((p) => ({
      team: p.team,
      id: p.id,
      version: p.version,
      dids: [...p.dids],
      busy: false,
      retired: false,
    }));
    this.hot = config.hot.map((ref) => ({ ref, busy: false, retired: false }));
    const total = Object.values(mix).reduce((a, b) => a + b, 0);
    let acc = 0;
    this.thresholds = (Object.entries(mix) as [Pick, number][]).map(([op, share]) => {
      acc += share / total;
      return [op, acc];
    });
  }

  /** Starts one scheduled operation, unless `maxInFlight` are running. */
  tick(): void {
    if (this.inFlight >= this.config.maxInFlight) return;
    const r = this.random();
    const pick = this.thresholds.find(([, upTo]) => r < upTo)?.[0] ?? 'create';
    this.inFlight += 1;
    void this.run(pick).finally(() => {
      this.inFlight -= 1;
      if (this.inFlight === 0) this.idle?.();
    });
  }

  drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle = resolve;
    });
  }

  /** Picks and performs one operation (a create when no free person fits `pick`). */
  async run(pick: Pick): Promise<void> {
    const seq = ++this.seqs;
    const planned = await this.plan(pick, seq);
    const { inv, owned, hot } = planned ?? this.createPlan(seq);
    const n = ++this.serial;
    this.history.invoked(n, clock(), inv);
    try {
      const answer = await this.execute(inv);
      this.history.completed(n, clock(), 'ok', { a: answer });
      this.learn(inv, answer, owned);
    } catch (error) {
      const code = errorCode(error);
      const unknown = code === 'OUTCOME_UNKNOWN';
      this.history.completed(n, clock(), unknown ? 'unknown' : 'fail', { code });
      // Either state may be true now: leave these persons alone for the rest of the run.
      if (unknown) for (const p of [...owned, ...hot]) p.retired = true;
    } finally {
      for (const p of [...owned, ...hot]) p.busy = false;
    }
  }

  private createPlan(seq: number): { inv: Invocation; owned: Owned[]; hot: Hot[] } {
    const team = 1 + Math.floor(this.random() * this.config.teams);
    const did = `w${this.config.writer}-c${seq}`;
    return { inv: { op: 'create', team, did, seq }, owned: [], hot: [] };
  }

  /**
   * The invocation for `pick`, its persons taken (busy) before anything is awaited, so the
   * operations a tick starts together never share a person; undefined when no free person fits
   * (then a create runs).
   */
  private async plan(
    pick: Pick,
    seq: number,
  ): Promise<{ inv: Invocation; owned: Owned[]; hot: Hot[] } | undefined> {
    const w = this.config.writer;
    if (pick === 'create') return undefined;
    if (pick.startsWith('hot')) {
      const h = this.take(this.hot);
      if (!h) return undefined;
      const p = h.ref;
      if (pick === 'hotUpdate')
        return { inv: { op: 'update', p, seq, hot: true }, owned: [], hot: [h] };
      if (pick === 'hotAdd') {
        return { inv: { op: 'add', p, did: `w${w}-h${seq}`, hot: true }, owned: [], hot: [h] };
      }
      const expected = await this.currentVersion(p);
      if (expected === undefined) {
        h.busy = false;
        return undefined;
      }
      return { inv: { op: 'assert', p, seq, expected, hot: true }, owned: [], hot: [h] };
    }
    if (pick === 'readGone') {
      // A person this writer deleted (or merged away) must stay unreadable, in every phase.
      const g = this.take(this.gone);
      return g ? { inv: { op: 'read', p: [g.team, g.id] }, owned: [g], hot: [] } : undefined;
    }
    const o = this.take(this.owned);
    if (!o) return undefined;
    const p: PersonRef = [o.team, o.id];
    switch (pick) {
      case 'update':
        return { inv: { op: 'update', p, seq, hot: false }, owned: [o], hot: [] };
      case 'assert':
        return {
          inv: { op: 'assert', p, seq, expected: o.version, hot: false },
          owned: [o],
          hot: [],
        };
      case 'delete':
        return { inv: { op: 'delete', p }, owned: [o], hot: [] };
      case 'add':
        return { inv: { op: 'add', p, did: `w${w}-d${seq}`, hot: false }, owned: [o], hot: [] };
      case 'read':
        return { inv: { op: 'read', p }, owned: [o], hot: [] };
      default: {
        const target = this.take(this.owned.filter((t) => t.team === o.team && t !== o));
        if (!target) {
          o.busy = false;
          return undefined;
        }
        const inv: Invocation = { op: 'merge', source: p, target: [target.team, target.id] };
        return { inv, owned: [o, target], hot: [] };
      }
    }
  }

  /** A random person of `list` that is neither busy nor retired, marked busy. */
  private take<T extends { busy: boolean; retired: boolean }>(list: readonly T[]): T | undefined {
    for (let attempt = 0; attempt < 8; attempt++) {
      const p = list[Math.floor(this.random() * list.length)];
      if (p && !p.busy && !p.retired) {
        p.busy = true;
        return p;
      }
    }
    return undefined;
  }

  /** The version a hot person has now (a read, not logged: the assert carries it). */
  private async currentVersion([team, id]: PersonRef): Promise<number | undefined> {
    try {
      const [row] = await this.repo.fetchPersonsByPersonIds([{ teamId: team, personId: id }]);
      return row?.version;
    } catch {
      return undefined;
    }
  }

  private async execute(inv: Invocation): Promise<Answer> {
    const w = this.config.writer;
    const key = `s${w}`;
    switch (inv.op) {
      case 'create': {
        const result = await this.repo.createPerson({
          teamId: inv.team,
          distinctIds: [inv.did],
          properties: { soak_c: inv.did, [key]: inv.seq },
        });
        if (result.status !== 'created') return { status: result.status };
        return { status: 'created', id: result.person.id, version: result.person.version };
      }
      case 'update': {
        const row = await this.repo.updatePerson(inv.p[0], inv.p[1], {
          properties: { [key]: inv.seq },
        });
        return row ? { found: true, version: row.version } : { found: false };
      }
      case 'assert': {
        const result = await this.repo.updatePersonAssertVersion(inv.p[0], inv.p[1], inv.expected, {
          properties: { [key]: inv.seq },
        });
        if (result.status === 'no_match') return { status: 'no_match' };
        return { status: 'updated', version: result.person.version };
      }
      case 'delete':
        return { found: await this.repo.deletePerson(inv.p[0], inv.p[1]) };
      case 'add':
        return { status: (await this.repo.addDistinctId(inv.p[0], inv.p[1], inv.did)).status };
      case 'read': {
        const [row] = await this.repo.fetchPersonsByPersonIds([
          { teamId: inv.p[0], personId: inv.p[1] },
        ]);
        if (!row) return { read: null };
        const s = row.properties[key];
        return { read: { s: typeof s === 'number' ? s : null, version: row.version } };
      }
      case 'merge':
        return this.merge(inv.source, inv.target);
    }
  }

  /** The write half of a merge: the source's distinct ids move to the target, the source goes. */
  private async merge(source: PersonRef, target: PersonRef): Promise<Answer> {
    return this.repo.inTransaction(async (repo) => {
      const moved = await repo.moveDistinctIds(source[0], source[1], target[1]);
      if (moved.status !== 'moved') return { status: moved.status, found: false };
      return { status: 'moved', found: await repo.deletePerson(source[0], source[1]) };
    });
  }

  /** What an acknowledged operation teaches this writer about its own persons. */
  private learn(inv: Invocation, answer: Answer, owned: Owned[]): void {
    const [a, b] = owned;
    const expectedAnswer =
      (inv.op === 'update' && answer.found !== false) ||
      (inv.op === 'assert' && answer.status === 'updated') ||
      inv.op === 'read' ||
      (inv.op === 'delete' && answer.found === true) ||
      (inv.op === 'add' && answer.status === 'added') ||
      (inv.op === 'merge' && answer.status === 'moved' && answer.found === true) ||
      (inv.op === 'create' && answer.id !== undefined);
    // An answer that contradicts what this writer knows is the checker's to report; stop
    // writing these persons so the rest of the history stays simple to replay.
    if (!expectedAnswer) {
      for (const p of owned) p.retired = true;
      return;
    }
    if (inv.op === 'create' && answer.id !== undefined) {
      this.owned.push({
        team: inv.team,
        id: answer.id,
        version: answer.version ?? 0,
        dids: [inv.did],
        busy: false,
        retired: false,
      });
    } else if ((inv.op === 'update' || inv.op === 'assert') && a) {
      a.version = answer.version ?? a.version;
    } else if (inv.op === 'delete' && a) {
      this.bury(a);
    } else if (inv.op === 'add' && a) {
      a.dids.push(inv.did);
    } else if (inv.op === 'merge' && a && b) {
      b.dids.push(...a.dids.splice(0));
      this.bury(a);
    }
  }

  /** A person acknowledged gone: no more writes, only reads that must find nothing. */
  private bury(p: Owned): void {
    p.retired = true;
    this.gone.push({ ...p, busy: false, retired: false });
  }
}

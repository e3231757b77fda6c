/**
 * One writer process of `bench/cutover.ts`: a service instance writing persons through its own
 * pool and its own `createPersonsMigration` (same schemas and control row as every other
 * instance) at a fixed rate, while the parent switches the phase. Started by the parent (not
 * meant to be run by hand):
 *
 *   node --import tsx bench/cutover-writer.ts
 *
 * Protocol on stdin: the first line is the JSON {@link WriterConfig}; then `go` (start the
 * schedule) and `stop` (stop starting writes, wait for those in flight, report). A closed stdin
 * (the parent died) stops it too.
 *
 * On stdout, one JSON value per line:
 * - `{"ready":pid}` once connected and warmed up (phase read, column facts loaded);
 * - per write, an array `[t, ms, op, error]`: `t` when the call started (epoch ms, the clock of
 *   `performance.timeOrigin + performance.now()`, comparable across the processes of one host),
 *   `ms` how long until it resolved or rejected, `op` one of {@link opCodes}, `error` '' when
 *   acknowledged, else the error's `code` (and `/SQLSTATE` when the driver gave one);
 * - `[t, 0, 's', '']` per scheduled write skipped because `maxInFlight` writes were running;
 * - `{"detail":...}` for the first rejection of each error code (its message has no row value),
 *   and `{"anomaly":...}` for an acknowledged write whose answer contradicts what this writer
 *   knows (an update of a live person answered "no such person", a delete answered false, a
 *   distinct id refused...): every one of them is a lost or misrouted write;
 * - `{"final":...}` at the end: the acknowledged state this writer expects to read back (see
 *   {@link FinalReport}).
 *
 * Each writer owns its persons (the seeded persons the parent gave it, and those it creates) and
 * never has two writes of one person in flight, so the order of its acknowledgements is the
 * order of the commits and the expected final state is exact.
 */
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { createPersonsMigration, openDatabase, type PersonsRepository } from '../src/index.js';
import { rng } from './support.js';

/** What the parent sends as the first line of stdin. */
export interface WriterConfig {
  readonly url: string;
  readonly schema: string;
  readonly controlSchema: string;
  /** 0-based index of this writer; names its distinct ids. */
  readonly writer: number;
  /** Writes started per second (a fixed schedule, whatever the latency). */
  readonly ratePerS: number;
  /** A scheduled write finding this many still running is skipped (and reported). */
  readonly maxInFlight: number;
  readonly poolSize: number;
  readonly teams: number;
  readonly seed: number;
  /** Shares of the operations (any scale). */
  readonly mix: Readonly<Record<OpName, number>>;
  /** Seeded persons this writer owns: [team_id, id]. */
  readonly owned: readonly (readonly [number, string])[];
}

/** The operations, with their one-letter code in the per-write lines. */
export const opCodes = {
  create: 'c',
  update: 'u',
  delete: 'd',
  addDistinctId: 'a',
  merge: 'm',
} as const;
export type OpName = keyof typeof opCodes;

/** A person whose last acknowledged write this writer knows. */
interface Person {
  readonly team: number;
  readonly id: string;
  /** `bench_seq` of its last acknowledged create or update; null: the seeded properties. */
  seq: number | null;
  state: 'alive' | 'deleted' | 'uncertain';
  busy: boolean;
  touched: boolean;
  /** Distinct ids this writer added to it (or that a merge moved to it). */
  readonly dids: string[];
}

/**
 * The `final` line: what every acknowledged write left behind.
 * - `persons`: [team, id, seq (null: seeded properties untouched), state] for every person a
 *   write of this writer touched; `uncertain` ones had a rejected write (its outcome unknown);
 * - `dids`: [team, distinct id, expected person id, or null when its person was deleted];
 * - `creates`, `deletes`: acknowledged creations and deletions (merges included): the persons
 *   table's row count must move by `creates - deletes` over the run when no write failed.
 */
export interface FinalReport {
  readonly writer: number;
  readonly persons: [number, string, number | null, Person['state']][];
  readonly dids: [number, string, string | null][];
  readonly creates: number;
  readonly deletes: number;
  readonly acknowledged: number;
  readonly failed: number;
  readonly skipped: number;
  readonly anomalies: number;
  /** CPU time this process used from `go` to the report (user + system). */
  readonly cpuMs: number;
}

const clock = () => performance.timeOrigin + performance.now();
const emit = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
/** Like `emit`, resolving once the line is handed to the pipe (a large line is written in parts). */
const emitFlushed = (value: unknown) =>
  new Promise<void>((resolve) =>
    process.stdout.write(`${JSON.stringify(value)}\n`, () => resolve()),
  );

function swapRemove<T>(list: T[], item: T): void {
  const index = list.indexOf(item);
  if (index < 0) return;
  list[index] = list[list.length - 1] as T;
  list.pop();
}

function errorCode(error: unknown): string {
  const e = error as { code?: unknown; sqlState?: unknown; name?: unknown };
  const code = typeof e.code === 'string' ? e.code : typeof e.name === 'string' ? e.name : 'Error';
  return typeof e.sqlState === 'string' ? `${code}/${e.sqlState}` : code;
}

class Writer {
  private readonly random: () => number;
  private readonly alive: Person[] = [];
  /** Live persons per team: a merge's two persons are of one team. */
  private readonly aliveByTeam = new Map<number, Person[]>();
  private readonly persons: Person[] = [];
  private readonly didOwner = new Map<string, { team: number; person: Person }>();
  private readonly detailed = new Set<string>();
  private readonly thresholds: [OpName, number][];
  private inFlight = 0;
  private serial = 0;
  private creates = 0;
  private deletes = 0;
  private acknowledged = 0;
  private failed = 0;
  private skipped = 0;
  private anomalies = 0;
  private idle: (() => void) | undefined;
  private readonly cpuAtStart = process.cpuUsage();

  constructor(
    private readonly config: WriterConfig,
    private readonly repo: PersonsRepository,
  ) {
    this.random = rng(config.seed);
    for (const [team, id] of config.owned) {
      const person: Person = {
        team,
        id,
        seq: null,
        state: 'alive',
        busy: false,
        touched: false,
        dids: [],
      };
      this.addAlive(person);
      this.persons.push(person);
    }
    const total = Object.values(config.mix).reduce((a, b) => a + b, 0);
    let acc = 0;
    this.thresholds = (Object.entries(config.mix) as [OpName, number][]).map(([op, share]) => {
      acc += share / total;
      return [op, acc];
    });
  }

  /** Starts one scheduled write, or reports it skipped. */
  tick(): void {
    if (this.inFlight >= this.config.maxInFlight) {
      this.skipped += 1;
      emit([Number(clock().toFixed(3)), 0, 's', '']);
      return;
    }
    const r = this.random();
    const op = this.thresholds.find(([, upTo]) => r < upTo)?.[0] ?? 'create';
    this.inFlight += 1;
    void this.run(op).finally(() => {
      this.inFlight -= 1;
      if (this.inFlight === 0) this.idle?.();
    });
  }

  /** Resolves once no write is in flight. */
  drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle = resolve;
    });
  }

  private async run(op: OpName): Promise<void> {
    const seq = ++this.serial;
    const picked = op === 'create' ? [] : op === 'merge' ? this.pickPair() : this.pick();
    // No free person to write to: create one instead (never two writes of one person at once).
    const actual: OpName = picked ? op : 'create';
    for (const p of picked ?? []) p.busy = true;
    const started = clock();
    const t0 = performance.now();
    let outcome = '';
    try {
      await this.write(actual, seq, picked ?? []);
      this.acknowledged += 1;
    } catch (error) {
      outcome = errorCode(error);
      this.failed += 1;
      for (const p of picked ?? []) this.markUncertain(p);
      if (!this.detailed.has(outcome)) {
        this.detailed.add(outcome);
        const message = error instanceof Error ? error.message : String(error);
        emit({ detail: { code: outcome, op: actual, t: started, message: message.slice(0, 600) } });
      }
    } finally {
      for (const p of picked ?? []) p.busy = false;
    }
    const ms = performance.now() - t0;
    emit([Number(started.toFixed(3)), Number(ms.toFixed(3)), opCodes[actual], outcome]);
  }

  /** A live person no write of this writer is writing, or undefined when none was found. */
  private pick(): Person[] | undefined {
    for (let attempt = 0; attempt < 8; attempt++) {
      const p = this.alive[Math.floor(this.random() * this.alive.length)];
      if (p && !p.busy) return [p];
    }
    return undefined;
  }

  /** Two such persons of one team (source, target), or undefined. */
  private pickPair(): Person[] | undefined {
    for (let attempt = 0; attempt < 8; attempt++) {
      const [source] = this.pick() ?? [];
      if (!source) return undefined;
      const team = this.aliveByTeam.get(source.team) ?? [];
      const target = team[Math.floor(this.random() * team.length)];
      if (target && target !== source && !target.busy) return [source, target];
    }
    return undefined;
  }

  private addAlive(p: Person): void {
    this.alive.push(p);
    const team = this.aliveByTeam.get(p.team);
    if (team) team.push(p);
    else this.aliveByTeam.set(p.team, [p]);
  }

  private async write(op: OpName, seq: number, picked: Person[]): Promise<void> {
    const [a, b] = picked;
    if (op === 'create') return this.create(seq);
    if (!a) throw new Error('unreachable: no person picked');
    if (op === 'update') return this.update(a, seq);
    if (op === 'delete') return this.remove(a);
    if (op === 'addDistinctId') return this.addDistinctId(a, seq);
    if (!b) throw new Error('unreachable: one person picked for a merge');
    return this.merge(a, b);
  }

  private async create(seq: number): Promise<void> {
    const team = 1 + Math.floor(this.random() * this.config.teams);
    const did = `w${this.config.writer}-c${seq}`;
    const result = await this.repo.createPerson({
      teamId: team,
      distinctIds: [did],
      properties: { plan: 'free', bench_writer: this.config.writer, bench_seq: seq },
    });
    if (result.status !== 'created') return this.anomaly('create-conflict', team, undefined);
    const person: Person = {
      team,
      id: result.person.id,
      seq,
      state: 'alive',
      busy: false,
      touched: true,
      dids: [did],
    };
    this.didOwner.set(did, { team, person });
    this.addAlive(person);
    this.persons.push(person);
    this.creates += 1;
  }

  private async update(p: Person, seq: number): Promise<void> {
    const row = await this.repo.updatePerson(p.team, p.id, {
      properties: { bench_seq: seq },
    });
    p.touched = true;
    if (!row) return this.anomaly('update-found-no-person', p.team, p.id);
    p.seq = seq;
  }

  private async remove(p: Person): Promise<void> {
    const deleted = await this.repo.deletePerson(p.team, p.id);
    p.touched = true;
    this.markDeleted(p);
    if (!deleted) return this.anomaly('delete-found-no-person', p.team, p.id);
    this.deletes += 1;
  }

  private async addDistinctId(p: Person, seq: number): Promise<void> {
    const did = `w${this.config.writer}-d${seq}`;
    const result = await this.repo.addDistinctId(p.team, p.id, did);
    p.touched = true;
    if (result.status !== 'added') return this.anomaly(`add-${result.status}`, p.team, p.id);
    p.dids.push(did);
    this.didOwner.set(did, { team: p.team, person: p });
  }

  /** The write half of a merge: every distinct id of `source` moves to `target`, `source` goes. */
  private async merge(source: Person, target: Person): Promise<void> {
    const outcome = await this.repo.inTransaction(async (repo) => {
      const moved = await repo.moveDistinctIds(source.team, source.id, target.id);
      const deleted = moved.status === 'moved' && (await repo.deletePerson(source.team, source.id));
      return { moved: moved.status, deleted };
    });
    source.touched = true;
    target.touched = true;
    if (outcome.moved !== 'moved')
      return this.anomaly('merge-target-not-found', target.team, target.id);
    for (const did of source.dids.splice(0)) {
      target.dids.push(did);
      this.didOwner.set(did, { team: target.team, person: target });
    }
    this.markDeleted(source);
    if (!outcome.deleted) return this.anomaly('merge-source-not-found', source.team, source.id);
    this.deletes += 1;
  }

  private markDeleted(p: Person): void {
    p.state = 'deleted';
    swapRemove(this.alive, p);
    swapRemove(this.aliveByTeam.get(p.team) ?? [], p);
  }

  private markUncertain(p: Person): void {
    p.touched = true;
    if (p.state === 'alive') this.markDeleted(p);
    p.state = 'uncertain';
  }

  private anomaly(kind: string, team: number, id: string | undefined): void {
    this.anomalies += 1;
    emit({ anomaly: { kind, team, id, t: clock() } });
  }

  report(): FinalReport {
    const persons = this.persons
      .filter((p) => p.touched)
      .map((p): FinalReport['persons'][number] => [p.team, p.id, p.seq, p.state]);
    const dids: FinalReport['dids'] = [];
    for (const [did, { team, person }] of this.didOwner) {
      if (person.state === 'uncertain') continue;
      dids.push([team, did, person.state === 'deleted' ? null : person.id]);
    }
    return {
      writer: this.config.writer,
      persons,
      dids,
      creates: this.creates,
      deletes: this.deletes,
      acknowledged: this.acknowledged,
      failed: this.failed,
      skipped: this.skipped,
      anomalies: this.anomalies,
      cpuMs: (() => {
        const { user, system } = process.cpuUsage(this.cpuAtStart);
        return (user + system) / 1000;
      })(),
    };
  }
}

/** Reads stdin lines: the config first, then commands. */
function commands(): { next: () => Promise<string | undefined> } {
  const lines = createInterface({ input: process.stdin });
  const queue: string[] = [];
  const waiting: ((line: string | undefined) => void)[] = [];
  let closed = false;
  lines.on('line', (line) => {
    const waiter = waiting.shift();
    if (waiter) waiter(line);
    else queue.push(line);
  });
  lines.on('close', () => {
    closed = true;
    for (const waiter of waiting.splice(0)) waiter(undefined);
  });
  return {
    next: () => {
      const line = queue.shift();
      if (line !== undefined || closed) return Promise.resolve(line);
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

async function main(): Promise<void> {
  const input = commands();
  const first = await input.next();
  if (first === undefined) throw new Error('cutover-writer: no config on stdin');
  const config = JSON.parse(first) as WriterConfig;
  const handle = await openDatabase(config.url, { maxConnections: config.poolSize });
  const migration = createPersonsMigration({
    db: handle,
    schema: config.schema,
    controlSchema: config.controlSchema,
  });
  try {
    const repo = migration.repository();
    // Warm up: the phase cache and LISTEN, the column facts, a pooled connection or two.
    await migration.currentPhase();
    const sample = config.owned.slice(0, 4).map(([teamId, personId]) => ({ teamId, personId }));
    await repo.fetchPersonsByPersonIds(sample);
    const writer = new Writer(config, repo);
    emit({ ready: process.pid });
    if ((await input.next()) !== 'go') return;

    const intervalMs = 10;
    let last = performance.now();
    let due = 0;
    const timer = setInterval(() => {
      const t = performance.now();
      due += (config.ratePerS * (t - last)) / 1000;
      last = t;
      for (; due >= 1; due -= 1) writer.tick();
    }, intervalMs);
    for (;;) {
      const command = await input.next();
      if (command === undefined || command === 'stop') break;
    }
    clearInterval(timer);
    await writer.drained();
    // Before process.exit(): the report is a large line the pipe takes in several writes.
    await emitFlushed({ final: writer.report() });
  } finally {
    await migration.close().catch(() => {});
    await handle.close().catch(() => {});
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.once('SIGTERM', () => process.exit(143));
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(
        `cutover-writer: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exit(1);
    },
  );
}

/**
 * The soak's history: every operation a writer process starts and how it ended, one JSON line
 * each, appended with a synchronous write before the call starts and after it settles, so a
 * writer killed with SIGKILL leaves every operation it started on disk (those with no
 * completion line are of unknown outcome, like those whose COMMIT got no answer).
 */
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** A person, as the history names it: `[team, id]`. */
export type PersonRef = readonly [team: number, id: string];

/**
 * An operation as invoked. `hot`: the person is one of the hot persons every writer writes at
 * once (only updates and distinct ids added, never deleted or merged).
 */
export type Invocation =
  | { readonly op: 'create'; readonly team: number; readonly did: string; readonly seq: number }
  | { readonly op: 'update'; readonly p: PersonRef; readonly seq: number; readonly hot: boolean }
  | {
      readonly op: 'assert';
      readonly p: PersonRef;
      readonly seq: number;
      readonly expected: number;
      readonly hot: boolean;
    }
  | { readonly op: 'delete'; readonly p: PersonRef }
  | { readonly op: 'add'; readonly p: PersonRef; readonly did: string; readonly hot: boolean }
  | { readonly op: 'merge'; readonly source: PersonRef; readonly target: PersonRef }
  | { readonly op: 'read'; readonly p: PersonRef };

export type OpName = Invocation['op'];

/** What an acknowledged operation answered (the fields the checker needs). */
export interface Answer {
  /** create: the new person's id. */
  readonly id?: string;
  /** create, update, assert (updated): the version the write returned. */
  readonly version?: number;
  /** assert: updated | no_match; add: added | conflict | person_not_found; merge: the move's. */
  readonly status?: string;
  /** update: false when the repository found no such person; delete and merge: deleted or not. */
  readonly found?: boolean;
  /** read: the person's `s<writer>` property (null when absent) and version, or absent. */
  readonly read?: { readonly s: number | null; readonly version: number } | null;
}

/** How an operation ended: acknowledged, failed (did not happen), or unknown. */
export type Outcome = 'ok' | 'fail' | 'unknown';

/** One operation with its outcome, as the checker reads it back. */
export interface HistoryOp {
  readonly writer: number;
  /** Per writer, in the order the writer started them. */
  readonly n: number;
  readonly invocation: Invocation;
  readonly outcome: Outcome;
  /** Error code of a failed or unknown operation (`CODE/SQLSTATE` when there was one). */
  readonly code?: string;
  readonly answer?: Answer;
  /** Start and end on the host's clock (epoch ms); `end` is absent when the writer died. */
  readonly start: number;
  readonly end?: number;
}

type Line =
  | { readonly i: number; readonly t: number; readonly inv: Invocation }
  | {
      readonly c: number;
      readonly t: number;
      readonly r: Outcome;
      readonly code?: string;
      readonly a?: Answer;
    };

/** The append-only history file of one writer process. */
export class HistoryFile {
  private readonly fd: number;

  constructor(path: string) {
    this.fd = openSync(path, 'a');
  }

  invoked(n: number, t: number, inv: Invocation): void {
    this.append({ i: n, t, inv });
  }

  completed(n: number, t: number, outcome: Outcome, detail: { code?: string; a?: Answer }): void {
    this.append({ c: n, t, r: outcome, ...detail });
  }

  close(): void {
    closeSync(this.fd);
  }

  private append(line: Line): void {
    // One write(2) per line: a kill leaves whole lines (the last one at worst cut, and skipped).
    writeSync(this.fd, `${JSON.stringify(line)}\n`);
  }
}

/** A history kept in memory (the property tests'); `ops()` reads it back like a file. */
export class MemoryHistory {
  private readonly lines = new Map<number, string[]>();

  /** The recorder of writer `writer`. */
  recorder(writer: number): Pick<HistoryFile, 'invoked' | 'completed'> {
    const lines: string[] = [];
    this.lines.set(writer, lines);
    return {
      invoked: (n, t, inv) => lines.push(JSON.stringify({ i: n, t, inv })),
      completed: (n, t, outcome, detail) =>
        lines.push(JSON.stringify({ c: n, t, r: outcome, ...detail })),
    };
  }

  ops(): HistoryOp[] {
    return [...this.lines].flatMap(([writer, lines]) =>
      parseWriterHistory(writer, lines.join('\n')),
    );
  }
}

/** The history file of writer `writer` in `dir`. */
export const historyPath = (dir: string, writer: number) => join(dir, `writer-${writer}.jsonl`);

/** Every operation of every writer whose history is in `dir`. */
export function readHistory(dir: string): HistoryOp[] {
  const ops: HistoryOp[] = [];
  for (const name of readdirSync(dir)) {
    const match = /^writer-(\d+)\.jsonl$/.exec(name);
    if (!match) continue;
    ops.push(...parseWriterHistory(Number(match[1]), readFileSync(join(dir, name), 'utf8')));
  }
  return ops;
}

function parseWriterHistory(writer: number, text: string): HistoryOp[] {
  const started = new Map<number, { inv: Invocation; t: number }>();
  const done = new Map<number, Extract<Line, { c: number }>>();
  for (const raw of text.split('\n')) {
    if (raw === '') continue;
    let line: Line;
    try {
      line = JSON.parse(raw) as Line;
    } catch {
      continue; // the last line of a killed writer, cut
    }
    if ('i' in line) started.set(line.i, { inv: line.inv, t: line.t });
    else done.set(line.c, line);
  }
  return [...started].map(([n, { inv, t }]) => {
    const end = done.get(n);
    return {
      writer,
      n,
      invocation: inv,
      outcome: end ? end.r : 'unknown',
      ...(end?.code !== undefined ? { code: end.code } : {}),
      ...(end?.a !== undefined ? { answer: end.a } : {}),
      start: t,
      ...(end ? { end: end.t } : {}),
    };
  });
}

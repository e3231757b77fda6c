/**
 * How `verify` shows its progress while it runs, from the migration's `verify:chunk` events:
 * a live display on a terminal (chunks done of total, mismatches so far, elapsed), a line per
 * chunk otherwise, a `progress` event per chunk with `--json` (lines and events only when the
 * run has more than one chunk, as before the live display). Counts only, never a row value.
 * @internal
 */
import type { DualReadEvents } from '../events.js';
import type { PersonsMigration } from '../migration/persons-migration.js';
import { count, plural } from './backfill-format.js';
import type { CommandIo } from './command.js';
import { shortDuration } from './duration-format.js';
import type { LiveDisplay } from './live-display.js';
import { ndjsonLine } from './ndjson.js';
import { progressBar } from './progress-bar.js';
import type { StopSignal } from './stop-signal.js';

/** What a verification did so far. @internal */
export interface VerifyProgressView {
  /** Chunks checked; 0 before the first. */
  readonly chunk: number;
  /** Chunks of the run; undefined until the first is checked. */
  readonly chunks: number | undefined;
  /** Keys found mismatched by the chunks so far (before their re-checks). */
  readonly mismatches: number;
  readonly elapsedMs: number;
}

/**
 * A running verification's progress output; `end()` stops it (the live display keeps its last
 * frame; what is printed next comes below it).
 *
 * @example
 * ```ts
 * const progress = watchVerify(migration, { json: false, io });
 * try { await migration.verify(); } finally { progress.end(); }
 * ```
 * @internal
 */
export interface VerifyProgress {
  /** The first SIGINT or SIGTERM: the verification stops after its current chunk. */
  readonly stopping: (signal: StopSignal) => void;
  readonly end: () => void;
}

/** How often the live display redraws (its elapsed time moves between chunks). @internal */
export const verifyRedrawMs = 1_000;

/**
 * Subscribes to the verification's chunks and shows them: a live display when `io` opens one,
 * JSON events with `json`, plain lines otherwise.
 *
 * @example
 * ```ts
 * const progress = watchVerify(migration, { json: invocation.json, io });
 * ```
 * @internal
 */
export function watchVerify(
  migration: PersonsMigration,
  { json, io }: { json: boolean; io: CommandIo },
): VerifyProgress {
  const started = performance.now();
  let view: VerifyProgressView = { chunk: 0, chunks: undefined, mismatches: 0, elapsedMs: 0 };
  const show = json
    ? jsonChunk(io)
    : io.openLiveDisplay
      ? liveFrame(io.openLiveDisplay(), migration.options.name)
      : plainChunk(io);
  const onChunk = ({ chunk, chunks, mismatches }: DualReadEvents['verify:chunk'][0]) => {
    const elapsedMs = performance.now() - started;
    view = { chunk, chunks, mismatches: view.mismatches + mismatches, elapsedMs };
    show.chunk(view, mismatches);
  };
  migration.events.on('verify:chunk', onChunk);
  const timer = setInterval(
    () => show.tick({ ...view, elapsedMs: performance.now() - started }),
    verifyRedrawMs,
  );
  timer.unref();
  show.tick(view);
  return {
    stopping: show.stopping,
    end() {
      clearInterval(timer);
      migration.events.off('verify:chunk', onChunk);
      show.end({ ...view, elapsedMs: performance.now() - started });
    },
  };
}

interface ChunkOutput {
  /** After a chunk: the view and that chunk's own mismatches. */
  chunk(view: VerifyProgressView, chunkMismatches: number): void;
  /** Between chunks (the live display's elapsed time). */
  tick(view: VerifyProgressView): void;
  stopping(signal: StopSignal): void;
  end(view: VerifyProgressView): void;
}

const stoppingNote = (signal: StopSignal) =>
  `${signal}: stopping the verification (a second signal quits at once)`;

function plainChunk({ print }: CommandIo): ChunkOutput {
  return {
    chunk({ chunk, chunks }, chunkMismatches) {
      if (chunks !== undefined && chunks > 1) {
        print(
          `verify: chunk ${count(chunk)} of ${count(chunks)} checked, ` +
            `${plural(chunkMismatches, 'key')} to re-check`,
        );
      }
    },
    tick: () => undefined,
    stopping: (signal) => print(stoppingNote(signal)),
    end: () => undefined,
  };
}

function jsonChunk({ print }: CommandIo): ChunkOutput {
  return {
    chunk({ chunk, chunks, mismatches, elapsedMs }, chunkMismatches) {
      if (chunks !== undefined && chunks > 1) {
        print(
          ndjsonLine('progress', {
            command: 'verify',
            chunk,
            chunks,
            chunkMismatches,
            mismatches,
            ms: Math.round(elapsedMs),
          }),
        );
      }
    },
    tick: () => undefined,
    stopping: (signal) => print(ndjsonLine('stopping', { command: 'verify', signal })),
    end: () => undefined,
  };
}

function liveFrame(display: LiveDisplay, migrationName: string): ChunkOutput {
  const draw = (view: VerifyProgressView) => display.draw(verifyFrame(view, migrationName));
  return {
    chunk: draw,
    tick: draw,
    stopping: (signal) => display.print(stoppingNote(signal)),
    end(view) {
      draw(view);
      display.end();
    },
  };
}

/**
 * The lines of the live display of `verify`.
 *
 * @example
 * ```ts
 * verifyFrame({ chunk: 3, chunks: 8, mismatches: 2, elapsedMs: 12_000 }, 'persons');
 * // verify of migration "persons" (Ctrl-C stops it; the run is stored as aborted)
 * // ███████████░░░░░░░░░░░░░░░░░░░  3 of 8 chunks, 2 keys mismatched so far, 12s
 * ```
 * @internal
 */
export function verifyFrame(view: VerifyProgressView, migrationName: string): string[] {
  const { chunk, chunks, mismatches, elapsedMs } = view;
  const head = `verify of migration "${migrationName}" (Ctrl-C stops it; the run is stored as aborted)`;
  const elapsed = shortDuration(Math.floor(elapsedMs / 1_000));
  if (chunks === undefined) return [head, `${progressBar(0, 30)}  planning chunks..., ${elapsed}`];
  const rest = chunk >= chunks ? '; finishing (distinct-id checks, re-checks)' : '';
  return [
    head,
    `${progressBar(chunk / chunks, 30)}  ${count(chunk)} of ${plural(chunks, 'chunk')}, ` +
      `${plural(mismatches, 'key')} mismatched so far, ${elapsed}${rest}`,
  ];
}

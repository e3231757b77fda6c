/**
 * How a long CLI command (`backfill`, `verify`) is stopped by SIGINT or SIGTERM: the first
 * signal aborts the command's work at its next safe point and the command exits with
 * 128 + the signal's number; a second one has the signal's default effect.
 * @internal
 */

/** A signal that stops a running command. @internal */
export type StopSignal = 'SIGINT' | 'SIGTERM';

/**
 * Subscribes `handler` to the stop signals and returns the unsubscribe. The process's
 * implementation delivers the first SIGINT or SIGTERM only: after it, the signals have their
 * default effect again, so a second Ctrl-C ends the process at once. Tests pass their own.
 * @internal
 */
export type OnStopSignal = (handler: (signal: StopSignal) => void) => () => void;

/**
 * Exit status of a command that a signal stopped before the end: 128 + the signal number, as a
 * shell reports a process killed by it. Non-zero on purpose: a supervisor (a Kubernetes Job,
 * systemd) must not take an interrupted backfill for a finished one. @internal
 */
export const stopExitCodes: Record<StopSignal, number> = { SIGINT: 130, SIGTERM: 143 };

const stopSignals: readonly StopSignal[] = ['SIGINT', 'SIGTERM'];

/**
 * The process's first SIGINT or SIGTERM, then the signals' default effect again. @internal
 *
 * @example
 * ```ts
 * const unsubscribe = onProcessStop((signal) => controller.abort(signal));
 * ```
 */
export const onProcessStop: OnStopSignal = (handler) => {
  const listeners = stopSignals.map((signal) => {
    const listener = () => {
      unsubscribe();
      handler(signal);
    };
    return [signal, listener] as const;
  });
  const unsubscribe = () => {
    for (const [signal, listener] of listeners) process.off(signal, listener);
  };
  for (const [signal, listener] of listeners) process.on(signal, listener);
  return unsubscribe;
};

/**
 * A command's stop: `signal` aborts at the first stop signal, `stoppedBy` says which one came.
 * @internal
 */
export interface CommandStop {
  readonly signal: AbortSignal;
  readonly stoppedBy: () => StopSignal | undefined;
  readonly unsubscribe: () => void;
}

/**
 * Listens for the first stop signal: calls `onStopping` once (to say what happens now) and
 * aborts the returned signal. @internal
 *
 * @example
 * ```ts
 * const stop = stopOnSignal(onStop, (s) => print(`${s}: stopping after the current batch`));
 * try { await migration.backfill({ signal: stop.signal }); } finally { stop.unsubscribe(); }
 * ```
 */
export function stopOnSignal(
  onStop: OnStopSignal,
  onStopping: (signal: StopSignal) => void,
): CommandStop {
  const controller = new AbortController();
  let stoppedBy: StopSignal | undefined;
  const unsubscribe = onStop((signal) => {
    if (stoppedBy !== undefined) return;
    stoppedBy = signal;
    onStopping(signal);
    controller.abort();
  });
  return { signal: controller.signal, stoppedBy: () => stoppedBy, unsubscribe };
}

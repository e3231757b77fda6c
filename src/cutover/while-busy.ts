import { setTimeout as sleep } from 'node:timers/promises';
import { TransitionRefusedError } from '../errors.js';

/**
 * Runs `attempt` again, with jittered exponential backoff (from `firstBackoffMs`, at most
 * `maxBackoffMs`), while it is refused because of the guard `busyGuard` (a table lock not
 * taken within its short timeout), for up to `timeoutMs`; then the last refusal is thrown.
 * Any other error is thrown at once. A phase change that needs a table lock takes it with a
 * short `lock_timeout` and is retried whole, so writes never queue long behind a waiting lock.
 * @internal
 *
 * @example
 * ```ts
 * const state = await whileBusy('tables_busy', { timeoutMs: 30_000, firstBackoffMs: 50, maxBackoffMs: 2_000 },
 *   () => store.transition(db, 'finalize', steps));
 * ```
 */
export async function whileBusy<T>(
  busyGuard: string,
  backoff: { timeoutMs: number; firstBackoffMs: number; maxBackoffMs: number },
  attempt: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + backoff.timeoutMs;
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      const busy = error instanceof TransitionRefusedError && error.unmet[0]?.guard === busyGuard;
      if (!busy || Date.now() >= deadline) throw error;
      const wait = Math.min(backoff.maxBackoffMs, backoff.firstBackoffMs * 2 ** n);
      await sleep(wait * (0.5 + Math.random() / 2));
    }
  }
}

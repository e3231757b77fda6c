/**
 * How the CLI shows preflight findings (problems and warnings), in `prepare`, `status` and a
 * refused `prepare`.
 * @internal
 */
import type { PreflightProblem } from '../errors.js';

/**
 * `problem [check] message` or `warning [check] message` lines, each followed by its
 * `  fix: ...` line when it has one.
 *
 * @example
 * ```ts
 * for (const line of findingLines('warning', result.warnings)) console.log(line);
 * ```
 * @internal
 */
export function findingLines(
  kind: 'problem' | 'warning',
  findings: readonly PreflightProblem[],
): string[] {
  return findings.flatMap((f) => [
    `${kind} [${f.check}] ${f.message}`,
    ...(f.fix ? [`  fix: ${f.fix}`] : []),
  ]);
}

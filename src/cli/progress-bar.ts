/**
 * The bar of the live display: how much of a whole is done, drawn with block characters.
 * @internal
 */

/**
 * A bar `width` characters wide, filled in proportion to `fraction` (clamped to 0..1; a
 * fraction that is not a number draws an empty bar).
 *
 * @example
 * ```ts
 * progressBar(0.5, 10); // '█████░░░░░'
 * ```
 * @internal
 */
export function progressBar(fraction: number, width: number): string {
  const clamped = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(clamped * width);
  return '█'.repeat(filled) + '░'.repeat(width - filled);
}

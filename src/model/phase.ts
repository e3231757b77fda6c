/**
 * The phases of a persons migration, in order.
 *
 * | phase       | reads                               | writes                 |
 * |-------------|-------------------------------------|------------------------|
 * | `old`       | old table                           | old table              |
 * | `dual_read` | merged: new row wins, else old row  | new table (copy-on-write) |
 * | `new`       | new table                           | new table              |
 * | `finalized` | the consolidated table (the new table, renamed to the old table's name) | the same |
 *
 * @example
 * ```ts
 * const { phase } = await migration.status();
 * if (phase === 'dual_read') console.log('reads merge both tables');
 * ```
 */
export type Phase = 'old' | 'dual_read' | 'new' | 'finalized';

/**
 * Every phase, in lifecycle order.
 *
 * @example
 * ```ts
 * const index = phases.indexOf((await migration.status()).phase); // 0 = old
 * ```
 */
export const phases: readonly Phase[] = ['old', 'dual_read', 'new', 'finalized'];

/**
 * The phase of one migration as stored in its control row.
 *
 * @example
 * ```ts
 * const state: PhaseState = await migration.currentPhase();
 * console.log(state.phase, state.epoch);
 * ```
 */
export interface PhaseState {
  /** The phase the migration is in. */
  readonly phase: Phase;
  /** Increases by one on every phase change; a decimal string (int8). */
  readonly epoch: string;
  /** When the phase last changed. */
  readonly changedAt: Date;
}

/** The named transitions and the phases each one may start from. @internal */
export const transitions = {
  startDualRead: { from: ['old'], to: 'dual_read' },
  cutover: { from: ['dual_read'], to: 'new' },
  rollback: { from: ['new'], to: 'dual_read' },
  finalize: { from: ['new'], to: 'finalized' },
} as const satisfies Record<string, { from: readonly Phase[]; to: Phase }>;

/** @internal */
export type TransitionName = keyof typeof transitions;

/** @internal */
export function isPhase(value: unknown): value is Phase {
  return typeof value === 'string' && (phases as readonly string[]).includes(value);
}

/**
 * The LISTEN/NOTIFY channel on which phase changes are announced. One channel for every
 * migration in the database; the payload says which control schema and migration changed.
 * @internal
 */
export const phaseChannel = 'pg_dual_read_phase';

/** Payload of a phase-change notification (JSON). @internal */
export interface PhaseNotification {
  readonly controlSchema: string;
  readonly name: string;
  readonly phase: string;
  readonly epoch: string;
}

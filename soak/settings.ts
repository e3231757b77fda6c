/**
 * The size and pace of a soak round, from the environment (`SOAK_*`, see `main.ts`); with
 * nothing set, the settings CI runs.
 */
import { envNumber } from '../bench/support.js';
import type { RoundSettings } from './round.js';

/** The round settings from the environment (the CI's when nothing is set). */
export function soakRoundSettings(): Omit<RoundSettings, 'seed'> {
  return {
    rows: envNumber('SOAK_ROWS', 5_000),
    teams: envNumber('SOAK_TEAMS', 4),
    writers: envNumber('SOAK_WRITERS', 3),
    ratePerS: envNumber('SOAK_RATE', 50),
    ownedPerWriter: envNumber('SOAK_OWNED', 150),
    hotPersons: envNumber('SOAK_HOT', 3),
    dwellMs: envNumber('SOAK_DWELL_MS', 1_500),
    meanFaultGapMs: envNumber('SOAK_FAULT_GAP_MS', 400),
    restartGapMs: envNumber('SOAK_RESTART_GAP_MS', 8_000),
    backfillRowsPerS: envNumber('SOAK_BACKFILL_ROWS_PER_S', 2_000),
  };
}

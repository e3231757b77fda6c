import { InvalidOptionsError } from '../errors.js';
import type { PersonId, PersonRow } from './persons-repository.js';

/**
 * Normalises an id given by a caller to the exact decimal string sent to Postgres, or throws
 * naming the argument (never its value: ids are not secret, but callers pass through
 * arbitrary input). @internal
 */
export function toIdText(value: PersonId, argument: string): string {
  const text = typeof value === 'string' ? value : String(value);
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new InvalidOptionsError(
      `${argument} must be a safe integer, a bigint or a decimal string`,
      [{ path: argument, message: 'not a safe integer' }],
    );
  }
  if (!/^-?\d{1,19}$/.test(text)) {
    throw new InvalidOptionsError(`${argument} must be an integer id`, [
      { path: argument, message: 'not an integer' },
    ]);
  }
  return text;
}

/** @internal */
export function toTeamId(value: number, argument = 'teamId'): number {
  if (!Number.isSafeInteger(value)) {
    throw new InvalidOptionsError(`${argument} must be an integer`, [
      { path: argument, message: 'not an integer' },
    ]);
  }
  return value;
}

/**
 * Turns a raw row into a {@link PersonRow}: `id` an exact string, `version` a number.
 * @internal
 */
export function toPersonRow(raw: Record<string, unknown>): PersonRow {
  const row = { ...raw } as Record<string, unknown>;
  row.id = String(raw.id);
  if (raw.version !== null && raw.version !== undefined) {
    const version = Number(raw.version);
    if (!Number.isSafeInteger(version)) {
      throw new RangeError('A person version is above 2^53 and cannot be returned as a number.');
    }
    row.version = version;
  }
  return row as PersonRow;
}

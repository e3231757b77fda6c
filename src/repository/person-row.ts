import { UnexpectedResultError } from '../errors.js';
import type { PersonRow } from './persons-repository.js';

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
      throw new UnexpectedResultError(
        'A person version is above 2^53 and cannot be returned as a number.',
      );
    }
    row.version = version;
  }
  return row as PersonRow;
}

import { z } from 'zod';
import type { DatabaseHandle } from '../db/database-handle.js';

/**
 * The `db` option of every entry point: a handle returned by `openDatabase()`. @internal
 *
 * @example
 * ```ts
 * const schema = z.object({ db: databaseHandle });
 * ```
 */
export const databaseHandle = z.custom<DatabaseHandle>(
  (value) =>
    typeof value === 'object' &&
    value !== null &&
    'db' in value &&
    typeof (value as { close?: unknown }).close === 'function',
  { error: 'db must be a handle returned by openDatabase()' },
);

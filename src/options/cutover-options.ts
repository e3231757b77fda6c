import { z } from 'zod';
import { identifier, integerIn, parseOptions } from '../util/parse-options.js';

const actor = z
  .string({ error: 'actor must be a string (who asks: a name, a ticket)' })
  .min(1, { error: 'actor must not be empty' })
  .max(200, { error: 'actor must be at most 200 characters' })
  .optional();
const force = z.boolean({ error: 'force must be true or false' }).default(false);

const cutoverOptionsSchema = z
  .object({
    force,
    actor,
    waiveIndexes: z
      .array(identifier('waiveIndexes[]'), {
        error: 'waiveIndexes must be an array of index names',
      })
      .default([]),
  })
  .strict();

const rollbackOptionsSchema = z.object({ actor }).strict();

const finalizeOptionsSchema = z
  .object({
    force,
    actor,
    lockTimeoutMs: integerIn('lockTimeoutMs', 1, 60_000).default(200),
    timeoutMs: integerIn('timeoutMs', 1, 3_600_000).default(30_000),
  })
  .strict();

const dropRetiredOptionsSchema = z.object({ confirm: identifier('confirm') }).strict();

/**
 * Options of `migration.cutover()`: `force` waives the guards that can be waived (recorded in
 * the phase history with `actor`); `waiveIndexes` names old-table indexes the new table may
 * lack.
 *
 * @example
 * ```ts
 * await migration.cutover({ actor: 'ops:alice', waiveIndexes: ['posthog_person_email_idx'] });
 * ```
 */
export type CutoverOptions = z.input<typeof cutoverOptionsSchema>;
/** @internal */
export type ResolvedCutoverOptions = Readonly<z.output<typeof cutoverOptionsSchema>>;

/**
 * Options of `migration.rollback()`.
 *
 * @example
 * ```ts
 * await migration.rollback({ actor: 'ops:alice' });
 * ```
 */
export type RollbackOptions = z.input<typeof rollbackOptionsSchema>;
/** @internal */
export type ResolvedRollbackOptions = Readonly<z.output<typeof rollbackOptionsSchema>>;

/**
 * Options of `migration.finalize()`: `force` goes ahead although objects reference the old
 * table (each named in the phase history); each attempt of the swap waits at most
 * `lockTimeoutMs` (default 200) for its locks, attempts go on with backoff for at most
 * `timeoutMs` (default 30000).
 *
 * @example
 * ```ts
 * await migration.finalize({ actor: 'ops:alice', lockTimeoutMs: 100 });
 * ```
 */
export type FinalizeOptions = z.input<typeof finalizeOptionsSchema>;
/** @internal */
export type ResolvedFinalizeOptions = Readonly<z.output<typeof finalizeOptionsSchema>>;

/**
 * Options of `migration.dropRetiredTable()`: `confirm` must be the retired table's name.
 *
 * @example
 * ```ts
 * await migration.dropRetiredTable({ confirm: 'posthog_person_retired' });
 * ```
 */
export type DropRetiredOptions = z.input<typeof dropRetiredOptionsSchema>;

/** @internal */
export function resolveCutoverOptions(input: unknown): ResolvedCutoverOptions {
  return parseOptions(cutoverOptionsSchema, input, 'cutover()');
}

/** @internal */
export function resolveRollbackOptions(input: unknown): ResolvedRollbackOptions {
  return parseOptions(rollbackOptionsSchema, input, 'rollback()');
}

/** @internal */
export function resolveFinalizeOptions(input: unknown): ResolvedFinalizeOptions {
  return parseOptions(finalizeOptionsSchema, input, 'finalize()');
}

/** @internal */
export function resolveDropRetiredOptions(input: unknown): Readonly<{ confirm: string }> {
  return parseOptions(dropRetiredOptionsSchema, input, 'dropRetiredTable()');
}

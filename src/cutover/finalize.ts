import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import type { DatabaseHandle } from '../db/database-handle.js';
import { setLocal } from '../db/local-settings.js';
import { isSqlState } from '../db/query-failed.js';
import { tagged } from '../db/statement-tag.js';
import { TransitionRefusedError, type UnmetGuard } from '../errors.js';
import type { PhaseState } from '../model/phase.js';
import type { ResolvedFinalizeOptions } from '../options/cutover-options.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { PhaseStore } from '../phases/phase-store.js';
import { StrayWrites } from '../phases/stray-writes.js';
import { relationName } from '../prepare/new-table-names.js';
import { type IndexRename, planIndexRenames, renameIndexes } from './consolidated-index-names.js';
import { finalizeGuards } from './finalize-guards.js';
import { whileBusy } from './while-busy.js';

/** The guard an attempt reports when it could not take its locks in `lockTimeoutMs`. */
const busy = 'tables_busy';

/**
 * `new -> finalized`, the consolidation: in one short transaction the old table is renamed to
 * its retired name, the new table takes the old table's name (dashboards, ad-hoc queries and
 * services that never used this library read the right rows), its indexes take the old
 * table's index names (the retired table's move aside to `<name>_retired`), the `id` sequence
 * becomes the consolidated table's (dropping the retired table can never drop it), and the
 * stray-write trigger goes. The transaction takes the phase fence and then the two tables `ACCESS
 * EXCLUSIVE` with `lockTimeoutMs`: a busy table is never left with traffic queued behind a
 * waiting lock for longer; the attempt is retried with backoff for up to `timeoutMs`, then
 * `finalize()` gives up, changing nothing. Guards are checked first (see `finalizeGuards`).
 * @internal (use `migration.finalize()`)
 *
 * @example
 * ```ts
 * const { state, retiredTable } = await runFinalize(handle, options, resolved);
 * ```
 */
export async function runFinalize(
  handle: DatabaseHandle,
  options: ResolvedMigrationOptions,
  finalize: ResolvedFinalizeOptions,
): Promise<{ state: PhaseState; retiredTable: string }> {
  const store = new PhaseStore(options);
  const { phase } = await store.read(handle.db);
  if (phase !== 'new') {
    // The transition refuses it with the usual message (nothing is read before).
    return { state: await store.transition(handle.db, 'finalize'), retiredTable: '' };
  }
  const { sequence, unmet } = await finalizeGuards(handle.db, options);
  if (unmet.length > 0 && (!finalize.force || unmet.some((guard) => !guard.overridable))) {
    throw new TransitionRefusedError('finalize', unmet);
  }
  const retiredTable = await retiredName(handle.db, options);
  // Read before the swap: its transaction holds the phase fence, so it only runs the renames.
  const renames = await planIndexRenames(handle.db, options);
  const backoff = { timeoutMs: finalize.timeoutMs, firstBackoffMs: 50, maxBackoffMs: 2_000 };
  const state = await whileBusy(busy, backoff, () =>
    store.transition(handle.db, 'finalize', {
      ...(finalize.actor === undefined ? {} : { actor: finalize.actor }),
      during: async (trx) => {
        await swap(trx, options, finalize, { retiredTable, sequence, renames });
        return { forced: unmet.map((guard) => guard.guard) };
      },
    }),
  );
  return { state, retiredTable };
}

async function swap(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  finalize: ResolvedFinalizeOptions,
  plan: { retiredTable: string; sequence: string | undefined; renames: readonly IndexRename[] },
): Promise<void> {
  const { retiredTable, sequence, renames } = plan;
  const { schema, oldTable, newTable, controlSchema } = options;
  await setLocal(trx, { lock_timeout: `${finalize.lockTimeoutMs}ms` });
  try {
    await tagged(
      'finalize-swap',
      sql`LOCK TABLE ${sql.id(schema, oldTable)}, ${sql.id(schema, newTable)} IN ACCESS EXCLUSIVE MODE`,
    ).execute(trx);
  } catch (error) {
    if (!isSqlState(error, '55P03')) throw error;
    throw new TransitionRefusedError('finalize', [busyGuard(finalize)]);
  }
  await sql`ALTER TABLE ${sql.id(schema, oldTable)} RENAME TO ${sql.id(retiredTable)}`.execute(trx);
  await sql`ALTER TABLE ${sql.id(schema, newTable)} RENAME TO ${sql.id(oldTable)}`.execute(trx);
  if (sequence) {
    // Owned by the consolidated table's id: dropping the retired table leaves it alone.
    await sql`ALTER SEQUENCE ${sql.raw(sequence)} OWNED BY ${sql.id(schema, oldTable, 'id')}`.execute(
      trx,
    );
  }
  await renameIndexes(trx, schema, renames);
  await new StrayWrites(options).dropTrigger(trx, retiredTable);
  await sql`UPDATE ${sql.id(controlSchema, 'migration')} SET retired_table = ${retiredTable}
    WHERE name = ${options.name}`.execute(trx);
}

function busyGuard(finalize: ResolvedFinalizeOptions): UnmetGuard {
  return {
    guard: busy,
    message:
      `the persons tables stayed busy: no attempt got both tables within lockTimeoutMs ` +
      `(${finalize.lockTimeoutMs} ms) for timeoutMs (${finalize.timeoutMs} ms).`,
    fix: 'find long transactions on them (pg_stat_activity) and retry, or raise lockTimeoutMs / timeoutMs.',
    overridable: false,
  };
}

/** `<old table>_retired`, or a variant that no relation of the schema has (63 bytes at most). */
async function retiredName(db: AnyDb, options: ResolvedMigrationOptions): Promise<string> {
  const { rows } = await sql<{ name: string }>`
    SELECT c.relname::text AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ${options.schema}`.execute(db);
  return relationName(options.oldTable, 'retired', new Set(rows.map((r) => r.name)));
}

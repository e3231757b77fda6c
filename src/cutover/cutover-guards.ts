import { readBackfillStatus } from '../backfill/backfill-status.js';
import { PlanStore } from '../backfill/plan-store.js';
import type { AnyDb } from '../db/any-db.js';
import type { UnmetGuard } from '../errors.js';
import { clientProtocol, libraryVersion } from '../model/library-version.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { ClientRegistry } from '../phases/client-registry.js';
import { StrayWrites } from '../phases/stray-writes.js';
import { catalogFindings } from '../prepare/catalog-findings.js';
import { VerificationStore } from '../verify/verification-store.js';

/**
 * Every guard of `cutover()` that is not met now, all of them (an operator fixes them in one
 * go, not one refusal at a time):
 *
 * - `backfill_unfinished` (cannot be forced: persons only in the old table would vanish from
 *   reads): the backfill has no plan, or ranges left;
 * - `verification_missing`, `verification_unclean`, `verification_partial`,
 *   `verification_stale`: the latest verification must be clean, full and started after the
 *   backfill finished;
 * - `stray_writes`: something other than the library wrote to the old table since `dual_read`
 *   began (the keys are in `status().strayWrites`);
 * - `old_clients`: a live instance of the client registry runs a library whose protocol does
 *   not know `new` (instances older than the registry do not register: deploy first).
 *
 * A few short reads; the cutover runs them inside its transaction, after the phase fence is
 * held (the catalog's guard, {@link indexGuard}, is read before: about twenty catalog queries
 * that writers should not wait behind). @internal
 *
 * @example
 * ```ts
 * const unmet = [...(await unmetCutoverGuards(trx, options)), ...indexGuard];
 * ```
 */
export async function unmetCutoverGuards(
  db: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<UnmetGuard[]> {
  const unmet: UnmetGuard[] = [];
  // One count while writes queue behind the phase change; the progress only for the refusal.
  const { notDone, planExists } = await new PlanStore(options).remaining(db);
  if (!planExists || notDone > 0) {
    const backfill = await readBackfillStatus(db, options);
    unmet.push({
      guard: 'backfill_unfinished',
      message: backfill
        ? `the backfill is ${backfill.state} at ${backfill.percent.toFixed(1)}%: old rows may not be in the new table yet.`
        : 'the backfill never ran: the new table may lack old rows.',
      fix: 'run backfill() (CLI: pg-dual-read backfill) until it finishes.',
      overridable: false,
    });
  }
  unmet.push(...verificationGuards(await new VerificationStore(options).read(db)));
  const stray = await new StrayWrites(options).read(db, 5);
  if (stray.count > 0) {
    const keys = stray.keys.map((k) => `${k.operation} (${k.teamId}, ${k.personId})`).join(', ');
    unmet.push({
      guard: 'stray_writes',
      message:
        `${stray.count} key(s) of the old table were written by something other than the ` +
        `library since dual_read began, e.g. ${keys}.`,
      fix:
        'find the writer (a service on an old repository, a script) and stop it, then run ' +
        "verify({ repair: true }) and clear the record (DELETE FROM the control schema's " +
        'stray_write for this migration) once the keys are verified.',
      overridable: true,
    });
  }
  unmet.push(...(await clientGuards(db, options)));
  return unmet;
}

/** `old_clients`: live instances whose library does not know the phases after `dual_read`. */
async function clientGuards(db: AnyDb, options: ResolvedMigrationOptions): Promise<UnmetGuard[]> {
  const stale = (await new ClientRegistry(options).live(db)).filter(
    (client) => client.protocol < clientProtocol,
  );
  if (stale.length === 0) return [];
  const who = stale
    .slice(0, 5)
    .map((c) => `${c.service} on ${c.host} (pid ${c.pid}, ${c.libraryVersion})`)
    .join(', ');
  return [
    {
      guard: 'old_clients',
      message: `${stale.length} live instance(s) run a library version that does not know the phase new: ${who}.`,
      fix: `upgrade them to pg-dual-read ${libraryVersion} or later (status().clients lists every live instance).`,
      overridable: true,
    },
  ];
}

/**
 * The guard `index_missing`: an index of the old table that the new table has no equivalent of
 * and that is not in `waivedIndexes` (a lookup by it would scan the new table once reads move).
 * @internal
 *
 * @example
 * ```ts
 * const unmet = await indexGuard(db, options, ['posthog_person_email_idx']);
 * ```
 */
export async function indexGuard(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  waivedIndexes: readonly string[],
): Promise<UnmetGuard[]> {
  return missingIndexGuard((await catalogFindings(db, options)).missingIndexes, waivedIndexes);
}

/**
 * {@link indexGuard} from a list of missing indexes already read (as `status()` has). @internal
 *
 * @example
 * ```ts
 * const unmet = missingIndexGuard(['posthog_person_email_idx'], []);
 * ```
 */
export function missingIndexGuard(
  missingIndexes: readonly string[],
  waivedIndexes: readonly string[],
): UnmetGuard[] {
  const missing = missingIndexes.filter((index) => !waivedIndexes.includes(index));
  if (missing.length === 0) return [];
  return [
    {
      guard: 'index_missing',
      message: `the new table has no equivalent of the old table's index(es) ${missing.join(', ')}: lookups by them would scan the new table.`,
      fix: 'create them (status().warnings has each CREATE INDEX CONCURRENTLY), or waive them by name (waiveIndexes).',
      overridable: true,
    },
  ];
}

function verificationGuards(latest: Awaited<ReturnType<VerificationStore['read']>>): UnmetGuard[] {
  const fix =
    'run verify() (CLI: pg-dual-read verify) after the backfill finished, until it is clean.';
  if (!latest) {
    return [
      {
        guard: 'verification_missing',
        message: 'no verification has run.',
        fix,
        overridable: true,
      },
    ];
  }
  const unmet: UnmetGuard[] = [];
  if (latest.status !== 'clean') {
    unmet.push({
      guard: 'verification_unclean',
      message: `the latest verification (${latest.id}) is ${latest.status} with ${latest.mismatches} mismatched key(s).`,
      fix: 'run verify({ repair: true }), or find why the tables disagree (migration.mismatches(id)).',
      overridable: true,
    });
  }
  if (!latest.full) {
    unmet.push({
      guard: 'verification_partial',
      message: `the latest verification (${latest.id}) covered only ${latest.range}.`,
      fix,
      overridable: true,
    });
  }
  if (!latest.newerThanBackfill) {
    unmet.push({
      guard: 'verification_stale',
      message: `the latest verification (${latest.id}) started before the backfill finished.`,
      fix,
      overridable: true,
    });
  }
  return unmet;
}

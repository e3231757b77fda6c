/**
 * A stand-in for an ingestion service's own write code: what it does with each event, written
 * against {@link PersonsRepository} only, so the same code runs on the service's old repository
 * and on `migration.repository()`. In your service this is the real thing; the CI test next to
 * it (`persons-consistency.test.ts`) runs it in `dual_read` and checks the tables still agree.
 */
import type { PersonRow, PersonsRepository } from '../../src/index.js';

/** What ingestion receives: PostHog-like `$identify`, `$set`, `$create_alias`, merges, deletes. */
export type PersonEvent =
  /** Sets properties on the person of `distinctId`, creating the person when there is none. */
  | {
      readonly kind: 'set';
      readonly teamId: number;
      readonly distinctId: string;
      readonly properties: Record<string, unknown>;
    }
  /** Points `alias` at the person of `distinctId` (a second device, a login). */
  | {
      readonly kind: 'alias';
      readonly teamId: number;
      readonly distinctId: string;
      readonly alias: string;
    }
  /** Merges the person of `source` into the person of `target`: one person left. */
  | {
      readonly kind: 'merge';
      readonly teamId: number;
      readonly source: string;
      readonly target: string;
    }
  /** Deletes the person of `distinctId` (a GDPR deletion request), distinct ids included. */
  | { readonly kind: 'delete'; readonly teamId: number; readonly distinctId: string };

/** What one event did, for the test to check the service's own outcome too. */
export type IngestOutcome = 'created' | 'updated' | 'aliased' | 'merged' | 'deleted' | 'ignored';

/**
 * Applies one event through the repository, each in one transaction (the person is locked
 * first, as a service does to keep its read-modify-write safe).
 *
 * @example
 * ```ts
 * await ingest(migration.repository(), { kind: 'set', teamId: 1, distinctId: 'd1', properties: { plan: 'paid' } });
 * ```
 */
export function ingest(repository: PersonsRepository, event: PersonEvent): Promise<IngestOutcome> {
  return repository.inTransaction(async (tx) => {
    switch (event.kind) {
      case 'set':
        return setProperties(tx, event.teamId, event.distinctId, event.properties);
      case 'alias':
        return alias(tx, event.teamId, event.distinctId, event.alias);
      case 'merge':
        return merge(tx, event.teamId, event.source, event.target);
      case 'delete': {
        const person = await tx.fetchPerson(event.teamId, event.distinctId, { forUpdate: true });
        if (!person) return 'ignored';
        return (await tx.deletePerson(event.teamId, person.id)) ? 'deleted' : 'ignored';
      }
    }
  });
}

async function setProperties(
  tx: PersonsRepository,
  teamId: number,
  distinctId: string,
  properties: Record<string, unknown>,
): Promise<IngestOutcome> {
  const person = await tx.fetchPerson(teamId, distinctId, { forUpdate: true });
  if (!person) {
    const created = await tx.createPerson({ teamId, distinctIds: [distinctId], properties });
    return created.status === 'created' ? 'created' : 'ignored';
  }
  await tx.updatePerson(teamId, person.id, { properties });
  return 'updated';
}

async function alias(
  tx: PersonsRepository,
  teamId: number,
  distinctId: string,
  newDistinctId: string,
): Promise<IngestOutcome> {
  const person = await tx.fetchPerson(teamId, distinctId, { forUpdate: true });
  if (!person) return 'ignored';
  const added = await tx.addDistinctId(teamId, person.id, newDistinctId);
  return added.status === 'added' ? 'aliased' : 'ignored';
}

/**
 * The target keeps its properties and takes the source's where it has none. Both persons are
 * locked in distinct id order, so two merges of the same pair never deadlock.
 */
async function merge(
  tx: PersonsRepository,
  teamId: number,
  sourceDistinctId: string,
  targetDistinctId: string,
): Promise<IngestOutcome> {
  const locked = new Map<string, PersonRow | undefined>();
  for (const distinctId of [sourceDistinctId, targetDistinctId].sort()) {
    locked.set(distinctId, await tx.fetchPerson(teamId, distinctId, { forUpdate: true }));
  }
  const source = locked.get(sourceDistinctId);
  const target = locked.get(targetDistinctId);
  if (!source || !target || source.id === target.id) return 'ignored';
  const moved = await tx.moveDistinctIds(teamId, source.id, target.id);
  if (moved.status !== 'moved') return 'ignored';
  await tx.updatePerson(teamId, target.id, { properties: missingIn(target, source) });
  await tx.deletePerson(teamId, source.id);
  return 'merged';
}

function missingIn(target: PersonRow, source: PersonRow): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(source.properties).filter(([key]) => !(key in target.properties)),
  );
}

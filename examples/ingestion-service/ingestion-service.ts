/**
 * A small event-ingestion service, as a PostHog-like pipeline has: it looks the persons of a
 * batch of events up by distinct id, creates the persons it has never seen and merges new
 * properties into the others. It is typed against `PersonsRepository` only: during the
 * migration it is handed the migration's `repository()` instead of its own, and nothing else
 * changes.
 */
import type { PersonsRepository } from '../../src/index.js';

/** One event, reduced to what the persons part of ingestion needs. */
export interface IngestedEvent {
  readonly teamId: number;
  readonly distinctId: string;
  readonly properties: Readonly<Record<string, unknown>>;
}

/** What one batch did: persons created and updated, and creations lost to a concurrent one. */
export interface BatchOutcome {
  created: number;
  updated: number;
  raced: number;
}

export class IngestionService {
  constructor(private readonly persons: PersonsRepository) {}

  /** Ingests a batch: one batched lookup, then one write per event. */
  async ingest(events: readonly IngestedEvent[]): Promise<BatchOutcome> {
    const outcome: BatchOutcome = { created: 0, updated: 0, raced: 0 };
    const found = await this.persons.fetchPersonsByDistinctIds(
      events.map(({ teamId, distinctId }) => ({ teamId, distinctId })),
    );
    const byKey = new Map(found.map((p) => [`${p.team_id}:${p.distinct_id}`, p]));
    for (const event of events) {
      const person = byKey.get(`${event.teamId}:${event.distinctId}`);
      if (person) {
        await this.persons.updatePerson(event.teamId, person.id, { properties: event.properties });
        outcome.updated += 1;
        continue;
      }
      const result = await this.persons.createPerson({
        teamId: event.teamId,
        distinctIds: [event.distinctId],
        properties: event.properties,
      });
      if (result.status === 'created') {
        byKey.set(`${event.teamId}:${event.distinctId}`, {
          ...result.person,
          distinct_id: event.distinctId,
        });
        outcome.created += 1;
        continue;
      }
      // Another instance created it first: its person gets the properties instead.
      outcome.raced += 1;
      const winner = await this.persons.fetchPerson(event.teamId, event.distinctId);
      if (winner) {
        await this.persons.updatePerson(event.teamId, winner.id, { properties: event.properties });
      }
    }
    return outcome;
  }
}

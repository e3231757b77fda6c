import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { readTableShape, type TableShape } from '../db/table-shape.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/**
 * Takes the lock under which `prepare()` looks for the new table and creates it, until the
 * transaction ends: two `prepare()` calls at once would both find it missing. @internal
 *
 * @example
 * ```ts
 * await lockNewTableCreation(trx, options);
 * ```
 */
export async function lockNewTableCreation(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<void> {
  const key = `pg-dual-read:prepare:${options.schema}.${options.newTable}`;
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(trx);
}

/**
 * Creates the new table from the old one: same columns, defaults, constraints, generated
 * columns, storage and comments; primary key `(team_id, id)` (it includes `team_id` so the
 * table can be hash-partitioned by team); a unique `(team_id, uuid)` index when the old table
 * has a uuid; `partitions` hash partitions by `team_id` when asked. @internal
 *
 * @example
 * ```ts
 * await createNewTable(trx, options, 8);
 * ```
 */
export async function createNewTable(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  partitions: number | undefined,
): Promise<void> {
  const oldRef = sql.id(options.schema, options.oldTable);
  const newRef = sql.id(options.schema, options.newTable);
  // Not INCLUDING IDENTITY: an identity column would get a sequence of its own, and ids of
  // the two tables could collide. The id default is pointed at the old sequence below.
  const partitionClause = partitions ? sql`PARTITION BY HASH (team_id)` : sql``;
  await sql`CREATE TABLE ${newRef} (LIKE ${oldRef}
    INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE
    INCLUDING COMMENTS) ${partitionClause}`.execute(trx);
  // The key includes team_id so the table can be hash-partitioned by team.
  await sql`ALTER TABLE ${newRef} ADD PRIMARY KEY (team_id, id)`.execute(trx);
  const oldShape = await readTableShape(trx, options.schema, options.oldTable);
  if (oldShape?.columns.some((c) => c.name === 'uuid')) {
    await sql`CREATE UNIQUE INDEX ${sql.id(`${options.newTable}_team_id_uuid_key`.slice(0, 63))}
      ON ${newRef} (team_id, uuid)`.execute(trx);
  }
  for (let remainder = 0; remainder < (partitions ?? 0); remainder++) {
    const name = `${options.newTable}_p${remainder}`;
    await sql`CREATE TABLE ${sql.id(options.schema, name)} PARTITION OF ${newRef}
      FOR VALUES WITH (MODULUS ${sql.lit(partitions ?? 0)}, REMAINDER ${sql.lit(remainder)})`.execute(
      trx,
    );
  }
}

/**
 * Makes the new table's `id` default draw from the old table's sequence (rule
 * `shared-sequence`), dropping an identity of its own first. @internal
 *
 * @example
 * ```ts
 * await shareIdSequence(trx, options, '"public"."posthog_person_id_seq"', newShape);
 * ```
 */
export async function shareIdSequence(
  trx: AnyDb,
  options: ResolvedMigrationOptions,
  sequence: string,
  newShape: TableShape | undefined,
): Promise<void> {
  const newRef = sql.id(options.schema, options.newTable);
  const idColumn = newShape?.columns.find((c) => c.name === 'id');
  if (idColumn?.identity)
    await sql`ALTER TABLE ${newRef} ALTER COLUMN id DROP IDENTITY`.execute(trx);
  await sql`ALTER TABLE ${newRef} ALTER COLUMN id SET DEFAULT nextval(${sql.lit(sequence)}::regclass)`.execute(
    trx,
  );
}

import { type RawBuilder, sql } from 'kysely';
import { controlSchemaNotInstalled, isMissingObject } from '../control/control-schema-missing.js';
import type { AnyDb } from '../db/any-db.js';
import { tagged } from '../db/statement-tag.js';
import type { Phase } from '../model/phase.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import type { MigrationTables } from '../persons/tables.js';
import type { PersonUpdate } from './persons-repository.js';

/**
 * SQL of the repository's writes. Every method runs inside a transaction that has already
 * taken the phase fence (see `PhaseStore.fence`), so `phase` is the phase every reader sees.
 *
 * ## The protocol that keeps deleted persons deleted (phase `dual_read`)
 *
 * Live writes, copy-on-write and the backfill touch the same keys at once. The danger is a
 * copy of an old row landing in the new table after a delete removed it. The rules:
 *
 * 1. **A copy and a delete of the same old row never overlap.** Every copy inserts with
 *    `ON CONFLICT DO NOTHING`, so whichever copy comes first wins and no copy ever overwrites
 *    a newer row in the new table. Copy-on-write's conflict has no target on purpose: two
 *    copies of one row racing meet on every unique index (the key and `(team_id, uuid)`), and
 *    a targeted clause could turn the uuid one into an error, which a live write must never
 *    see. (The backfill targets the key, for speed, and retries that rare error.) A
 *    *different* person holding the same uuid in the new table cannot arise: `createPerson`
 *    refuses old-table uuids in `dual_read`.
 *    A copy keeps deletes away in one of two ways:
 *    - **row locks**: it reads the old rows `FOR SHARE` in the transaction that inserts the
 *      copies ({@link PersonWrites.copyOldRows}, repair, and the backfill in
 *      `lockMode: 'rows'`); a delete of such a row waits for the copy to commit,
 *      and a copy reaching a row being deleted waits for the delete, then skips the gone row;
 *    - **range fences** (backfill in `lockMode: 'ranges'`, the default): a batch locks the
 *      control row of its range `FOR UPDATE` in a statement *before* the one that reads and
 *      copies, and holds it until it commits; a delete locks the row of the range that
 *      covers its key `FOR KEY SHARE`, while that range still has the key to copy (not done,
 *      checkpoint below the key). The two conflict, so either the delete committed before the batch got
 *      the row, and the batch's later snapshot does not see the old row, or the batch
 *      committed before the delete got it, and rule 2 removes the copy (or the checkpoint
 *      has passed the key: the copy committed, and rule 2 removes it). No per-row lock is
 *      written into the old table, and a delete waits only for a batch of its own range.
 *      Which range covers a key changes only under the **delete fence**, an empty control
 *      table: planning and splits take it `SHARE`, every delete `ROW EXCLUSIVE` from the
 *      start of the statement that looks its range up, so a delete never looks up ranges
 *      that change before it commits. Deletes never wait for each other on either lock, and
 *      a claim, a lease renewal, a checkpoint and a `'rows'` batch take the range row in
 *      modes `FOR KEY SHARE` does not conflict with.
 * 2. **A delete takes its fences, removes the old row** (which waits for any transaction
 *    holding it `FOR SHARE`), **then the new row, in a later statement**, whose fresh snapshot
 *    sees any copy that committed before.
 * 3. **Distinct ids are added under `FOR KEY SHARE` of the person row in the table the phase
 *    writes** (what a foreign key check does), and a delete removes the distinct ids in a
 *    statement after the person row: an add either commits first (and its distinct id is
 *    deleted) or finds the person gone. No orphan distinct id, with or without a foreign key.
 *
 * In phases `old` and `new` there is one table and rules 2 and 3 apply to it alone.
 * @internal
 */
export class PersonWrites {
  constructor(
    private readonly tables: MigrationTables,
    private readonly columns: PersonColumns,
  ) {}

  /**
   * The savepoint `createPerson` sets before its insert, so a distinct-id conflict undoes the
   * person row without ending the caller's transaction.
   */
  savepoint(): RawBuilder<unknown> {
    return sql`SAVEPOINT pg_dual_read_create`;
  }

  /** Keeps what `createPerson` wrote since {@link savepoint}. */
  releaseSavepoint(): RawBuilder<unknown> {
    return sql`RELEASE SAVEPOINT pg_dual_read_create`;
  }

  /** Undoes what `createPerson` wrote since {@link savepoint}. */
  rollbackToSavepoint(): RawBuilder<unknown> {
    return sql`ROLLBACK TO SAVEPOINT pg_dual_read_create`;
  }

  /** The table writes go to in `phase`. */
  writeTable(phase: Phase): RawBuilder<unknown> {
    return phase === 'old' ? this.tables.old : this.tables.new;
  }

  /**
   * Copy-on-write (`dual_read` only): copies the old rows of `keys` (a subquery yielding
   * `team_id`, `person_id`) that the new table lacks, reading them `FOR SHARE` (rule 1).
   * Versions carry over unchanged, so later updates continue from the old row's version.
   */
  async copyOldRows(trx: AnyDb, phase: Phase, keys: RawBuilder<unknown>): Promise<void> {
    if (phase !== 'dual_read') return;
    const columns = this.columns.copyable;
    await tagged(
      'copy-on-write',
      sql`INSERT INTO ${this.tables.new} (${columnList(columns)})
      SELECT ${columnList(columns, 'o')}
      FROM ${this.tables.old} AS o
      WHERE (o.team_id, o.id) IN (SELECT k.team_id, k.person_id FROM (${keys}) AS k)
        AND NOT EXISTS (
          SELECT 1 FROM ${this.tables.new} AS n WHERE n.team_id = o.team_id AND n.id = o.id)
      FOR SHARE OF o
      ON CONFLICT DO NOTHING`,
    ).execute(trx);
  }

  /** Locks the persons of `keys` `FOR UPDATE` in the table the phase writes, returning them. */
  lockForUpdate(phase: Phase, keys: RawBuilder<unknown>): RawBuilder<unknown> {
    return sql`SELECT ${columnList(this.columns.all, 't')}
      FROM ${this.writeTable(phase)} AS t
      WHERE (t.team_id, t.id) IN (SELECT k.team_id, k.person_id FROM (${keys}) AS k)
      FOR UPDATE OF t`;
  }

  /** Inserts a person and its distinct ids unless one of them is already taken. */
  createPerson(
    phase: Phase,
    values: Record<string, RawBuilder<unknown>>,
    teamId: number,
    distinctIds: string[],
    versions: number[],
  ): RawBuilder<unknown> {
    const names = Object.keys(values);
    const distinctIdColumns = this.columns.distinctIdHasVersion
      ? sql`team_id, distinct_id, person_id, version`
      : sql`team_id, distinct_id, person_id`;
    const distinctIdValues = this.columns.distinctIdHasVersion
      ? sql`p.team_id, x.distinct_id, p.id, x.version`
      : sql`p.team_id, x.distinct_id, p.id`;
    return sql`WITH p AS (
        INSERT INTO ${this.writeTable(phase)} (${columnList(names)})
        SELECT ${sql.join(names.map((n) => values[n] as RawBuilder<unknown>))}
        WHERE NOT EXISTS (
          SELECT 1 FROM ${this.tables.distinctIds} AS d
          WHERE d.team_id = ${teamId} AND d.distinct_id = ANY(${distinctIds}::text[]))
        RETURNING *
      ), inserted AS (
        INSERT INTO ${this.tables.distinctIds} (${distinctIdColumns})
        SELECT ${distinctIdValues}
        FROM p, unnest(${distinctIds}::text[], ${versions}::int8[]) AS x(distinct_id, version)
        ON CONFLICT DO NOTHING
        RETURNING distinct_id
      )
      SELECT (SELECT count(*)::int FROM inserted) AS inserted_count, ${columnList(this.columns.all, 'p')}
      FROM p`;
  }

  /**
   * Whether the old table holds `uuid` for the team: in `dual_read` each table's unique index
   * only sees its own rows, so a new person must not reuse an old person's uuid.
   */
  uuidInOldTable(teamId: number, uuid: string): RawBuilder<unknown> {
    return sql`SELECT 1 AS taken FROM ${this.tables.old} AS o
      WHERE o.team_id = ${teamId} AND o.uuid = ${uuid}::uuid`;
  }

  /** Which of `distinctIds` a team already uses. */
  takenDistinctIds(teamId: number, distinctIds: string[]): RawBuilder<unknown> {
    return sql`SELECT d.distinct_id FROM ${this.tables.distinctIds} AS d
      WHERE d.team_id = ${teamId} AND d.distinct_id = ANY(${distinctIds}::text[])`;
  }

  /** `UPDATE ... SET ..., version = version + 1`, optionally only at `expectedVersion`. */
  updatePerson(
    phase: Phase,
    teamId: number,
    personId: string,
    update: PersonUpdate,
    expectedVersion?: number,
  ): RawBuilder<unknown> {
    const sets: RawBuilder<unknown>[] = [];
    if (update.properties || update.unsetProperties) {
      sets.push(sql`properties = (COALESCE(properties, '{}'::jsonb)
        || ${JSON.stringify(update.properties ?? {})}::jsonb) - ${[...(update.unsetProperties ?? [])]}::text[]`);
    }
    if (update.propertiesLastUpdatedAt && this.columns.has.has('properties_last_updated_at')) {
      sets.push(sql`properties_last_updated_at = COALESCE(properties_last_updated_at, '{}'::jsonb)
        || ${JSON.stringify(update.propertiesLastUpdatedAt)}::jsonb`);
    }
    if (update.propertiesLastOperation && this.columns.has.has('properties_last_operation')) {
      sets.push(sql`properties_last_operation = COALESCE(properties_last_operation, '{}'::jsonb)
        || ${JSON.stringify(update.propertiesLastOperation)}::jsonb`);
    }
    if (update.isIdentified !== undefined && this.columns.has.has('is_identified')) {
      sets.push(sql`is_identified = ${update.isIdentified}`);
    }
    sets.push(sql`version = COALESCE(version, 0) + 1`);
    const versionCheck =
      expectedVersion === undefined ? sql`` : sql`AND COALESCE(version, 0) = ${expectedVersion}`;
    return sql`UPDATE ${this.writeTable(phase)} SET ${sql.join(sets)}
      WHERE team_id = ${teamId} AND id = ${personId}::bigint ${versionCheck}
      RETURNING ${columnList(this.columns.all)}`;
  }

  /**
   * Deletes a person and its distinct ids following rules 2 and 3: three statements in this
   * order, each with a fresh snapshot (in `dual_read` the first one also takes the delete
   * fence and the range fence, see `withDeleteFences`). Returns whether a person row was
   * deleted.
   */
  async deletePerson(trx: AnyDb, phase: Phase, teamId: number, personId: string): Promise<boolean> {
    const deleteFrom = (table: RawBuilder<unknown>) =>
      sql`DELETE FROM ${table} WHERE team_id = ${teamId} AND id = ${personId}::bigint`;
    const statements =
      phase === 'dual_read'
        ? [
            tagged(
              'delete-old-row',
              withDeleteFences(this.tables, teamId, personId, deleteFrom(this.tables.old)),
            ),
            tagged('delete-new-row', deleteFrom(this.tables.new)),
          ]
        : [
            tagged(
              phase === 'old' ? 'delete-old-row' : 'delete-new-row',
              deleteFrom(this.writeTable(phase)),
            ),
          ];
    let deleted = false;
    for (const statement of statements) {
      const result = await executeFenced(statement, trx, this.tables.controlSchema);
      if ((result.numAffectedRows ?? 0n) > 0n) deleted = true;
    }
    await sql`DELETE FROM ${this.tables.distinctIds}
      WHERE team_id = ${teamId} AND person_id = ${personId}::bigint`.execute(trx);
    return deleted;
  }

  /** Adds a distinct id to a person held `FOR KEY SHARE` (rule 3). */
  addDistinctId(
    phase: Phase,
    teamId: number,
    personId: string,
    distinctId: string,
    version: number,
  ): RawBuilder<unknown> {
    const columns = this.columns.distinctIdHasVersion
      ? sql`team_id, distinct_id, person_id, version`
      : sql`team_id, distinct_id, person_id`;
    const values = this.columns.distinctIdHasVersion
      ? sql`p.team_id, ${distinctId}, p.id, ${version}`
      : sql`p.team_id, ${distinctId}, p.id`;
    return tagged(
      'add-distinct-id',
      sql`WITH p AS (
        SELECT t.team_id, t.id FROM ${this.writeTable(phase)} AS t
        WHERE t.team_id = ${teamId} AND t.id = ${personId}::bigint FOR KEY SHARE
      ), inserted AS (
        INSERT INTO ${this.tables.distinctIds} (${columns}) SELECT ${values} FROM p
        ON CONFLICT DO NOTHING RETURNING 1
      )
      SELECT (SELECT count(*)::int FROM p) AS persons, (SELECT count(*)::int FROM inserted) AS inserted`,
    );
  }

  /** Points every distinct id of `source` at `target`, holding `target` `FOR KEY SHARE` (rule 3). */
  moveDistinctIds(
    phase: Phase,
    teamId: number,
    source: string,
    target: string,
  ): RawBuilder<unknown> {
    const bump = this.columns.distinctIdHasVersion
      ? sql`, version = COALESCE(d.version, 0) + 1`
      : sql``;
    return sql`WITH target AS (
        SELECT t.id FROM ${this.writeTable(phase)} AS t
        WHERE t.team_id = ${teamId} AND t.id = ${target}::bigint FOR KEY SHARE
      ), moved AS (
        UPDATE ${this.tables.distinctIds} AS d SET person_id = target.id ${bump}
        FROM target WHERE d.team_id = ${teamId} AND d.person_id = ${source}::bigint
        RETURNING d.distinct_id
      )
      SELECT (SELECT count(*)::int FROM target) AS targets,
        COALESCE((SELECT array_agg(distinct_id ORDER BY distinct_id) FROM moved), '{}') AS moved`;
  }
}

/**
 * Rule 1's fences, delete side, riding in the statement that deletes the old row (no extra
 * round trip):
 * - the delete fence: a data-modifying CTE on the fence table that touches no row still takes
 *   the table `ROW EXCLUSIVE` when the statement starts (before its snapshot), held until the
 *   transaction ends; it never waits for another delete, only for a plan or a split being
 *   written;
 * - the range fence: `FOR KEY SHARE` of the range that still has the key to copy, if any. It
 *   runs first, as a one-time filter of the DELETE (an uncorrelated subquery), before any old
 *   row is touched. When a batch of that range holds it, the delete waits for the batch, then
 *   re-reads the row: a checkpoint now past the key needs no lock (the copy committed, and the
 *   later statement that deletes the new row sees it).
 * Both are taken before the later statement that deletes the new row.
 */
function withDeleteFences(
  tables: MigrationTables,
  teamId: number,
  personId: string,
  deleteOld: RawBuilder<unknown>,
) {
  const key = sql`(${teamId}::int8, ${personId}::int8)`;
  return sql`WITH delete_fence AS (DELETE FROM ${tables.deleteFence} WHERE false),
    range_fence AS (
      SELECT 1 FROM ${tables.backfillRange} AS r
      WHERE r.migration = ${tables.migration} AND r.status <> 'done'
        AND (r.end_team, r.end_id) >= ${key}
        AND (COALESCE(r.cursor_team, r.start_team) IS NULL
          OR (COALESCE(r.cursor_team, r.start_team), COALESCE(r.cursor_id, r.start_id)) < ${key})
      FOR KEY SHARE OF r
    )
    ${deleteOld} AND (SELECT count(*) FROM range_fence) >= 0`;
}

/**
 * Runs a delete statement. A table it names that does not exist is most likely a control table
 * of a newer version (the delete fence came with control migration 4): say to run install().
 */
async function executeFenced(statement: RawBuilder<unknown>, trx: AnyDb, controlSchema: string) {
  try {
    return await statement.execute(trx);
  } catch (error) {
    if (!isMissingObject(error)) throw error;
    throw controlSchemaNotInstalled(
      controlSchema,
      'retry the delete (or run migration.prepare() to check the persons tables)',
      error,
    );
  }
}

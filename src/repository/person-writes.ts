import { type RawBuilder, sql } from 'kysely';
import { controlSchemaNotInstalled, isMissingObject } from '../control/control-schema-missing.js';
import type { AnyDb } from '../db/any-db.js';
import { tagged } from '../db/statement-tag.js';
import type { Phase } from '../model/phase.js';
import type { NewPerson, PersonChange } from '../options/person-input.js';
import { keyValue } from '../persons/key-range.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import { type MigrationTables, singleTableOf } from '../persons/tables.js';

/**
 * SQL of the repository's writes. Every method runs inside a transaction that has already
 * taken the phase fence (rule `phase-fence`), so `phase` is the phase every reader sees. The
 * protocol that keeps deleted persons deleted is in docs/correctness.md; the rules enforced
 * here are `copy-never-overwrites` and `copy-excludes-delete` (copy-on-write),
 * `range-fence` and `delete-fence` (the delete's side, in {@link withDeleteFences}),
 * `delete-order` ({@link PersonWrites.deletePerson}) and `distinct-id-lock`.
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

  /** The table writes go to in `phase` (`dual_read` writes the new table). */
  writeTable(phase: Phase): RawBuilder<unknown> {
    return phase === 'dual_read' ? this.tables.new : singleTableOf(this.tables, phase);
  }

  /**
   * Copy-on-write (`dual_read` only): copies the old rows of `keys` (a subquery yielding
   * `team_id`, `person_id`) that the new table lacks, reading them `FOR SHARE` (rule
   * `copy-excludes-delete`). Versions carry over unchanged, so later updates continue from the
   * old row's version.
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

  /**
   * `UPDATE ... SET ..., version = version + 1`, optionally only at `expectedVersion`. `change`
   * is checked (checkPersonUpdate): its JSON is text and `unsetProperties` an array of strings.
   */
  updatePerson(
    phase: Phase,
    teamId: number,
    personId: string,
    change: PersonChange,
    expectedVersion?: number,
  ): RawBuilder<unknown> {
    const sets: RawBuilder<unknown>[] = [];
    if (change.properties !== undefined || change.unsetProperties !== undefined) {
      sets.push(sql`properties = (COALESCE(properties, '{}'::jsonb)
        || ${change.properties ?? '{}'}::jsonb) - ${change.unsetProperties ?? []}::text[]`);
    }
    if (
      change.propertiesLastUpdatedAt !== undefined &&
      this.columns.has.has('properties_last_updated_at')
    ) {
      sets.push(sql`properties_last_updated_at = COALESCE(properties_last_updated_at, '{}'::jsonb)
        || ${change.propertiesLastUpdatedAt}::jsonb`);
    }
    if (
      change.propertiesLastOperation !== undefined &&
      this.columns.has.has('properties_last_operation')
    ) {
      sets.push(sql`properties_last_operation = COALESCE(properties_last_operation, '{}'::jsonb)
        || ${change.propertiesLastOperation}::jsonb`);
    }
    if (change.isIdentified !== undefined && this.columns.has.has('is_identified')) {
      sets.push(sql`is_identified = ${change.isIdentified}`);
    }
    sets.push(sql`version = COALESCE(version, 0) + 1`);
    const versionCheck =
      expectedVersion === undefined ? sql`` : sql`AND COALESCE(version, 0) = ${expectedVersion}`;
    return sql`UPDATE ${this.writeTable(phase)} SET ${sql.join(sets)}
      WHERE team_id = ${teamId} AND id = ${personId}::bigint ${versionCheck}
      RETURNING ${columnList(this.columns.all)}`;
  }

  /**
   * Deletes a person and its distinct ids (rules `delete-order` and `distinct-id-lock`): three
   * statements in this order, each with a fresh snapshot (in `dual_read` the first one also
   * takes the delete fence and the range fence, see `withDeleteFences`). Returns whether a
   * person row was deleted.
   */
  async deletePerson(trx: AnyDb, phase: Phase, teamId: number, personId: string): Promise<boolean> {
    const deleteFrom = (table: RawBuilder<unknown>) =>
      sql`DELETE FROM ${table} WHERE team_id = ${teamId} AND id = ${personId}::bigint`;
    // Which statements say whether the person was there: in `new` the old row is removed
    // only so a rollback to dual_read cannot bring the person back (rule `rollback-keeps-deletes`).
    const statements: { statement: RawBuilder<unknown>; counts: boolean }[] =
      phase === 'dual_read'
        ? [
            {
              statement: tagged(
                'delete-old-row',
                withDeleteFences(this.tables, teamId, personId, deleteFrom(this.tables.old)),
              ),
              counts: true,
            },
            { statement: tagged('delete-new-row', deleteFrom(this.tables.new)), counts: true },
          ]
        : phase === 'new'
          ? [
              { statement: tagged('delete-old-row', deleteFrom(this.tables.old)), counts: false },
              { statement: tagged('delete-new-row', deleteFrom(this.tables.new)), counts: true },
            ]
          : [{ statement: tagged('delete-old-row', deleteFrom(this.tables.old)), counts: true }];
    let deleted = false;
    for (const { statement, counts } of statements) {
      const result = await executeFenced(statement, trx, this.tables.controlSchema);
      if (counts && (result.numAffectedRows ?? 0n) > 0n) deleted = true;
    }
    await sql`DELETE FROM ${this.tables.distinctIds}
      WHERE team_id = ${teamId} AND person_id = ${personId}::bigint`.execute(trx);
    return deleted;
  }

  /** Adds a distinct id to a person held `FOR KEY SHARE` (rule `distinct-id-lock`). */
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

  /**
   * Points every distinct id of `source` at `target`, holding `target` `FOR KEY SHARE` (rule
   * `distinct-id-lock`).
   */
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
 * The delete's side of rules `delete-fence` and `range-fence`, riding in the statement that
 * deletes the old row (no extra round trip):
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
  const key = keyValue({ team: String(teamId), id: personId });
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

/**
 * Column values of a new person as SQL fragments: only what the input gives and the table
 * has. `person` is checked (checkNewPerson): its JSON is text. @internal
 *
 * @example
 * ```ts
 * const values = personValues(checkNewPerson({ teamId: 1, distinctIds: ['a'] }), columns);
 * ```
 */
export function personValues(
  person: NewPerson,
  columns: PersonColumns,
): Record<string, RawBuilder<unknown>> {
  const values: Record<string, RawBuilder<unknown>> = {
    team_id: sql`${person.teamId}`,
    uuid: person.uuid === undefined ? sql`gen_random_uuid()` : sql`${person.uuid}::uuid`,
    properties: sql`${person.properties}::jsonb`,
    version: sql`${person.version}::int8`,
  };
  const optional: [string, unknown, (v: unknown) => RawBuilder<unknown>][] = [
    ['properties_last_updated_at', person.propertiesLastUpdatedAt, (v) => sql`${v}::jsonb`],
    ['properties_last_operation', person.propertiesLastOperation, (v) => sql`${v}::jsonb`],
    ['created_at', person.createdAt, (v) => sql`${v}::timestamptz`],
    ['is_identified', person.isIdentified, (v) => sql`${v}::boolean`],
    ['is_user_id', person.isUserId, (v) => sql`${v}`],
  ];
  for (const [column, value, toSql] of optional) {
    if (value !== undefined && columns.has.has(column)) values[column] = toSql(value);
  }
  return values;
}

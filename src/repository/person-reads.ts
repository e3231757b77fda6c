import { type RawBuilder, sql } from 'kysely';
import { preparedStatementMarker } from '../db/prepared-statements.js';
import { tagged } from '../db/statement-tag.js';
import type { Phase } from '../model/phase.js';
import { columnList, type PersonColumns } from '../persons/person-columns.js';
import { type MigrationTables, singleTableOf } from '../persons/tables.js';

/** Name of the column that tells a `dual_read` row came from the old table. @internal */
export const fromOldColumn = 'pg_dual_read_from_old';

/** The column of {@link PersonReads.withEpoch} that carries the control row's epoch. @internal */
export const epochColumn = 'pg_dual_read_epoch';

/** The column of {@link PersonReads.withEpoch} that is true on a row of the read itself. @internal */
export const foundColumn = 'pg_dual_read_found';

/**
 * SQL of the repository's reads, one statement each, per phase (rule `merged-read` in
 * docs/correctness.md: in `dual_read` precedence is by existence in the new table, one
 * statement, nothing counted twice).
 *
 * In `dual_read` every read that returns persons also returns the boolean column
 * {@link fromOldColumn}: true for a row that came from the old table (the fallback the
 * repository counts). It is computed from what the statement already has (`n.id IS NULL`, or
 * a constant per UNION branch), so the plan does not change; the repository strips it.
 * @internal
 */
export class PersonReads {
  constructor(
    private readonly tables: MigrationTables,
    private readonly columns: PersonColumns,
  ) {}

  /**
   * Persons for a set of keys. `keys` is a subquery with columns `team_id`, `person_id`
   * and any `extra` columns, which are returned alongside the person columns.
   */
  byKeys(
    phase: Phase,
    keys: RawBuilder<unknown>,
    extra: readonly string[] = [],
  ): RawBuilder<unknown> {
    const extraColumns = extra.map((c) => sql`k.${sql.id(c)}`);
    if (phase !== 'dual_read') {
      const table = singleTableOf(this.tables, phase);
      return sql`SELECT ${sql.join([...extraColumns, columnList(this.columns.all, 't')])}
        FROM (${keys}) AS k
        JOIN ${table} AS t ON t.team_id = k.team_id AND t.id = k.person_id`;
    }
    const picked = this.columns.all.map(
      (c) =>
        sql`CASE WHEN n.id IS NOT NULL THEN n.${sql.id(c)} ELSE o.${sql.id(c)} END AS ${sql.id(c)}`,
    );
    const fromOld = sql`n.id IS NULL AS ${sql.id(fromOldColumn)}`;
    return sql`SELECT ${sql.join([...extraColumns, ...picked, fromOld])}
      FROM (${keys}) AS k
      LEFT JOIN ${this.tables.new} AS n ON n.team_id = k.team_id AND n.id = k.person_id
      LEFT JOIN LATERAL (
        SELECT * FROM ${this.tables.old} AS o0
        WHERE o0.team_id = k.team_id AND o0.id = k.person_id AND n.id IS NULL
        -- OFFSET 0 keeps the subquery from being flattened into the join: then n.id IS NULL
        -- is a one-time filter checked BEFORE the old-table probe, which is skipped for keys
        -- the new table has (measured: about half the old-table index probes mid-migration).
        OFFSET 0
      ) AS o ON true
      WHERE n.id IS NOT NULL OR o.id IS NOT NULL`;
  }

  /** Keys of one distinct id. */
  distinctIdKey(teamId: number, distinctId: string): RawBuilder<unknown> {
    return sql`SELECT d.team_id, d.person_id FROM ${this.tables.distinctIds} AS d
      WHERE d.team_id = ${teamId} AND d.distinct_id = ${distinctId}`;
  }

  /** Keys of many distinct ids, with the distinct id as an extra column. */
  distinctIdKeys(teamIds: number[], distinctIds: string[]): RawBuilder<unknown> {
    return sql`SELECT d.team_id, d.person_id, d.distinct_id
      FROM unnest(${teamIds}::bigint[], ${distinctIds}::text[]) AS q(team_id, distinct_id)
      JOIN ${this.tables.distinctIds} AS d
        ON d.team_id = q.team_id AND d.distinct_id = q.distinct_id`;
  }

  /** Keys of many person ids (duplicates collapse to one row). */
  personIdKeys(teamIds: number[], personIds: string[]): RawBuilder<unknown> {
    return sql`SELECT DISTINCT q.team_id, q.person_id
      FROM unnest(${teamIds}::bigint[], ${personIds}::bigint[]) AS q(team_id, person_id)`;
  }

  /**
   * Rows of one team matching `condition` (on alias `t`), from the tables the phase reads.
   * `markOrigin` adds {@link fromOldColumn} in `dual_read` (a constant in each UNION branch).
   */
  private teamRows(
    phase: Phase,
    teamId: number,
    condition: RawBuilder<unknown>,
    select: RawBuilder<unknown>,
    tail: RawBuilder<unknown> = sql``,
    markOrigin = false,
  ) {
    if (phase !== 'dual_read') {
      const table = singleTableOf(this.tables, phase);
      return sql`(SELECT ${select} FROM ${table} AS t WHERE t.team_id = ${teamId} AND ${condition} ${tail})`;
    }
    const origin = (fromOld: boolean) =>
      markOrigin ? sql`, ${sql.lit(fromOld)} AS ${sql.id(fromOldColumn)}` : sql``;
    return sql`(SELECT ${select}${origin(false)} FROM ${this.tables.new} AS t WHERE t.team_id = ${teamId} AND ${condition} ${tail})
      UNION ALL
      (SELECT ${select}${origin(true)} FROM ${this.tables.old} AS t WHERE t.team_id = ${teamId} AND ${condition}
        AND NOT EXISTS (SELECT 1 FROM ${this.tables.new} AS n WHERE n.team_id = t.team_id AND n.id = t.id)
        ${tail})`;
  }

  byUuid(phase: Phase, teamId: number, uuid: string): RawBuilder<unknown> {
    return this.teamRows(
      phase,
      teamId,
      sql`t.uuid = ${uuid}::uuid`,
      columnList(this.columns.all, 't'),
      sql``,
      true,
    );
  }

  count(phase: Phase, teamId: number): RawBuilder<unknown> {
    return sql`SELECT count(*)::int8 AS count FROM (${this.teamRows(phase, teamId, sql`true`, sql`t.id`)}) AS u`;
  }

  /** A keyset page by id; each branch is limited before the union so the plan stays an index range. */
  page(
    phase: Phase,
    teamId: number,
    after: string | undefined,
    limit: number,
  ): RawBuilder<unknown> {
    const condition = after === undefined ? sql`true` : sql`t.id > ${after}::bigint`;
    const tail = sql`ORDER BY t.id LIMIT ${limit}`;
    const rows = this.teamRows(
      phase,
      teamId,
      condition,
      columnList(this.columns.all, 't'),
      tail,
      true,
    );
    return sql`SELECT * FROM (${rows}) AS u ORDER BY u.id LIMIT ${limit}`;
  }

  /**
   * A shadow read: the persons of these `(team_id, id)` keys from the NEW table alone, with
   * the same columns as a merged read, whatever the phase. Tagged `shadow-read`.
   */
  newTableByPersonKeys(teamIds: number[], personIds: string[]): RawBuilder<unknown> {
    return tagged('shadow-read', this.byKeys('new', this.personIdKeys(teamIds, personIds)));
  }

  /**
   * `read` with the control row's epoch, in one statement and so one snapshot (rule
   * `epoch-read`): one row per row of `read` with {@link epochColumn} and {@link foundColumn}
   * (true) added, or a single row with the epoch alone when `read` returns nothing. A
   * prepared statement: its text is one of a small fixed set per repository.
   */
  withEpoch(read: RawBuilder<unknown>): RawBuilder<Record<string, unknown>> {
    return sql`${sql.raw(preparedStatementMarker)}SELECT c.epoch::text AS ${sql.id(epochColumn)}, r.*
      FROM (SELECT epoch FROM ${this.tables.control} WHERE name = ${this.tables.migration}) AS c
      LEFT JOIN (SELECT true AS ${sql.id(foundColumn)}, x.* FROM (${read}) AS x OFFSET 0) AS r
        ON true`;
  }

  /**
   * The distinct ids of these persons, in `(team_id, person_id, distinct_id)` order. The
   * distinct-ids table is not moved: the same statement serves every phase.
   */
  distinctIdsOfPersons(teamIds: number[], personIds: string[]): RawBuilder<unknown> {
    return sql`SELECT d.team_id, d.person_id::text AS person_id, d.distinct_id
      FROM ${this.tables.distinctIds} AS d
      JOIN (SELECT DISTINCT * FROM unnest(${teamIds}::bigint[], ${personIds}::bigint[])
        AS q(team_id, person_id)) AS q
        ON d.team_id = q.team_id AND d.person_id = q.person_id
      ORDER BY d.team_id, d.person_id, d.distinct_id`;
  }
}

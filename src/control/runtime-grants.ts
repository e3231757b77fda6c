import type { AnyDb } from '../db/any-db.js';
import { sequencesOfTables } from '../db/id-sequence.js';
import { quoteIdent } from '../db/identifiers.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';

/**
 * The `GRANT` statements that let `role` run a migration's runtime work (services through the
 * repository, backfill workers, verify) and nothing more: it reads and writes the persons
 * tables and the workers' own state (ranges, worker rates, verification runs), takes the phase
 * fence through `phase_fence()`, and can neither change the phase (no `UPDATE` on the control
 * row), nor pause, re-rate or reset the backfill (no `UPDATE` of `paused` or
 * `max_rows_per_second`, no `DELETE` of the plan), nor run DDL. Every identifier is quoted.
 * The migration role (install, prepare, phase changes, the backfill's operator calls) is the
 * owner of the control schema and the new table. @internal (use `migration.runtimeGrants()`)
 *
 * @example
 * ```ts
 * for (const statement of await runtimeGrants(db, options, 'persons_service')) console.log(`${statement};`);
 * ```
 */
export async function runtimeGrants(
  db: AnyDb,
  options: ResolvedMigrationOptions,
  role: string,
  { finalized }: { readonly finalized: boolean } = { finalized: false },
): Promise<string[]> {
  const { schema, controlSchema } = options;
  const to = `TO ${quoteIdent(role)}`;
  const data = (table: string) => `${quoteIdent(schema)}.${quoteIdent(table)}`;
  const control = (name: string) => `${quoteIdent(controlSchema)}.${quoteIdent(name)}`;
  const personsTables = finalized
    ? [options.oldTable, options.distinctIdsTable]
    : [options.oldTable, options.newTable, options.distinctIdsTable];
  const sequences = await sequencesOfTables(db, schema, personsTables);
  return [
    `GRANT USAGE ON SCHEMA ${quoteIdent(schema)}, ${quoteIdent(controlSchema)} ${to}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE ${personsTables.map(data).join(', ')} ${to}`,
    ...(sequences.length > 0
      ? [`GRANT USAGE, SELECT ON SEQUENCE ${sequences.join(', ')} ${to}`]
      : []),
    // The control row: read (every read carries its epoch), locked only through phase_fence().
    `GRANT SELECT ON TABLE ${['schema_version', 'migration', 'phase_change', 'stray_write'].map(control).join(', ')} ${to}`,
    `GRANT EXECUTE ON FUNCTION ${control('phase_fence')}(text, integer) ${to}`,
    // Deletes take the delete fence ROW EXCLUSIVE (DELETE ... WHERE false), planning SHARE.
    `GRANT DELETE ON TABLE ${control('delete_fence')} ${to}`,
    // The plan: workers create it and mark it done; pause, rate and reset are the operator's.
    `GRANT SELECT, INSERT (migration, range_count, planned_ranges, rows_estimated, ` +
      `max_rows_per_second, status, finished_at), UPDATE (status, finished_at, range_count) ` +
      `ON TABLE ${control('backfill')} ${to}`,
    // Ranges and worker rates are the workers' own state (deletes lock ranges FOR KEY SHARE).
    `GRANT SELECT, INSERT, UPDATE ON TABLE ${control('backfill_range')} ${to}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE ${control('backfill_worker')} ${to}`,
    `GRANT SELECT, INSERT, UPDATE ON TABLE ${control('verification')} ${to}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE ${control('verification_mismatch')} ${to}`,
    `GRANT USAGE ON SEQUENCE ${control('verification_id_seq')} ${to}`,
    // Each instance's own row of the client registry (its heartbeat).
    `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE ${control('client')} ${to}`,
  ];
}

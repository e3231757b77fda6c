import { sql } from 'kysely';
import type { AnyDb } from '../db/any-db.js';
import { idSequenceOf } from '../db/id-sequence.js';
import { readDependents } from '../db/table-dependents.js';
import { readTableShape } from '../db/table-shape.js';
import type { UnmetGuard } from '../errors.js';
import type { ResolvedMigrationOptions } from '../options/migration-options.js';
import { strayTriggerPrefix } from '../phases/stray-writes.js';

/**
 * What `finalize()` must know before it renames anything: the sequence it moves to the
 * consolidated table, and every guard that is not met. Objects that reference the old table by
 * OID would follow it to its retired name: views and materialized views, foreign keys of other
 * tables, triggers (other than the library's own), rules and publications; each is a guard
 * that `force` waives (named in the phase history). An identity column's sequence cannot change
 * owner: that one cannot be forced. @internal
 *
 * @example
 * ```ts
 * const { sequence, unmet } = await finalizeGuards(db, options);
 * ```
 */
export async function finalizeGuards(
  db: AnyDb,
  options: ResolvedMigrationOptions,
): Promise<{ sequence: string | undefined; unmet: UnmetGuard[] }> {
  const { schema, oldTable, newTable } = options;
  const shape = await readTableShape(db, schema, oldTable);
  const sequence = await idSequenceOf(db, schema, oldTable, 'id');
  const unmet: UnmetGuard[] = [];
  if (!shape) return { sequence, unmet };
  const dependents = await readDependents(db, shape.oid);
  const follow = (guard: string, what: string, fix: string) =>
    unmet.push({
      guard,
      message: `${what} references ${schema}.${oldTable} and would follow it to its retired name.`,
      fix,
      overridable: true,
    });
  for (const view of dependents.views) {
    follow(
      `view:${view.name}`,
      `${view.materialized ? 'materialized view' : 'view'} ${view.name}`,
      `recreate it on ${schema}.${newTable} (CREATE OR REPLACE VIEW) before finalize(), or drop it.`,
    );
  }
  for (const fk of dependents.referencingForeignKeys) {
    follow(
      `foreign_key:${fk.name}`,
      `foreign key ${fk.name} of ${fk.table}`,
      `add the same foreign key to ${schema}.${newTable} (NOT VALID, then VALIDATE CONSTRAINT) and drop this one.`,
    );
  }
  for (const trigger of dependents.triggers.filter((t) => !t.name.startsWith(strayTriggerPrefix))) {
    follow(
      `trigger:${trigger.name}`,
      `trigger ${trigger.name}`,
      `create it on ${schema}.${newTable} if the consolidated table needs it, then drop it from ${oldTable}.`,
    );
  }
  for (const rule of dependents.rules) {
    follow(
      `rule:${rule.name}`,
      `rule ${rule.name}`,
      `recreate it on ${schema}.${newTable}, then drop it.`,
    );
  }
  for (const publication of dependents.publications) {
    follow(
      `publication:${publication}`,
      `publication ${publication}`,
      `ALTER PUBLICATION ${publication} ADD TABLE ${schema}.${newTable} (its consumers then get the consolidated table's changes).`,
    );
  }
  if (sequence && (await isIdentity(db, shape.oid))) {
    unmet.push({
      guard: 'identity_sequence',
      message: `${schema}.${oldTable}.id is an identity column: its sequence ${sequence} cannot change owner, and dropping the retired table would drop it.`,
      fix: 'convert the column to a plain default on a sequence of its own (ALTER TABLE ... ALTER COLUMN id DROP IDENTITY, after creating a sequence at the same value), then finalize().',
      overridable: false,
    });
  }
  return { sequence, unmet };
}

async function isIdentity(db: AnyDb, oid: number): Promise<boolean> {
  const { rows } = await sql<{ identity: string }>`
    SELECT attidentity::text AS identity FROM pg_attribute
    WHERE attrelid = ${oid}::oid AND attname = 'id'`.execute(db);
  return (rows[0]?.identity ?? '') !== '';
}

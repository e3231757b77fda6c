import type { RawBuilder } from 'kysely';
import { migration000001 } from './sql/000001-phases.js';
import { migration000002 } from './sql/000002-backfill.js';
import { migration000003 } from './sql/000003-verification.js';
import { migration000004 } from './sql/000004-delete-fence.js';
import { migration000005 } from './sql/000005-range-fences.js';
import { migration000006 } from './sql/000006-bounded-fence.js';
import { migration000007 } from './sql/000007-cutover.js';
import { migration000008 } from './sql/000008-clients.js';

/** One append-only step of the library's own control schema. @internal */
export interface ControlMigration {
  readonly version: number;
  readonly name: string;
  readonly statements: (controlSchema: string) => RawBuilder<unknown>[];
}

/** Every control migration this version of the library knows, in order. @internal */
export const controlMigrations: readonly ControlMigration[] = [
  { version: 1, name: 'phases', statements: migration000001 },
  { version: 2, name: 'backfill', statements: migration000002 },
  { version: 3, name: 'verification', statements: migration000003 },
  { version: 4, name: 'delete fence', statements: migration000004 },
  { version: 5, name: 'range fences', statements: migration000005 },
  { version: 6, name: 'bounded fence', statements: migration000006 },
  { version: 7, name: 'cutover', statements: migration000007 },
  { version: 8, name: 'clients', statements: migration000008 },
];

/** The newest control schema version this code understands. @internal */
export const latestControlVersion = controlMigrations.at(-1)?.version ?? 0;

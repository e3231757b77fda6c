/**
 * Issue 14: the lifecycle from the command line on a real server: `cutover` refused with every
 * unmet guard on stderr (exit 1), then done; `status` shows the guards, the history and the
 * retired table; `rollback`, `finalize`, `drop-retired` (exit 2 without --confirm, 1 with a
 * wrong name).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/index.js';
import { runCliInProcess } from '../support/cli.js';
import {
  describeOnRealServer,
  dropSchemas,
  openDatabaseForTest,
  realServerUrl,
  uniqueSchemaName,
} from '../support/test-database.js';

const cli = (argv: string[]) => runCliInProcess(argv, realServerUrl() ?? '');

describeOnRealServer('the lifecycle commands (real server)', () => {
  const schema = uniqueSchemaName('cli_cutover');
  const controlSchema = `${schema}_ctl`;
  const tables = ['--schema', schema, '--control-schema', controlSchema];
  let handle: DatabaseHandle;

  beforeAll(async () => {
    handle = await openDatabaseForTest(2);
    await createPostHogPersonsSchema(handle, { schema });
    await seedPersons(handle, { schema, teamId: 1, count: 30 });
  });
  afterAll(async () => {
    await dropSchemas(handle, schema, controlSchema);
    await handle.close();
  });

  it('cutover, rollback, cutover, finalize and drop-retired, with every refusal explained', async () => {
    for (const command of ['install', 'prepare', 'start-dual-read']) {
      expect((await cli([command, ...tables])).code).toBe(0);
    }
    const refused = await cli(['cutover', ...tables]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('TRANSITION_REFUSED');
    expect(refused.stderr).toContain('[backfill_unfinished]');
    expect(refused.stderr).toContain('[verification_missing]');
    expect((await cli(['status', ...tables])).stdout).toContain(
      'cutover       blocked: [backfill_unfinished]',
    );
    expect((await cli(['backfill', ...tables])).code).toBe(0);
    expect((await cli(['verify', ...tables])).code).toBe(0);
    expect((await cli(['status', ...tables])).stdout).toContain('cutover       ready');
    const cut = await cli(['cutover', '--actor', 'ops:cli', ...tables]);
    expect(cut.code).toBe(0);
    expect(cut.stdout).toContain('dual_read -> new');
    expect((await cli(['rollback', '--actor', 'ops:cli', ...tables])).code).toBe(0);
    expect((await cli(['cutover', ...tables])).code).toBe(0);
    expect((await cli(['finalize', '--force', '--waive-index', 'x', ...tables])).code).toBe(2);
    const finalized = await cli(['finalize', '--actor', 'ops:cli', ...tables]);
    expect(finalized.code).toBe(0);
    expect(finalized.stdout).toContain(`kept as ${schema}.posthog_person_retired`);
    const status = (await cli(['status', ...tables])).stdout;
    expect(status).toContain(`retired table ${schema}.posthog_person_retired`);
    expect(status).toMatch(/history .* new -> finalized \(epoch \d+\) by ops:cli/);
    expect(status).toMatch(/history .* new -> dual_read \(epoch \d+\) by ops:cli/);
    expect((await cli(['drop-retired', ...tables])).code).toBe(2);
    expect((await cli(['drop-retired', '--confirm', 'posthog_person', ...tables])).code).toBe(1);
    const dropped = await cli(['drop-retired', '--confirm', 'posthog_person_retired', ...tables]);
    expect(dropped.code).toBe(0);
    expect(dropped.stdout).toContain(`dropped ${schema}.posthog_person_retired`);
  }, 60_000);
});

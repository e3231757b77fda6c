/**
 * The CLI's help text and the error for a wrong command line.
 * @internal
 */

/**
 * The command line is wrong (unknown command or option, a missing or malformed value). The
 * CLI prints its message and the usage, and exits with status 2. Not a `DualReadError`: it
 * never leaves the CLI.
 *
 * @example
 * ```ts
 * throw new UsageError('--json only applies to the status command');
 * ```
 * @internal
 */
export class UsageError extends Error {
  readonly code = 'USAGE' as const;
  /**
   * @param showUsage print the whole usage after the message (no or unknown command), rather
   *   than a pointer to `pg-dual-read help`.
   */
  constructor(
    message: string,
    readonly showUsage = false,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * What `pg-dual-read help` prints.
 * @internal
 */
export const usage = `Usage: pg-dual-read <command> [options]

Move a live Postgres persons table to a new table with no downtime.

Commands:
  install                 create or upgrade the control schema (idempotent)
  prepare                 check the tables, create the new table, register the
                          migration in phase old; changes nothing when a check fails
    --partitions N        hash-partition the new table by team_id (2 to 1024)
  start-dual-read         old -> dual_read: reads merge both tables, writes go to new
  backfill                copy the old rows the new table lacks (phase dual_read);
                          resumable, and processes on other hosts can join it.
                          Prints progress every 2 s. The first Ctrl-C (SIGINT) or
                          SIGTERM stops it after the current batch, exit 130 or 143:
                          run backfill again to resume. A second Ctrl-C quits at once
                          (the batch in flight rolls back; still resumable)
    --workers N           ranges this process copies at once (1 to 64, default 2)
    --batch-size N        rows of the first batch, then adapted (default 1000)
    --max-batch-size N    largest adapted batch (default 20000)
    --target-batch-ms N   batch duration the size adapts to (0 to 60000, default 250)
    --max-rows-per-second N  ceiling shared by every worker of every process
    --ranges N            ranges of a new plan (default one per ~50000 rows, at least 16)
    --lease-ms N          a stopped worker's range is taken over after this
                          (200 to 3600000, default 30000)
    --max-replication-lag-ms N  wait while a replica lags more than this
    --worker-id ID        this process's name in status (default host:pid:random)
  backfill-pause          pause every worker of every process (within one batch)
  backfill-resume         resume a paused backfill
  backfill-rate N|none    change the rows-per-second ceiling of a planned backfill
  status                  show the phase, the tables and the backfill's progress;
                          lists each backfill range when there are at most 16,
                          else the running ones
    --json                as one JSON object (every range included)
  help                    show this text

Connection:
  --database-url URL      postgres://..., or pglite:///abs/dir, pglite://./rel/dir
                          (default: the DATABASE_URL environment variable; prefer it
                          for URLs with a password, as arguments show up in ps)

Migration (the same values as the services' createPersonsMigration() options):
  --name NAME             migration name (default persons)
  --schema NAME           schema of the persons tables (default public)
  --control-schema NAME   schema of pg-dual-read's control tables (default dual_read)
  --old-table NAME        default posthog_person
  --new-table NAME        default posthog_person_new
  --distinct-ids-table NAME  default posthog_persondistinctid

Exit status: 0 done, 1 the operation failed (error [CODE] on stderr), 2 wrong usage,
  130 / 143 backfill stopped by SIGINT / SIGTERM before the end (resumable).
Tracing: DEBUG=pg-dual-read:* pg-dual-read <command>
`;

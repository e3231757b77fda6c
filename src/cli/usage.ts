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
  status                  show the migration's phase, epoch and tables
    --json                as one JSON object
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

Exit status: 0 done, 1 the operation failed (error [CODE] on stderr), 2 wrong usage.
Tracing: DEBUG=pg-dual-read:* pg-dual-read <command>
`;

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
 * throw new UsageError('--repair only applies to the verify command');
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
    --dry-run             change nothing: print every finding and the DDL it would run
  start-dual-read         old -> dual_read: reads merge both tables, writes go to new
  backfill                copy the old rows the new table lacks (phase dual_read);
                          resumable, and processes on other hosts can join it.
                          On a terminal, a live display (bar, rows, rate, ETA,
                          workers, ranges, retries, phase, fleet fallback rate);
                          else progress every 2 s. The first Ctrl-C (SIGINT) or
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
    --lock-mode ranges|rows  how batches keep deletes away: a lock on the batch's
                          range (default; a delete waits for a batch in flight in
                          its own range) or FOR SHARE on each copied old row (slower,
                          twice the WAL; a delete waits only for a batch holding its row)
    --worker-id ID        this process's name in status (default host:pid:random)
    --json                newline-delimited JSON events: {"type":"progress",...}
                          every 2 s, then {"type":"done",...}
  backfill-pause          pause every worker of every process (within one batch)
  backfill-resume         resume a paused backfill
  backfill-rate N|none    change the rows-per-second ceiling of a planned backfill
  verify                  check that the new table agrees with the old one (phase
                          dual_read), in Postgres: prints a summary (clean or not,
                          rows, keys per class), then EVERY mismatched key, one per
                          line: class team_id person_id (never row values). On a
                          terminal, a live display of chunks done and mismatches.
                          Exit 0 clean, 1 mismatches remain. The run is stored:
                          status shows the latest. Ctrl-C stops it (stored as
                          aborted), exit 130
    --method join|checksum  one pass joining both tables (default), or chunk
                          checksums bisected down to the keys
    --columns a,b         content columns compared (default: all but key and version)
    --ranges 1,2          only these backfill ranges (default: every key; partial)
    --repair              copy the missing_in_new and older_in_new rows found, then
                          re-check them; repaired keys are listed with "repaired"
    --max-keys N          list the first N keys only (default: all; 0 to 1000000)
    --no-distinct-ids     skip the distinct-ids checks (orphan_distinct_id,
                          person_without_distinct_id)
    --json                newline-delimited JSON events: {"type":"progress",...} per
                          chunk (when several), then {"type":"done",...}: the result
                          and "keys" (every key: class, teamId, personId, repaired)
  status                  show the phase, the tables, the backfill's progress and
                          the latest verification (when, full or partial,
                          mismatches, newer than the backfill or not); lists each
                          backfill range when there are at most 16, else the
                          running ones
    --json                as one JSON object (every range included)
    --watch               redraw it until Ctrl-C (exit 0): a live display on a
                          terminal, a line per interval otherwise; with --json, a
                          {"type":"status",...} event per interval, then "done"
    --interval-ms N       --watch's interval (200 to 3600000, default 2000)
  cutover                 dual_read -> new: reads and writes use the new table only;
                          refused, listing every unmet guard, until the backfill is
                          done, a full clean verification is newer than it, nothing
                          else wrote the old table, and no index is missing
    --force               waive the guards that can be waived (recorded)
    --actor WHO           who asks, recorded in the phase history
    --waive-index a,b     old-table indexes the new table may lack
  rollback                new -> dual_read, keeping every write made in new
    --actor WHO
  finalize                new -> finalized: the new table takes the old table's name,
                          the old one is kept as <old>_retired; refused while views,
                          foreign keys, triggers, rules or publications use the old table
    --force               go ahead anyway (each one recorded)
    --actor WHO
    --lock-timeout-ms N   each attempt's wait for the tables (default 200)
    --timeout-ms N        give up after this, changing nothing (default 30000)
  drop-retired            drop the retired old table after finalize
    --confirm NAME        its name, as status shows it
  clients                 the live service instances: service, host, library version,
                          the epoch each applied, its reads and fallback rate
    --json                as JSON
  grants                  print the GRANTs of a least-privilege runtime role
                          (services, backfill workers, verify); changes nothing
    --role NAME           the role to grant to
  help                    show this text

Connection:
  --database-url URL      postgres://..., or pglite:///abs/dir, pglite://./rel/dir
                          (default: the DATABASE_URL environment variable; prefer it
                          for URLs with a password, as arguments show up in ps)
  --config FILE           a JSON file with the migration's tables ("migration") and
                          defaults for "backfill", "verify" and "lifecycle" (actor,
                          finalize's timeouts); flags override it. Never the URL:
                          "databaseUrlEnv" names the variable that holds it. A bad
                          file exits 2 naming the field, before connecting

Migration (the same values as the services' createPersonsMigration() options):
  --name NAME             migration name (default persons)
  --schema NAME           schema of the persons tables (default public)
  --control-schema NAME   schema of pg-dual-read's control tables (default dual_read)
  --old-table NAME        default posthog_person
  --new-table NAME        default posthog_person_new
  --distinct-ids-table NAME  default posthog_persondistinctid

Exit status: 0 done (verify: clean), 1 the operation failed (error [CODE] on stderr)
  or verify found mismatches (keys on stdout, nothing on stderr), 2 wrong usage,
  130 / 143 backfill (resumable) or verify stopped by SIGINT / SIGTERM before the end.
Tracing: DEBUG=pg-dual-read:* pg-dual-read <command>
`;

/**
 * Helpers for the concurrency suites (test/concurrency): several service instances of one
 * migration on a real PostgreSQL server, raw sessions that hold locks to force an
 * interleaving, and polling of pg_stat_activity / pg_locks to see who waits for whom
 * (instead of sleeping and hoping).
 */
import { sql } from 'kysely';
import pg from 'pg';
import type { DatabaseHandle } from '../../src/db/database-handle.js';
import { openDatabase } from '../../src/db/open-database.js';
import { type StatementTag, statementTagText } from '../../src/db/statement-tag.js';
import {
  createPersonsMigration,
  type PersonsMigration,
} from '../../src/migration/persons-migration.js';
import type { PersonsRepository } from '../../src/repository/persons-repository.js';
import { createPostHogPersonsSchema, seedPersons } from '../../src/testing/persons-fixture.js';
import { dropSchemas, openBackend, realServerUrl, uniqueSchemaName } from './test-database.js';

/** One service instance: its own pool, its own migration object (so its own phase cache). */
export interface ServiceInstance {
  readonly handle: DatabaseHandle;
  readonly migration: PersonsMigration;
  readonly repo: PersonsRepository;
}

export interface InstanceOptions {
  /** Pool size of the instance. Default 5. */
  readonly poolSize?: number;
  /**
   * When false the instance's handle has no `listen`, so NOTIFY cannot tell it about a phase
   * change: only the periodic refresh or the epoch carried by its statements can. Default true.
   */
  readonly listen?: boolean;
  readonly phaseRefreshIntervalMs?: number;
  readonly phaseChangeLockTimeoutMs?: number;
  readonly writeFenceTimeoutMs?: number;
  /** Reuse this handle instead of opening a pool (several migration objects on one pool). */
  readonly handle?: DatabaseHandle;
}

/** A raw session outside the library, to hold locks. */
export interface RawSession {
  readonly client: pg.Client;
  readonly pid: number;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(
    text: string,
    values?: unknown[],
  ): Promise<R[]>;
  end(): Promise<void>;
}

/** A person row as stored, straight from a table. */
export interface StoredPerson {
  id: string;
  team_id: number;
  uuid: string;
  version: string | null;
  properties: Record<string, unknown>;
}

function serverUrl(): string {
  const url = realServerUrl();
  if (!url) throw new Error('the concurrency suites need the real server');
  return url;
}

/** Opens a raw session (its own connection) and learns its backend pid. */
export async function openRawSession(): Promise<RawSession> {
  const client = new pg.Client({
    connectionString: serverUrl(),
    application_name: 'pg-dual-read-test-raw',
  });
  client.on('error', () => undefined);
  await client.connect();
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const pid = Number(rows[0]?.pid);
  return {
    client,
    pid,
    async query(text, values) {
      const result = await client.query(text, values);
      return result.rows;
    },
    async end() {
      await client.query('ROLLBACK').catch(() => undefined);
      await client.end().catch(() => undefined);
    },
  };
}

/**
 * One test environment: a data schema (PostHog-like persons tables) and a control schema,
 * both uniquely named, installed and prepared (phase `old`), plus any number of service
 * instances. {@link close} closes the instances and drops both schemas.
 */
export class MigrationEnv {
  readonly instances: ServiceInstance[] = [];
  private readonly ownedHandles: DatabaseHandle[] = [];

  private constructor(
    /** Pool for setup, raw checks and pg_stat_activity polling (never a service instance). */
    readonly admin: DatabaseHandle,
    readonly schema: string,
    readonly controlSchema: string,
    /** A migration object on the admin pool, for phase changes and status. */
    readonly control: PersonsMigration,
  ) {}

  static async create(
    prefix: string,
    options: { partitions?: number } = {},
  ): Promise<MigrationEnv> {
    const admin = await openBackend('postgres', 3);
    const schema = uniqueSchemaName(`cc_${prefix}`);
    const controlSchema = `${schema}_ctl`;
    const control = createPersonsMigration({ db: admin, schema, controlSchema });
    const env = new MigrationEnv(admin, schema, controlSchema, control);
    try {
      await createPostHogPersonsSchema(admin, { schema });
      await control.install();
      await control.prepare(
        options.partitions === undefined ? {} : { partitions: options.partitions },
      );
    } catch (error) {
      await env.close();
      throw error;
    }
    return env;
  }

  /** Opens a service instance: own pool (unless `handle` is given), own migration object. */
  async addInstance(options: InstanceOptions = {}): Promise<ServiceInstance> {
    let handle = options.handle;
    if (!handle) {
      const opened = await openDatabase(serverUrl(), { maxConnections: options.poolSize ?? 5 });
      this.ownedHandles.push(opened);
      handle = opened;
    }
    if (options.listen === false) {
      const inner = handle;
      handle = { db: inner.db, backend: inner.backend, close: () => inner.close() };
    }
    const migration = createPersonsMigration({
      db: handle,
      schema: this.schema,
      controlSchema: this.controlSchema,
      ...(options.phaseRefreshIntervalMs === undefined
        ? {}
        : { phaseRefreshIntervalMs: options.phaseRefreshIntervalMs }),
      ...(options.phaseChangeLockTimeoutMs === undefined
        ? {}
        : { phaseChangeLockTimeoutMs: options.phaseChangeLockTimeoutMs }),
      ...(options.writeFenceTimeoutMs === undefined
        ? {}
        : { writeFenceTimeoutMs: options.writeFenceTimeoutMs }),
    });
    const instance = { handle, migration, repo: migration.repository() };
    this.instances.push(instance);
    return instance;
  }

  /** Seeds `count` old-table persons of `teamId` with distinct ids `${prefix}-1..count`. */
  seed(teamId: number, count: number, prefix: string): Promise<string[]> {
    return seedPersons(this.admin, { schema: this.schema, teamId, count, prefix });
  }

  /** `"schema".posthog_person` etc., for raw sessions. */
  get oldTableText(): string {
    return `"${this.schema}".posthog_person`;
  }
  get newTableText(): string {
    return `"${this.schema}".posthog_person_new`;
  }
  get distinctIdsTableText(): string {
    return `"${this.schema}".posthog_persondistinctid`;
  }

  private table(which: 'old' | 'new' | 'distinctIds') {
    const name =
      which === 'old'
        ? 'posthog_person'
        : which === 'new'
          ? 'posthog_person_new'
          : 'posthog_persondistinctid';
    return sql.id(this.schema, name);
  }

  /** The rows of `ids` in the old or new table, read directly (no library code). */
  async storedPersons(
    which: 'old' | 'new',
    teamId: number,
    ids: readonly string[],
  ): Promise<StoredPerson[]> {
    const { rows } = await sql<StoredPerson>`
      SELECT id::text AS id, team_id, uuid::text AS uuid, version::text AS version, properties
      FROM ${this.table(which)}
      WHERE team_id = ${teamId} AND id = ANY(${ids}::bigint[]) ORDER BY id`.execute(this.admin.db);
    return rows;
  }

  /** Distinct ids pointing at `ids`. */
  async storedDistinctIds(
    teamId: number,
    ids: readonly string[],
  ): Promise<{ distinct_id: string; person_id: string }[]> {
    const { rows } = await sql<{ distinct_id: string; person_id: string }>`
      SELECT distinct_id, person_id::text AS person_id FROM ${this.table('distinctIds')}
      WHERE team_id = ${teamId} AND person_id = ANY(${ids}::bigint[]) ORDER BY distinct_id`.execute(
      this.admin.db,
    );
    return rows;
  }

  /** Distinct ids of `teamId` whose person is in neither table. */
  async orphanDistinctIds(teamId: number): Promise<{ distinct_id: string; person_id: string }[]> {
    const { rows } = await sql<{ distinct_id: string; person_id: string }>`
      SELECT d.distinct_id, d.person_id::text AS person_id FROM ${this.table('distinctIds')} AS d
      WHERE d.team_id = ${teamId}
        AND NOT EXISTS (SELECT 1 FROM ${this.table('old')} AS o WHERE o.team_id = d.team_id AND o.id = d.person_id)
        AND NOT EXISTS (SELECT 1 FROM ${this.table('new')} AS n WHERE n.team_id = d.team_id AND n.id = d.person_id)
      ORDER BY d.distinct_id`.execute(this.admin.db);
    return rows;
  }

  /**
   * A LIKE pattern on `pg_stat_activity.query` for this env's statement tagged `tag` (other
   * suites' statements, on the same server, name other schemas): statements are recognised by
   * their tag, never by their SQL text.
   */
  statementLike(tag: StatementTag): string {
    const inControlSchema: readonly StatementTag[] = [
      'backfill-batch',
      'backfill-range-fence',
      'delete-fence-lock',
      'phase-fence',
      'phase-change',
    ];
    const name = inControlSchema.includes(tag) ? this.controlSchema : this.schema;
    return `${statementTagText(tag)}%"${name}"%`;
  }

  /**
   * Sessions of this database waiting for a heavyweight lock (row locks show up as waits on
   * a transaction id or a tuple) whose current statement matches `like`, with the pids that
   * block them.
   */
  async lockWaiters(like: string): Promise<{ pid: number; blockers: number[]; query: string }[]> {
    const { rows } = await sql<{ pid: number; blockers: number[]; query: string }>`
      SELECT pid, pg_blocking_pids(pid) AS blockers, query FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE ${like}
        AND pid <> pg_backend_pid()`.execute(this.admin.db);
    return rows.map((r) => ({
      pid: Number(r.pid),
      blockers: r.blockers.map(Number),
      query: r.query,
    }));
  }

  /** Sessions whose wait is (at least partly) caused by backend `pid`. */
  async sessionsBlockedBy(pid: number): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND ${pid}::int = ANY(pg_blocking_pids(pid))`.execute(
      this.admin.db,
    );
    return Number(rows[0]?.n ?? 0);
  }

  /**
   * Waits until at least `count` sessions whose statement matches `like` wait for a lock, or
   * `giveUp()` is true (the awaited operation finished without waiting). Returns whether the
   * wait was seen.
   */
  async waitForLockWaiters(
    like: string,
    options: { count?: number; giveUp?: () => boolean; timeoutMs?: number } = {},
  ): Promise<boolean> {
    const count = options.count ?? 1;
    let seen = false;
    await waitUntil(
      async () => {
        seen = (await this.lockWaiters(like)).filter((w) => w.blockers.length > 0).length >= count;
        return seen || (options.giveUp?.() ?? false);
      },
      `${count} session(s) waiting for a lock in a statement like ${like}`,
      options.timeoutMs,
    );
    return seen;
  }

  /** Waits until at least `count` sessions are blocked by backend `pid` (or `giveUp()`). */
  async waitForBlockedBy(
    pid: number,
    options: { count?: number; giveUp?: () => boolean; timeoutMs?: number } = {},
  ): Promise<boolean> {
    const count = options.count ?? 1;
    let seen = false;
    await waitUntil(
      async () => {
        seen = (await this.sessionsBlockedBy(pid)) >= count;
        return seen || (options.giveUp?.() ?? false);
      },
      `${count} session(s) blocked by backend ${pid}`,
      options.timeoutMs,
    );
    return seen;
  }

  /** Closes every instance and pool, then drops the schemas. Safe to call twice. */
  async close(): Promise<void> {
    openAllGates();
    for (const instance of this.instances.splice(0))
      await instance.migration.close().catch(() => undefined);
    await this.control.close().catch(() => undefined);
    for (const handle of this.ownedHandles.splice(0)) await handle.close().catch(() => undefined);
    try {
      await dropSchemas(this.admin, this.schema, this.controlSchema);
    } finally {
      await this.admin.close();
    }
  }
}

/** Polls `check` every `intervalMs` until it is true; throws after `timeoutMs`. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

const closedGates = new Set<Gate>();

/**
 * A promise that a test opens by hand: how a transaction is paused at a chosen point. A gate
 * a failing test left closed is opened by {@link openAllGates} (and by `MigrationEnv.close`),
 * so the paused transaction ends and its pool can close.
 */
export class Gate {
  readonly promise: Promise<void>;
  private resolveFn: () => void = () => undefined;
  constructor() {
    this.promise = new Promise<void>((resolve) => {
      this.resolveFn = resolve;
    });
    closedGates.add(this);
  }
  open(): void {
    closedGates.delete(this);
    this.resolveFn();
  }
}

/** Opens every gate still closed (call from `afterEach`). */
export function openAllGates(): void {
  for (const gate of [...closedGates]) gate.open();
}

/** A promise whose settlement can be checked synchronously (and whose rejection is handled). */
export interface Tracked<T> {
  readonly promise: Promise<T>;
  readonly settled: boolean;
}

export function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked = { promise, settled: false };
  promise.then(
    () => {
      tracked.settled = true;
    },
    () => {
      tracked.settled = true;
    },
  );
  return tracked;
}

/** A small seeded PRNG (mulberry32), so a failing random interleaving names its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of a randomized test: `CONCURRENCY_SEED` when set, else a fresh one. */
export function testSeed(): number {
  const fromEnv = process.env.CONCURRENCY_SEED;
  return fromEnv ? Number(fromEnv) : Math.floor(Math.random() * 2 ** 31);
}

export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

export function pick<T>(items: readonly T[], random: () => number): T {
  const item = items[Math.floor(random() * items.length)];
  if (item === undefined) throw new Error('pick() from an empty list');
  return item;
}

/** `promise`, or a rejection when it has not settled after `ms`: a hang fails the test, not the run. */
export function settlesWithin<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms` (used only to spread random start times, never to wait for a state). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

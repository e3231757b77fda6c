/**
 * A throwaway primary with one streaming standby, for the one suite that needs a real
 * replication lag (`maxReplicationLagMs`). The shared server cannot give one: its pg_hba has no
 * `replication` line, and a standby of it would need a base backup of the whole cluster.
 *
 * Built from the PostgreSQL binaries of this machine (`initdb`, `pg_ctl`, `pg_basebackup`) in a
 * temporary directory, on free ports, trust authentication on 127.0.0.1 only; about a second
 * to start. Run as the `postgres` user when the tests run as root (initdb refuses root).
 * The standby reports every second (`wal_receiver_status_interval`), so the primary's
 * `pg_stat_replication` follows its replay closely.
 */
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { clusterWorkspace, freePort } from './postgres-binaries.js';

export { postgresBinDir } from './postgres-binaries.js';

/** A running primary and standby. `stop()` removes both and their files. */
export interface StandbyCluster {
  readonly primaryUrl: string;
  readonly standbyUrl: string;
  /** Stops replaying WAL on the standby (it keeps receiving it): the replay lag grows. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** The primary's view: the largest write/flush/replay lag in ms (null when none reported). */
  replicationLagMs(): Promise<number | null>;
  stop(): Promise<void>;
}

async function query<R extends pg.QueryResultRow>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text)).rows;
  } finally {
    await client.end();
  }
}

/** Starts a primary and a standby streaming from it. Throws when the binaries are missing. */
export async function startStandbyCluster(): Promise<StandbyCluster> {
  const { dir, tool } = await clusterWorkspace('pg-dual-read-standby-');
  const primaryDir = join(dir, 'primary');
  const standbyDir = join(dir, 'standby');
  const [primaryPort, standbyPort] = [await freePort(), await freePort()];
  const started: string[] = [];
  const stop = async () => {
    for (const data of started.reverse()) {
      await tool('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await tool('initdb', ['-D', primaryDir, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    await appendFile(
      join(primaryDir, 'postgresql.conf'),
      [
        `port = ${primaryPort}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        'wal_level = replica',
        'max_wal_senders = 4',
        'fsync = off',
        'shared_buffers = 32MB',
        '',
      ].join('\n'),
    );
    await tool('pg_ctl', ['-D', primaryDir, '-l', join(dir, 'primary.log'), '-w', 'start']);
    started.push(primaryDir);
    await tool('pg_basebackup', [
      '-h',
      '127.0.0.1',
      '-p',
      String(primaryPort),
      '-U',
      'postgres',
      '-D',
      standbyDir,
      '-R',
      '-X',
      'stream',
      '--no-sync',
    ]);
    const conf = join(standbyDir, 'postgresql.conf');
    const text = await readFile(conf, 'utf8');
    await writeFile(
      conf,
      `${text.replace(`port = ${primaryPort}`, `port = ${standbyPort}`)}\nwal_receiver_status_interval = 1\n`,
    );
    await tool('pg_ctl', ['-D', standbyDir, '-l', join(dir, 'standby.log'), '-w', 'start']);
    started.push(standbyDir);
  } catch (error) {
    await stop();
    throw error;
  }
  const primaryUrl = `postgres://postgres@127.0.0.1:${primaryPort}/postgres`;
  const standbyUrl = `postgres://postgres@127.0.0.1:${standbyPort}/postgres`;
  return {
    primaryUrl,
    standbyUrl,
    pauseReplay: async () => {
      await query(standbyUrl, 'SELECT pg_wal_replay_pause()');
    },
    resumeReplay: async () => {
      await query(standbyUrl, 'SELECT pg_wal_replay_resume()');
    },
    replicationLagMs: async () => {
      const rows = await query<{ lag_ms: number | null }>(
        primaryUrl,
        `SELECT (max(EXTRACT(EPOCH FROM GREATEST(write_lag, flush_lag, replay_lag))) * 1000)::float8
           AS lag_ms FROM pg_stat_replication`,
      );
      return rows[0]?.lag_ms ?? null;
    },
    stop,
  };
}

/**
 * A throwaway PostgreSQL server of our own, for what must never happen to the shared server:
 * restarts, crashes (`immediate` stops, as after a power cut: crash recovery on start), and
 * connections killed by the dozen. Built from this machine's binaries on a free port in a
 * temporary directory, trust authentication on 127.0.0.1 only, `fsync = off` (nothing here
 * must survive the OS); about a second to start.
 */
import { appendFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { clusterWorkspace, freePort } from './postgres-binaries.js';

/** A running throwaway server. `stop()` removes it and its files. */
export interface ThrowawayServer {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string;
  /**
   * Stops the server and starts it again on the same port. `immediate` kills every backend
   * without a checkpoint (the start then runs crash recovery); `fast` rolls back the open
   * transactions and checkpoints first.
   */
  restart(mode: 'fast' | 'immediate'): Promise<void>;
  stop(): Promise<void>;
}

/** Starts a server. Throws when this machine has no PostgreSQL server binaries. */
export async function startThrowawayServer(
  settings: readonly string[] = [],
): Promise<ThrowawayServer> {
  const { dir, tool } = await clusterWorkspace('pg-dual-read-server-');
  const data = join(dir, 'data');
  const port = await freePort();
  const logFile = join(dir, 'server.log');
  let running = false;
  const stop = async () => {
    if (running) {
      await tool('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    }
    running = false;
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await tool('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    await appendFile(
      join(data, 'postgresql.conf'),
      [
        `port = ${port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        'fsync = off',
        'max_connections = 200',
        ...settings,
        '',
      ].join('\n'),
    );
    await tool('pg_ctl', ['-D', data, '-l', logFile, '-w', 'start']);
    running = true;
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    restart: async (mode) => {
      await tool('pg_ctl', ['-D', data, '-m', mode, '-w', 'stop']);
      running = false;
      await tool('pg_ctl', ['-D', data, '-l', logFile, '-w', 'start']);
      running = true;
    },
    stop,
  };
}

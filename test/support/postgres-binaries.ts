/**
 * What the suites and the soak need to run throwaway PostgreSQL servers of their own from this
 * machine's binaries (`initdb`, `pg_ctl`, ...), never touching the shared server: where the
 * binaries are, a free port, a data directory owned by `postgres` when we run as root (initdb
 * and the server refuse root), and the tools run as that user.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The directory of this machine's PostgreSQL server binaries, newest major version first. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const version of versions) {
    const bin = join(root, version, 'bin');
    if (['initdb', 'pg_ctl', 'pg_basebackup'].every((tool) => existsSync(join(bin, tool)))) {
      return bin;
    }
  }
  return undefined;
}

/** A TCP port nobody listens on right now (on 127.0.0.1). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Runs one PostgreSQL tool; as `postgres` when this process is root. */
export type ServerTool = (name: string, args: string[]) => Promise<{ stdout: string }>;

/**
 * A fresh temporary directory (mode 0700, owned by `postgres` when we are root) and the tool
 * runner for it. Throws when the binaries are missing.
 */
export async function clusterWorkspace(prefix: string): Promise<{ dir: string; tool: ServerTool }> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql');
  const asRoot = process.getuid?.() === 0;
  const tool: ServerTool = (name, args) =>
    asRoot
      ? run('runuser', ['-u', 'postgres', '--', join(bin, name), ...args])
      : run(join(bin, name), args);
  const dir = await mkdtemp(join(tmpdir(), prefix));
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  await chmod(dir, 0o700);
  return { dir, tool };
}

/**
 * A TCP proxy in front of the real server that cuts connections on cue, for the suites that
 * must lose a connection at a precise point of the protocol (socket-level losses carry no
 * SQLSTATE, unlike `pg_terminate_backend`). It reads the frontend messages the client sends
 * (`Q` simple queries, `P` parse messages of the extended protocol) and, when `cut` matches
 * the SQL text of one, either drops the connection before forwarding it (`'before'`: the
 * server never sees it) or forwards it and drops the client's side once the server answered
 * (`'after-reply'`: the server ran it, the client never learns).
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';

export type CutPoint = 'before' | 'after-reply';

export interface CuttingProxy {
  /** `postgres://` URL of the proxy, for `openDatabase`. */
  readonly url: string;
  /** Cut the next connection that sends a statement whose text matches `match`. */
  cutOn(match: (sqlText: string) => boolean, point: CutPoint): void;
  /** Connections cut so far. */
  readonly cuts: number;
  close(): Promise<void>;
}

/** Starts a proxy to `target` (host and port of the real server) on a free local port. */
export async function startCuttingProxy(
  target: { host: string; port: number },
  database: string,
  user: string,
): Promise<CuttingProxy> {
  let rule: { match: (sqlText: string) => boolean; point: CutPoint } | undefined;
  let cuts = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    client.on('close', () => sockets.delete(client));
    upstream.on('close', () => sockets.delete(upstream));
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    let pending = Buffer.alloc(0);
    let started = false; // the startup message has no type byte
    let swallowReplies = false;
    upstream.on('data', (chunk) => {
      if (swallowReplies) {
        // The server answered the statement it was cut after: drop the client's side now.
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    client.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const headerLength = started ? 5 : 4;
        if (pending.length < headerLength) return;
        const length = started ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0);
        if (pending.length < length) return;
        const message = pending.subarray(0, length);
        pending = pending.subarray(length);
        if (!started) {
          started = true;
          upstream.write(message);
          continue;
        }
        const text = statementText(message);
        if (rule && text !== undefined && rule.match(text)) {
          const { point } = rule;
          rule = undefined;
          cuts++;
          if (point === 'before') {
            client.destroy();
            upstream.destroy();
            return;
          }
          swallowReplies = true;
          upstream.write(Buffer.concat([message, pending]));
          pending = Buffer.alloc(0);
          return;
        }
        upstream.write(message);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `postgres://${user}@127.0.0.1:${port}/${database}`,
    cutOn(match, point) {
      rule = { match, point };
    },
    get cuts() {
      return cuts;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// The SQL text of a `Q` (simple query) or `P` (parse: name, then the text) message.
function statementText(message: Buffer): string | undefined {
  const type = String.fromCharCode(message[0] ?? 0);
  const body = message.subarray(5);
  if (type === 'Q') return body.subarray(0, body.indexOf(0)).toString('utf8');
  if (type === 'P') {
    const nameEnd = body.indexOf(0);
    const rest = body.subarray(nameEnd + 1);
    return rest.subarray(0, rest.indexOf(0)).toString('utf8');
  }
  return undefined;
}

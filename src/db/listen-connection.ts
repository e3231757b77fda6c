import createDebug from 'debug';
import type pg from 'pg';
import type { ListenConnectionEvent, StopListening } from './database-handle.js';
import { describeError } from './query-failed.js';

const log = createDebug('pg-dual-read:db');

/** The first and the longest wait between two reconnection attempts. */
const firstRetryMs = 100;
const maxRetryMs = 30_000;

interface Subscription {
  readonly onNotify: (payload: string) => void;
  readonly onConnection: ((event: ListenConnectionEvent) => void) | undefined;
}

/**
 * The one dedicated connection a handle LISTENs on (never a pool slot), reopened with backoff
 * when it breaks, every channel listened to again. Subscribers hear of each loss and each
 * restoration. @internal
 *
 * @example
 * ```ts
 * const listener = new ListenConnection(() => openClient());
 * const stop = await listener.listen('pg_dual_read', onNotify, onConnection);
 * await listener.close();
 * ```
 */
export class ListenConnection {
  private client: Promise<pg.Client> | undefined;
  private readonly channels = new Map<string, Set<Subscription>>();
  /** The first LISTEN of each channel on the current connection. */
  private readonly ready = new Map<string, Promise<void>>();
  private retryTimer: NodeJS.Timeout | undefined;
  private attempts = 0;
  private closed = false;

  /** `quote` turns a channel name into the identifier LISTEN takes. */
  constructor(
    private readonly open: () => Promise<pg.Client>,
    private readonly quote: (channel: string) => string,
  ) {}

  /** Subscribes to `channel`; the first call connects (and throws if it cannot). */
  async listen(
    channel: string,
    onNotify: (payload: string) => void,
    onConnection?: (event: ListenConnectionEvent) => void,
  ): Promise<StopListening> {
    const ident = this.quote(channel);
    const client = await this.connected();
    const subscription: Subscription = { onNotify, onConnection };
    // In the map before LISTEN is sent, so a reconnection meanwhile listens to it too; a
    // second subscriber waits for the first one's LISTEN.
    let subscribers = this.channels.get(channel);
    if (!subscribers) {
      subscribers = new Set();
      this.channels.set(channel, subscribers);
      this.ready.set(
        channel,
        client.query(`LISTEN ${ident}`).then(() => undefined),
      );
    }
    subscribers.add(subscription);
    try {
      await this.ready.get(channel);
    } catch (error) {
      subscribers.delete(subscription);
      if (subscribers.size === 0 && this.channels.get(channel) === subscribers) {
        this.channels.delete(channel);
        this.ready.delete(channel);
      }
      throw error;
    }
    return async () => {
      const current = this.channels.get(channel);
      if (!current?.delete(subscription) || current.size > 0) return;
      this.channels.delete(channel);
      this.ready.delete(channel);
      const open = await this.client?.catch(() => undefined);
      await open?.query(`UNLISTEN ${ident}`).catch((err: unknown) => {
        log('UNLISTEN failed: %s', describeError(err));
      });
    };
  }

  /** Stops reconnecting and closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const client = await this.client?.catch(() => undefined);
    this.client = undefined;
    await client?.end().catch((err: unknown) => log('listener end failed: %s', describeError(err)));
  }

  private connected(): Promise<pg.Client> {
    if (!this.client) {
      const opening = this.connect();
      this.client = opening;
      opening.catch(() => {
        if (this.client === opening) this.client = undefined; // the next listen() retries
      });
    }
    return this.client;
  }

  private async connect(): Promise<pg.Client> {
    const client = await this.open();
    let lost = false;
    const onLost = (reason: string) => {
      if (lost || this.closed) return;
      lost = true;
      client.end().catch(() => undefined);
      this.lost(reason);
    };
    client.on('error', (err) => {
      const reason = describeError(err);
      log('listener connection error: %s', reason);
      onLost(reason);
    });
    client.on('end', () => onLost('connection ended'));
    client.on('notification', (message) => {
      for (const { onNotify } of this.channels.get(message.channel) ?? []) {
        onNotify(message.payload ?? '');
      }
    });
    return client;
  }

  private lost(reason: string): void {
    this.client = undefined;
    this.notify({ state: 'lost', reason });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.channels.size === 0 || this.retryTimer) return;
    const backoff = Math.min(maxRetryMs, firstRetryMs * 2 ** this.attempts);
    this.attempts++;
    // Jitter, so a fleet that lost its connections together does not reconnect together.
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = undefined;
        void this.reconnect();
      },
      backoff * (0.5 + Math.random() / 2),
    );
    this.retryTimer.unref();
  }

  private async reconnect(): Promise<void> {
    if (this.closed) return;
    try {
      const client = await this.connected();
      for (const channel of this.channels.keys())
        await client.query(`LISTEN ${this.quote(channel)}`);
      const attempts = this.attempts;
      this.attempts = 0;
      log('listener connection restored after %d attempt(s)', attempts);
      this.notify({ state: 'restored', attempts });
    } catch (error) {
      log('listener reconnection failed: %s', describeError(error));
      const client = await this.client?.catch(() => undefined);
      this.client = undefined;
      client?.end().catch(() => undefined);
      this.scheduleReconnect();
    }
  }

  private notify(event: ListenConnectionEvent): void {
    for (const subscribers of this.channels.values()) {
      for (const { onConnection } of subscribers) {
        try {
          onConnection?.(event);
        } catch (error) {
          log('listener connection callback threw: %s', describeError(error));
        }
      }
    }
  }
}

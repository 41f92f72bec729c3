/**
 * The ZooKeeper connection of a source: one node-zookeeper-client session shared by every watch
 * of the source, with what the library lacks (see library.ts for its crash guards):
 *
 * - A deadline on every call: the library has none, and a request queued while disconnected
 *   waits for a reconnect that may never come.
 * - Calls made while disconnected are held here until the connection is back, not queued in the
 *   library: on reconnect it sends what was queued ahead of the digest credentials it re-sends,
 *   so a read of a node with a digest ACL would be refused (NO_AUTH).
 * - A new session when the old one expired (the library stops for good then) or the credentials
 *   were refused, after a backoff. A reader has no ephemeral nodes, so any session will do.
 *
 * Listeners hear `lost` when the connection drops or the session ends, and `connected` when a
 * connection (to the same session or a new one) is up again; watches read everything again then.
 */
import type { IBackoff, IBackoffFactory } from 'cockatiel';

import { DiscoveryError } from '../errors.ts';
import { describeError, type DiscoveryLogger } from '../logger.ts';
import { ZOOKEEPER_CODES, ZooKeeperReadError, ZooKeeperUnavailableError } from './errors.ts';
import { dropSilentConnections, fenceReconnects, guardUnknownCodes, zookeeper } from './library.ts';

/** How to reach ZooKeeper. */
export interface ZooKeeperConnectionOptions {
  /** `host:port[,host:port…][/chroot]`. */
  readonly connectString: string;
  readonly sessionTimeoutMs: number;
  readonly callTimeoutMs: number;
  /** Digest credentials `user:password`, sent on every (re)connect before any read. */
  readonly digestCredentials: readonly string[];
  /** Delays before opening a new session after the last one ended. */
  readonly backoff: IBackoffFactory<unknown>;
  readonly logger: DiscoveryLogger;
}

/** Hears what happens to the connection. Must not throw. */
export interface ConnectionListener {
  /** Connected (again): watches set before may be gone, so read everything again. */
  connected(): void;
  /** The connection dropped or the session ended; calls wait for the next `connected`. */
  lost(error: unknown): void;
}

/** A watch callback as the library calls it: one event, once. */
export type NodeWatcher = (event: zookeeper.Event) => void;

/** What a read gives: the data or children, and the zxid of the last change it reflects. */
export interface NodeRead<T> {
  readonly value: T;
  /** Zxid of the node's last data change (getData) or children change (getChildren). */
  readonly zxid: bigint;
}

/** One ZooKeeper session at a time, replaced when it ends, until closed. */
export class ZooKeeperConnection {
  readonly #options: ZooKeeperConnectionOptions;
  readonly #listeners = new Set<ConnectionListener>();
  /** Calls waiting for a connection. */
  readonly #waiting = new Set<() => void>();
  /** Every call in flight, to fail them all on close(). */
  readonly #pending = new Set<(error: Error) => void>();
  #client: zookeeper.Client | undefined;
  #stopClient: (() => void) | undefined;
  #connected = false;
  #lastError: unknown;
  #backoff: IBackoff<unknown> | undefined;
  #reopenTimer: NodeJS.Timeout | undefined;
  #closed = false;

  /** Starts connecting at once. */
  constructor(options: ZooKeeperConnectionOptions) {
    guardUnknownCodes();
    this.#options = options;
    this.#open();
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Calls `listener` on every connect and loss; returns the function that stops it. */
  subscribe(listener: ConnectionListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The children of `path`, with a child watch; rejects with NO_NODE when it does not exist. */
  getChildren(path: string, watcher: NodeWatcher): Promise<NodeRead<string[]>> {
    return this.#call('getChildren', path, (client, done) =>
      client.getChildren(path, watcher, (error, children, stat) => done(error, { value: children, zxid: zxid(stat?.pzxid) })),
    );
  }

  /** The data of `path`, with a data watch; rejects with NO_NODE when it does not exist. */
  getData(path: string, watcher: NodeWatcher): Promise<NodeRead<Buffer>> {
    return this.#call('getData', path, (client, done) =>
      client.getData(path, watcher, (error, data, stat) => done(error, { value: data ?? Buffer.alloc(0), zxid: zxid(stat?.mzxid) })),
    );
  }

  /** Whether `path` exists, with a watch that fires when it is created, changed or deleted. */
  exists(path: string, watcher: NodeWatcher): Promise<boolean> {
    return this.#call('exists', path, (client, done) =>
      client.exists(path, watcher, (error, stat) => done(error, (stat as zookeeper.Stat | null) !== null)),
    );
  }

  /** Ends the session (at once if connected) and fails the calls in flight. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reopenTimer);
    const closed = new ZooKeeperUnavailableError('the ZooKeeper source was closed while a read was under way');
    for (const abort of [...this.#pending]) abort(closed);
    this.#waiting.clear();
    this.#listeners.clear();
    const client = this.#client;
    const stop = this.#stopClient;
    this.#client = undefined;
    if (client === undefined || stop === undefined) return;
    if (this.#connected) {
      // CLOSE_SESSION frees the session on the server now rather than after its timeout.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#options.callTimeoutMs);
        client.once('disconnected', () => {
          clearTimeout(timer);
          resolve();
        });
        client.close();
      });
    }
    this.#connected = false;
    stop();
  }

  #open(): void {
    const { connectString, sessionTimeoutMs, digestCredentials } = this.#options;
    const client = zookeeper.createClient(connectString, { sessionTimeout: sessionTimeoutMs, spinDelay: 1000, retries: 0 });
    const stopFence = fenceReconnects(client, () => !this.#closed && this.#client === client);
    const stopWatchingReads = dropSilentConnections(client, sessionTimeoutMs);
    this.#stopClient = () => {
      stopWatchingReads();
      stopFence();
    };
    this.#client = client;
    for (const credentials of digestCredentials) client.addAuthInfo('digest', Buffer.from(credentials));
    client.on('connected', () => this.#onConnected(client));
    client.on('disconnected', () => {
      if (this.#client !== client || !this.#connected) return;
      this.#connected = false;
      this.#emitLost(new ZooKeeperUnavailableError(`lost the connection to ZooKeeper ${connectString}; reconnecting`));
    });
    client.on('expired', () => this.#reopen(client, new ZooKeeperReadError('session', undefined, ZOOKEEPER_CODES.SESSION_EXPIRED)));
    client.on('authenticationFailed', () =>
      this.#reopen(client, new ZooKeeperReadError('authentication', undefined, ZOOKEEPER_CODES.AUTH_FAILED)),
    );
    client.connect();
  }

  #onConnected(client: zookeeper.Client): void {
    if (this.#client !== client || this.#closed) return;
    this.#connected = true;
    this.#backoff = undefined;
    this.#lastError = undefined;
    for (const start of [...this.#waiting]) start();
    this.#waiting.clear();
    for (const listener of [...this.#listeners]) listener.connected();
  }

  /** The session of `client` is over: tell the listeners, then open a new one after a backoff. */
  #reopen(client: zookeeper.Client, error: Error): void {
    if (this.#client !== client || this.#closed) return;
    this.#connected = false;
    this.#stopClient?.();
    this.#client = undefined;
    this.#emitLost(error);
    this.#backoff = this.#backoff === undefined ? this.#options.backoff.next(undefined) : this.#backoff.next(undefined);
    const delayMs = this.#backoff.duration;
    this.#options.logger.warn({ err: describeError(error), retryInMs: Math.round(delayMs) }, 'ZooKeeper session ended; opening a new one');
    this.#reopenTimer = setTimeout(() => {
      this.#reopenTimer = undefined;
      if (!this.#closed) this.#open();
    }, delayMs);
  }

  #emitLost(error: Error): void {
    this.#lastError = error;
    for (const listener of [...this.#listeners]) listener.lost(error);
  }

  /** Runs a library call with a deadline, on a connected session; holds it until there is one. */
  #call<T>(
    operation: string,
    path: string,
    start: (client: zookeeper.Client, done: (error: unknown, value?: T) => void) => void,
  ): Promise<T> {
    if (this.#closed) return Promise.reject(new ZooKeeperUnavailableError('this ZooKeeper source is closed: create a new one'));
    const { callTimeoutMs, connectString } = this.#options;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (error: unknown, value?: T): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#waiting.delete(begin);
        this.#pending.delete(finish);
        if (error === null || error === undefined) resolve(value as T);
        else reject(toReadError(operation, path, error));
      };
      const begin = (): void => {
        const client = this.#client;
        if (settled || client === undefined) return;
        try {
          start(client, finish);
        } catch (err: unknown) {
          finish(err);
        }
      };
      const timer = setTimeout(() => {
        const why = this.#connected
          ? 'no answer'
          : `not connected${this.#lastError === undefined ? '' : `: ${describeError(this.#lastError)}`}`;
        finish(
          new ZooKeeperUnavailableError(
            `ZooKeeper ${operation} ${path} at ${connectString}: ${why} within ${callTimeoutMs} ms; check that the servers are up and reachable from here`,
            { cause: this.#lastError },
          ),
        );
      }, callTimeoutMs);
      this.#pending.add(finish);
      if (this.#connected) begin();
      else this.#waiting.add(begin);
    });
  }
}

function zxid(value: Buffer | undefined): bigint {
  return value !== undefined && value.length === 8 ? value.readBigInt64BE(0) : 0n;
}

/** Maps what the library reported (an Exception with a code, or an argument check) to a read error. */
function toReadError(operation: string, path: string, error: unknown): Error {
  if (error instanceof DiscoveryError) return error;
  const getCode = (error as { getCode?: unknown } | null)?.getCode;
  if (typeof getCode === 'function') return new ZooKeeperReadError(operation, path, getCode.call(error) as number, { cause: error });
  return new DiscoveryError(`ZooKeeper ${operation} ${path} was refused by the client: ${describeError(error)}`, { cause: error });
}

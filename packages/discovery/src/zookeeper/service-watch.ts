/**
 * The watch of one service in ZooKeeper. ZooKeeper watches fire once and carry no data, so the
 * watch keeps the nodes it has read in memory, each read with a watch armed on it, and a node
 * whose watch fired is read again (re-arming it):
 *
 * - the service node's children, with a child watch (an instance added or removed);
 * - each entry's data, with a data watch (weight, tags or metadata changed; the entry deleted);
 * - for `hostport` entries, the owner index node of the same id, with a data watch, or an exists
 *   watch while it is missing.
 *
 * A missing service node means no instances; an exists watch on it says when it appears. Every
 * pass ends with the whole set handed to the listener (the cache drops a set that did not change).
 *
 * After the connection drops or the session expires, everything is read again from scratch once
 * a connection is back: watches of an expired session are gone, and re-reading is what tells the
 * moment the source is in step again. Meanwhile the listener hears `disconnected` and keeps its last
 * set. A read that fails otherwise (a deadline, NO_AUTH) is retried after a backoff with jitter.
 */
import type { IBackoff, IBackoffFactory } from 'cockatiel';

import type { Clock } from '../clock.ts';
import type { Instance } from '../instance.ts';
import { describeError, type DiscoveryLogger } from '../logger.ts';
import { pause } from '../pause.ts';
import type { SourceListener, SourceWatch } from '../source.ts';
import type { ZooKeeperConnection, NodeWatcher } from './connection.ts';
import { decodeZooKeeperInstance, needsOwnerIndex } from './decode.ts';
import { hasCode, ZOOKEEPER_CODES } from './errors.ts';
import type { zookeeper } from './library.ts';
import type { ServicePaths } from './paths.ts';

/** What a service watch needs from its source. */
export interface ZooKeeperServiceWatchContext {
  readonly connection: ZooKeeperConnection;
  readonly namespace: string;
  readonly service: string;
  readonly paths: ServicePaths;
  readonly listener: SourceListener;
  readonly logger: DiscoveryLogger;
  readonly backoff: IBackoffFactory<unknown>;
  readonly clock: Clock;
}

/** An owner index node that does not exist (an exists watch is armed on it). */
const ABSENT = null;

/** Follows one service until closed. */
export class ZooKeeperServiceWatch implements SourceWatch {
  readonly #ctx: ZooKeeperServiceWatchContext;
  readonly #fields: { readonly namespace: string; readonly service: string };
  /** One function for every watch of this service, so the library keeps one watcher per node. */
  readonly #watcher: NodeWatcher = (event) => this.#onEvent(event);
  readonly #unsubscribe: () => void;
  /** Names of the service node's children; undefined when they must be listed again. */
  #children: string[] | undefined;
  /** Instance id → entry data, for entries read with a watch that has not fired. */
  readonly #entries = new Map<string, string>();
  /** Instance id → owner index data (or ABSENT), read with a watch that has not fired. */
  readonly #ownerIndex = new Map<string, string | typeof ABSENT>();
  /** Paths whose watch fired since the last pass began. */
  readonly #fired = new Set<string>();
  /** Set when everything must be read again (start, connection lost, a failed pass). */
  #reset = true;
  /** Set when a pass is due. */
  #due = true;
  #wake: (() => void) | undefined;
  /** Aborted when the connection is back, to end the wait between attempts early. */
  #reconnected = new AbortController();
  readonly #closing = new AbortController();
  /** Highest zxid seen: the registry position reported with each set. */
  #zxid = 0n;
  /** Clock time the watch fell out of step, while it is. */
  #lostAt: number | undefined;
  #closed = false;

  /** Starts following at once. */
  constructor(ctx: ZooKeeperServiceWatchContext) {
    this.#ctx = ctx;
    this.#fields = { namespace: ctx.namespace, service: ctx.service };
    this.#unsubscribe = ctx.connection.subscribe({
      connected: () => {
        this.#reconnected.abort();
        this.#kick();
      },
      lost: (error) => {
        this.#reset = true;
        this.#outOfStep(error, undefined);
      },
    });
    this.#run().catch((err: unknown) => {
      ctx.logger.error({ ...this.#fields, err: describeError(err) }, 'ZooKeeper watch stopped by an unexpected error');
    });
  }

  /** Stops the watch; the listener hears nothing more. Watches armed in ZooKeeper fire into nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#closing.abort();
    this.#kick();
    await Promise.resolve();
  }

  async #run(): Promise<void> {
    let backoff: IBackoff<unknown> | undefined;
    while (!this.#closed) {
      await this.#untilDue();
      if (this.#closed) return;
      this.#due = false;
      try {
        await this.#pass();
      } catch (err: unknown) {
        if (this.#closed) return;
        this.#reset = true;
        this.#due = true;
        backoff = backoff === undefined ? this.#ctx.backoff.next(undefined) : backoff.next(undefined);
        this.#outOfStep(err, backoff.duration);
        this.#reconnected = new AbortController();
        await pause(backoff.duration, AbortSignal.any([this.#closing.signal, this.#reconnected.signal]));
        continue;
      }
      backoff = undefined;
      // A connection lost during the pass makes what it read unreliable: read again instead.
      if (this.#reset) this.#due = true;
      else this.#deliver();
    }
  }

  #untilDue(): Promise<void> {
    if (this.#due || this.#closed) return Promise.resolve();
    return new Promise((resolve) => (this.#wake = resolve));
  }

  #kick(): void {
    this.#due = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Runs in the library's socket handler: must not throw. */
  #onEvent(event: zookeeper.Event): void {
    if (this.#closed) return;
    try {
      this.#fired.add(event.getPath());
      this.#kick();
    } catch (err: unknown) {
      this.#ctx.logger.error({ ...this.#fields, err: describeError(err) }, 'could not take a ZooKeeper watch event');
    }
  }

  /** Reads what is not known (or no longer watched) into memory. */
  async #pass(): Promise<void> {
    const { paths } = this.#ctx;
    if (this.#reset) {
      this.#reset = false;
      this.#children = undefined;
      this.#entries.clear();
      this.#ownerIndex.clear();
      this.#fired.clear();
    }
    for (const path of this.#fired) {
      if (path === paths.service) this.#children = undefined;
      const entry = childOf(paths.service, path);
      if (entry !== undefined) this.#entries.delete(entry);
      const indexed = childOf(paths.ownerIndex, path);
      if (indexed !== undefined) this.#ownerIndex.delete(indexed);
    }
    this.#fired.clear();

    this.#children ??= await this.#listChildren();
    const children = new Set(this.#children);
    for (const id of this.#entries.keys()) if (!children.has(id)) this.#entries.delete(id);
    await Promise.all([...children].filter((id) => !this.#entries.has(id)).map((id) => this.#readEntry(id)));

    const indexed = new Set([...this.#entries].filter(([, data]) => needsOwnerIndex(data)).map(([id]) => id));
    for (const id of this.#ownerIndex.keys()) if (!indexed.has(id)) this.#ownerIndex.delete(id);
    await Promise.all([...indexed].filter((id) => !this.#ownerIndex.has(id)).map((id) => this.#readOwnerIndex(id)));
  }

  /** The children of the service node, or none while it does not exist (watching for it to appear). */
  async #listChildren(): Promise<string[]> {
    const { connection, paths } = this.#ctx;
    try {
      const read = await connection.getChildren(paths.service, this.#watcher);
      this.#seen(read.zxid);
      return read.value;
    } catch (err: unknown) {
      if (!hasCode(err, ZOOKEEPER_CODES.NO_NODE)) throw err;
    }
    // Created in between: the exists call armed a data watch instead; list again on the next pass.
    if (await connection.exists(paths.service, this.#watcher)) this.#refire(paths.service);
    return [];
  }

  async #readEntry(id: string): Promise<void> {
    try {
      const read = await this.#ctx.connection.getData(`${this.#ctx.paths.service}/${id}`, this.#watcher);
      this.#seen(read.zxid);
      this.#entries.set(id, read.value.toString('utf8'));
    } catch (err: unknown) {
      // Deleted since the children were listed: the child watch reports it.
      if (!hasCode(err, ZOOKEEPER_CODES.NO_NODE)) throw err;
    }
  }

  async #readOwnerIndex(id: string): Promise<void> {
    const { connection, paths } = this.#ctx;
    const path = `${paths.ownerIndex}/${id}`;
    try {
      const read = await connection.getData(path, this.#watcher);
      this.#seen(read.zxid);
      this.#ownerIndex.set(id, read.value.toString('utf8'));
      return;
    } catch (err: unknown) {
      if (!hasCode(err, ZOOKEEPER_CODES.NO_NODE)) throw err;
    }
    this.#ownerIndex.set(id, ABSENT);
    if (await connection.exists(path, this.#watcher)) this.#refire(path);
  }

  /** Reads `path` again on the next pass, as if its watch had fired. */
  #refire(path: string): void {
    this.#fired.add(path);
    this.#kick();
  }

  #seen(zxid: bigint): void {
    if (zxid > this.#zxid) this.#zxid = zxid;
  }

  /** Hands the whole current set to the listener. */
  #deliver(): void {
    if (this.#closed) return;
    const instances: Instance[] = [];
    for (const id of [...this.#entries.keys()].sort()) {
      const instance = decodeZooKeeperInstance(id, this.#entries.get(id) ?? '', this.#ownerIndex.get(id) ?? undefined);
      if (instance !== undefined) instances.push(instance);
    }
    const { logger, clock, listener } = this.#ctx;
    const revision = this.#zxid.toString();
    if (this.#lostAt !== undefined) {
      logger.info({ ...this.#fields, revision, outOfStepMs: Math.round(clock.now() - this.#lostAt) }, 'ZooKeeper watch in step again');
      this.#lostAt = undefined;
    }
    try {
      listener.update(instances, revision);
    } catch (err: unknown) {
      logger.error({ ...this.#fields, err: describeError(err) }, 'a listener of the ZooKeeper source failed on an update');
    }
  }

  #outOfStep(reason: unknown, retryInMs: number | undefined): void {
    if (this.#closed) return;
    const { logger, clock, listener } = this.#ctx;
    const log = { ...this.#fields, err: describeError(reason), ...(retryInMs === undefined ? {} : { retryInMs: Math.round(retryInMs) }) };
    if (this.#lostAt === undefined) {
      this.#lostAt = clock.now();
      logger.warn(log, 'lost the ZooKeeper watch; reading again once ZooKeeper answers');
    } else {
      logger.debug(log, 'ZooKeeper still unreachable');
    }
    try {
      listener.disconnected(reason);
    } catch (err: unknown) {
      logger.error({ ...this.#fields, err: describeError(err) }, 'a listener of the ZooKeeper source failed on a disconnect');
    }
  }
}

/** The name of `path` if it sits directly under `parent`, else undefined. */
function childOf(parent: string, path: string): string | undefined {
  if (!path.startsWith(`${parent}/`)) return undefined;
  const rest = path.slice(parent.length + 1);
  return rest === '' || rest.includes('/') ? undefined : rest;
}

/**
 * The watch of one service in etcd, as etcd's own Go resolver does it: read the entries and the
 * owner index at one revision, deliver that set, then watch both from the next revision, so no
 * change between the read and the watch is missed. Changes are applied to the keys held in memory
 * and the whole set is delivered after each watch response.
 *
 * When the watch is lost (link down, etcd restarted, watch cancelled because its revision was
 * compacted), the listener hears `disconnected` and keeps its last set; the watch starts over
 * with a fresh read after a backoff with jitter. Re-reading on every reconnect, rather than
 * resuming from the last revision seen, costs one range read of one service and buys two things:
 * the read is authoritative (entries deleted meanwhile are gone from it, whether or not their
 * delete events were compacted away), and the moment the source is in step again is known (a
 * resumed watch cannot tell when it has caught up, since etcd sends nothing when nothing changed).
 *
 * The operator writes an entry and its owner index in one transaction, but etcd reports them to
 * the two watchers as two responses. Responses that arrive together are delivered as one set (the
 * delivery waits for the current turn of the event loop to end); one that arrives alone after its
 * twin shows the instance for a moment with the value's defaults (weight 1, no tags).
 */
import type { IBackoff, IBackoffFactory } from 'cockatiel';
import type { Etcd3, IWatchResponse } from 'etcd3';

import type { Clock } from '../clock.ts';
import type { Instance } from '../instance.ts';
import { pause } from '../pause.ts';
import type { SourceListener, SourceWatch } from '../source.ts';
import { deadline } from './client.ts';
import { decodeInstance } from './decode.ts';
import { childName, type ServiceKeys } from './keys.ts';
import { describeError, type DiscoveryLogger } from '../logger.ts';
import { isCompacted, SESSION_CLOSED, WatchSession } from './session.ts';

/** What a service watch needs from its source. */
export interface ServiceWatchContext {
  readonly client: Etcd3;
  readonly namespace: string;
  readonly service: string;
  readonly keys: ServiceKeys;
  readonly listener: SourceListener;
  readonly logger: DiscoveryLogger;
  readonly backoff: IBackoffFactory<unknown>;
  readonly callTimeoutMs: number;
  readonly clock: Clock;
}

/** Follows one service until closed. */
export class EtcdServiceWatch implements SourceWatch {
  readonly #ctx: EtcdServiceWatchContextFields;
  /** Instance id → value at the entry key. */
  readonly #entries = new Map<string, string>();
  /** Instance id → value at the owner index key. */
  readonly #ownerIndex = new Map<string, string>();
  #revision = '0';
  #session: WatchSession | undefined;
  /** True while the current session is connected: changes are delivered as they come. */
  #inStep = false;
  #pendingDelivery: NodeJS.Immediate | undefined;
  /** Aborted by close(): cuts the wait between attempts short. */
  readonly #closing = new AbortController();
  /** Clock time the watch was lost, while it is. */
  #lostAt: number | undefined;
  #closed = false;

  /** Starts following at once. */
  constructor(ctx: ServiceWatchContext) {
    this.#ctx = { ...ctx, fields: { namespace: ctx.namespace, service: ctx.service } };
    this.#run().catch((err: unknown) => {
      this.#ctx.logger.error({ ...this.#ctx.fields, err: describeError(err) }, 'etcd watch stopped by an unexpected error');
    });
  }

  /** Stops the watch; the listener hears nothing more. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearPending();
    this.#closing.abort();
    await this.#session?.cancel(this.#ctx.callTimeoutMs);
  }

  async #run(): Promise<void> {
    let backoff: IBackoff<unknown> | undefined;
    while (!this.#closed) {
      const reason = await this.#follow(() => (backoff = undefined));
      if (this.#closed || reason === SESSION_CLOSED) return;
      backoff = backoff === undefined ? this.#ctx.backoff.next(undefined) : backoff.next(undefined);
      this.#lost(reason, backoff.duration);
      await pause(backoff.duration, this.#closing.signal);
    }
  }

  /** One attempt: read, watch, deliver; resolves with why it stopped following. */
  async #follow(inStep: () => void): Promise<unknown> {
    let revision: string;
    try {
      revision = await this.#read();
    } catch (err: unknown) {
      return err;
    }
    if (this.#closed) return SESSION_CLOSED;
    const { client, keys, callTimeoutMs } = this.#ctx;
    const next = (BigInt(revision) + 1n).toString();
    const session: WatchSession = new WatchSession(client, [keys.entries, keys.ownerIndex], next, (res) => this.#onResponse(session, res));
    this.#session = session;
    try {
      const ready = await session.ready(callTimeoutMs);
      if (ready !== 'ready') return ready.reason;
      this.#inStep = true;
      this.#deliver();
      inStep();
      return await session.ended();
    } finally {
      this.#inStep = false;
      this.#clearPending();
      this.#session = undefined;
      await session.cancel(callTimeoutMs);
    }
  }

  /** Reads the entries and the owner index at one revision into memory; returns the revision. */
  async #read(): Promise<string> {
    const { client, keys, callTimeoutMs } = this.#ctx;
    const entries = await client.getAll().prefix(keys.entries).options(deadline(callTimeoutMs)).exec();
    const revision = entries.header.revision;
    const index = await client.getAll().prefix(keys.ownerIndex).revision(revision).options(deadline(callTimeoutMs)).exec();
    this.#entries.clear();
    this.#ownerIndex.clear();
    for (const kv of entries.kvs) this.#put(kv.key.toString('utf8'), kv.value.toString('utf8'));
    for (const kv of index.kvs) this.#put(kv.key.toString('utf8'), kv.value.toString('utf8'));
    this.#revision = revision;
    return revision;
  }

  /** Applies one watch response; never throws, since etcd3 would rethrow it uncaught. */
  #onResponse(session: WatchSession, res: IWatchResponse): void {
    try {
      if (session !== this.#session || res.events.length === 0) return;
      for (const event of res.events) {
        const key = event.kv.key.toString('utf8');
        if (event.type === 'Put') this.#put(key, event.kv.value.toString('utf8'));
        else this.#delete(key);
      }
      this.#revision = res.header.revision;
      if (this.#inStep) this.#pendingDelivery ??= setImmediate(() => this.#deliver());
    } catch (err: unknown) {
      this.#ctx.logger.error({ ...this.#ctx.fields, err: describeError(err) }, 'could not apply an etcd watch response');
    }
  }

  #put(key: string, value: string): void {
    const { entries, ownerIndex } = this.#ctx.keys;
    const id = childName(entries, key);
    if (id !== undefined) this.#entries.set(id, value);
    const indexed = childName(ownerIndex, key);
    if (indexed !== undefined) this.#ownerIndex.set(indexed, value);
  }

  #delete(key: string): void {
    const { entries, ownerIndex } = this.#ctx.keys;
    const id = childName(entries, key);
    if (id !== undefined) this.#entries.delete(id);
    const indexed = childName(ownerIndex, key);
    if (indexed !== undefined) this.#ownerIndex.delete(indexed);
  }

  /** Hands the whole current set to the listener. */
  #deliver(): void {
    this.#pendingDelivery = undefined;
    if (this.#closed) return;
    const instances: Instance[] = [];
    for (const id of [...this.#entries.keys()].sort()) {
      const instance = decodeInstance(id, this.#entries.get(id) ?? '', this.#ownerIndex.get(id));
      if (instance !== undefined) instances.push(instance);
    }
    const { logger, fields, clock } = this.#ctx;
    if (this.#lostAt !== undefined) {
      logger.info({ ...fields, revision: this.#revision, outOfStepMs: Math.round(clock.now() - this.#lostAt) }, 'etcd watch in step again');
      this.#lostAt = undefined;
    }
    try {
      this.#ctx.listener.update(instances, this.#revision);
    } catch (err: unknown) {
      logger.error({ ...fields, err: describeError(err) }, 'a listener of the etcd source failed on an update');
    }
  }

  #lost(reason: unknown, retryInMs: number): void {
    const { logger, fields, clock } = this.#ctx;
    const log = { ...fields, err: describeError(reason), retryInMs: Math.round(retryInMs) };
    if (this.#lostAt === undefined) {
      this.#lostAt = clock.now();
      const what = isCompacted(reason) ? 'etcd compacted the revision the watch started from; reading again' : 'lost the etcd watch';
      logger.warn(log, what);
    } else {
      logger.debug(log, 'etcd still unreachable');
    }
    try {
      this.#ctx.listener.disconnected(reason);
    } catch (err: unknown) {
      logger.error({ ...fields, err: describeError(err) }, 'a listener of the etcd source failed on a disconnect');
    }
  }

  #clearPending(): void {
    if (this.#pendingDelivery !== undefined) clearImmediate(this.#pendingDelivery);
    this.#pendingDelivery = undefined;
  }
}

/** The context plus the log fields every line of this watch carries. */
interface EtcdServiceWatchContextFields extends ServiceWatchContext {
  readonly fields: { readonly namespace: string; readonly service: string };
}

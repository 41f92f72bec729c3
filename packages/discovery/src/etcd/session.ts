/**
 * One attempt at following a service: two etcd3 watchers (entries and owner index) started at
 * the same revision, which either both connect and then run until the link breaks, or fail.
 * A session never reconnects by itself: etcd3 1.1.2's watcher resumes from the revision in the
 * server's "created" reply, which can be past events still in flight when the link drops again,
 * and gives up for good with an 'error' when its revision has been compacted. The service watch
 * above re-reads and starts a new session instead, which is exact in both cases.
 */
import type { Etcd3, IWatchResponse, Watcher } from 'etcd3';

import { describeError } from '../logger.ts';

/** Why a session ended when it was closed on purpose rather than lost. */
export const SESSION_CLOSED: unique symbol = Symbol('session closed');

/** The watchers of one attempt and how it ends. */
export class WatchSession {
  readonly #watchers: Watcher[];
  /** Watchers etcd already cancelled: a cancel request for them would never be answered. */
  readonly #cancelledByEtcd = new Set<Watcher>();
  readonly #ready: Promise<void>;
  readonly #ended: Promise<unknown>;
  #end!: (reason: unknown) => void;
  #over = false;
  #cancelled: Promise<void> | undefined;

  /**
   * Starts watching every prefix from `fromRevision`. `onResponse` gets each watch response of
   * every watcher, in order per watcher; it must not throw (etcd3 would rethrow it uncaught).
   */
  constructor(client: Etcd3, prefixes: readonly string[], fromRevision: string, onResponse: (res: IWatchResponse) => void) {
    this.#ended = new Promise((resolve) => (this.#end = resolve));
    const connected: Promise<void>[] = [];
    this.#watchers = prefixes.map((prefix) => {
      const watcher = client.watch().prefix(prefix).startRevision(fromRevision).watcher();
      connected.push(new Promise((resolve) => watcher.once('connected', () => resolve())));
      watcher.on('data', (res: IWatchResponse) => {
        if (!this.#over) onResponse(res);
      });
      // 'disconnected': the stream broke; 'error': etcd cancelled the watch (compaction, permissions).
      watcher.on('disconnected', (err: unknown) => this.#lose(err));
      watcher.on('error', (err: unknown) => {
        this.#cancelledByEtcd.add(watcher);
        this.#lose(err);
      });
      return watcher;
    });
    this.#ready = Promise.all(connected).then(() => undefined);
  }

  /**
   * Resolves with 'ready' once every watcher is connected, or with the reason the session ended
   * first; after `timeoutMs` without both, ends the session (a link that swallows packets never
   * says it is down).
   */
  async ready(timeoutMs: number): Promise<'ready' | { reason: unknown }> {
    const timer = setTimeout(() => this.#lose(new Error(`etcd did not confirm the watch within ${timeoutMs} ms`)), timeoutMs);
    try {
      return await Promise.race([this.#ready.then(() => 'ready' as const), this.#ended.then((reason) => ({ reason }))]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves with the reason the session ended: an error, or {@link SESSION_CLOSED}. */
  ended(): Promise<unknown> {
    return this.#ended;
  }

  /** Ends the session on purpose. */
  close(): void {
    this.#lose(SESSION_CLOSED);
  }

  /**
   * Cancels the watchers. A watcher on a live stream waits for etcd to confirm, which a black-holed
   * link never does, so this gives up after `timeoutMs`; the stream goes with the client then.
   * Idempotent.
   */
  cancel(timeoutMs: number): Promise<void> {
    this.#cancelled ??= this.#cancel(timeoutMs);
    return this.#cancelled;
  }

  async #cancel(timeoutMs: number): Promise<void> {
    this.close();
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    try {
      await Promise.race([Promise.allSettled(this.#watchers.filter((w) => !this.#cancelledByEtcd.has(w)).map((w) => w.cancel())), giveUp]);
    } finally {
      clearTimeout(timer);
    }
  }

  #lose(reason: unknown): void {
    if (this.#over) return;
    this.#over = true;
    this.#end(reason);
  }
}

/** Whether `error` says a watch's start revision was compacted away. */
export function isCompacted(error: unknown): boolean {
  return /compacted/i.test(describeError(error));
}

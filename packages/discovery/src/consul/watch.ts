/**
 * The watch of one service on Consul: a loop of blocking queries on the health endpoint, which
 * Consul holds open until something about the service changes (or `wait` passes). That is not
 * polling: at steady state there is one open request per service and nothing else.
 *
 * Every answer is the complete set of passing instances and goes to the listener as such. A failed
 * query tells the listener it is out of step and is retried after an exponential backoff with
 * jitter; the first query after a failure is a plain read, because the agent that answers may hold
 * fresh state with lower indexes (see blocking.ts).
 */

import type { IBackoff, IBackoffFactory } from 'cockatiel';

import type { Clock } from '../clock.ts';
import type { Instance } from '../instance.ts';
import { pause } from '../pause.ts';
import type { SourceListener, SourceWatch } from '../source.ts';
import { blockingDeadlineMs, delayBeforeNextQuery, nextIndex } from './blocking.ts';
import { decodeHealth } from './decode.ts';
import { ConsulRequestError, type ConsulHttp } from './http.ts';
import type { DiscoveryLogger } from '../logger.ts';

/** What a watch needs from its source. */
export interface ConsulWatchContext {
  readonly http: ConsulHttp;
  /** Consul service name to query. */
  readonly name: string;
  /** Query parameters of every read: filter, dc, ns. */
  readonly query: Readonly<Record<string, string>>;
  readonly waitSeconds: number;
  /** Deadline of a plain (non-blocking) read. */
  readonly readTimeoutMs: number;
  readonly minQueryIntervalMs: number;
  readonly backoff: IBackoffFactory<unknown>;
  readonly clock: Clock;
  readonly logger: DiscoveryLogger;
  /** For log fields. */
  readonly service: string;
  readonly namespace: string;
}

/** Follows one service until closed. */
export class ConsulServiceWatch implements SourceWatch {
  readonly #ctx: ConsulWatchContext;
  readonly #listener: SourceListener;
  readonly #abort = new AbortController();
  readonly #done: Promise<void>;

  /** Starts the loop at once; the first answer is an initial read. */
  constructor(ctx: ConsulWatchContext, listener: SourceListener) {
    this.#ctx = ctx;
    this.#listener = listener;
    this.#done = this.#run();
  }

  /** Stops the loop and the query in flight. */
  async close(): Promise<void> {
    this.#abort.abort(new Error('watch closed'));
    await this.#done;
  }

  async #run(): Promise<void> {
    const { clock } = this.#ctx;
    const signal = this.#abort.signal;
    let index = 0;
    let lastStart: number | undefined;
    let backoff: IBackoff<unknown> | undefined;
    while (!signal.aborted) {
      if (!(await this.#pause(delayBeforeNextQuery(lastStart, clock.now(), this.#ctx.minQueryIntervalMs)))) return;
      lastStart = clock.now();
      try {
        const { instances, answered } = await this.#read(index);
        index = nextIndex(index, answered);
        backoff = undefined;
        this.#listener.update(instances, answered ?? '');
      } catch (err: unknown) {
        if (signal.aborted) return;
        index = 0;
        backoff = backoff === undefined ? this.#ctx.backoff.next(undefined) : backoff.next(undefined);
        this.#ctx.logger.warn(
          { err, service: this.#ctx.service, namespace: this.#ctx.namespace, retryInMs: Math.round(backoff.duration) },
          'reading the service from Consul failed; serving the last known instances and retrying',
        );
        this.#listener.disconnected(err);
        if (!(await this.#pause(backoff.duration))) return;
      }
    }
  }

  /** One read: blocking on `index` unless it is 0. */
  async #read(index: number): Promise<{ instances: Instance[]; answered: string | null }> {
    const { http, name, query, waitSeconds } = this.#ctx;
    const blocking = index > 0;
    const path = `/v1/health/service/${encodeURIComponent(name)}`;
    const answer = await http.call('GET', path, {
      query: { ...query, passing: 'true', ...(blocking ? { index: String(index), wait: `${waitSeconds}s` } : {}) },
      timeoutMs: blocking ? blockingDeadlineMs(waitSeconds) : this.#ctx.readTimeoutMs,
      signal: this.#abort.signal,
    });
    if (!Array.isArray(answer.body)) {
      throw new ConsulRequestError(
        'GET',
        path,
        200,
        `expected a list of health entries, got ${JSON.stringify(answer.body)?.slice(0, 100)}`,
      );
    }
    const { instances, skipped } = decodeHealth(answer.body);
    if (skipped.length > 0) {
      this.#ctx.logger.debug(
        { service: this.#ctx.service, namespace: this.#ctx.namespace, skipped },
        'Consul services that are not endpoints',
      );
    }
    return { instances, answered: answer.index };
  }

  /** Waits `ms` unless closed first; resolves false when closed. */
  #pause(ms: number): Promise<boolean> {
    return pause(ms, this.#abort.signal);
  }
}

/**
 * Kubernetes events on our objects, core/v1 style so `kubectl describe` shows them. Repeats of the
 * same event on the same object are folded into one with a count, as client-go's recorder does,
 * so a retrying failure does not flood the API server. And as client-go's spam filter does, each
 * object may record a burst of events and then one per few minutes, so an object that changes
 * every second (a selector over pods flapping in and out of readiness) does not add one apiserver
 * write per change. Warnings and normal events have separate allowances: a run of "Registered"
 * never keeps a "RegistrationFailed" out.
 */
import PQueue from 'p-queue';
import type { CoreV1Event } from '@kubernetes/client-node';
import { kubeRequest, PatchType, seg } from './api.ts';
import type { KubeConfig } from './client.ts';
import type { Logger } from 'pino';

/** The object an event is about. */
export interface EventTarget {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  /** Empty for cluster-scoped objects (their events go to namespace `default`). */
  readonly namespace: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
}

/** Records events. */
export interface EventRecorder {
  normal(target: EventTarget, reason: string, message: string): void;
  warning(target: EventTarget, reason: string, message: string): void;
}

interface Folded {
  /** The event's name once it is created; undefined if creating it failed. */
  readonly name: Promise<string | undefined>;
  readonly namespace: string;
  count: number;
  lastSent: number;
}

const COMPONENT = 'kube-registrar';
/** Repeats within this window update the existing event instead of creating a new one. */
const FOLD_WINDOW_MS = 10 * 60_000;
const MAX_FOLDED = 4096;
/** Events one object may record at once, per type (client-go's spam filter: 25). */
export const SPAM_BURST = 25;
/** After the burst, one more event per object and type per this period (client-go's: 5 minutes). */
export const SPAM_REFILL_MS = 5 * 60_000;
/** Objects whose allowance is remembered; past it the least recently used is forgotten (full again). */
export const MAX_ALLOWANCES = 4096;
/** Events sent to the apiserver at once. */
const SEND_CONCURRENCY = 4;
/** Events waiting to be sent beyond which new ones are dropped (as client-go's broadcaster does when its queue is full). */
const MAX_BACKLOG = 1000;

/**
 * client-go's spam filter: a token bucket per key (an object and an event type) holding
 * {@link SPAM_BURST} tokens, refilled at one per {@link SPAM_REFILL_MS}. The least recently used
 * keys are forgotten past {@link MAX_ALLOWANCES}, which only ever gives an object a full bucket again.
 */
export class EventAllowance {
  /** Per key: the tokens left and the time the refill is counted from. */
  readonly #buckets = new Map<string, { readonly tokens: number; readonly at: number }>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Takes a token for `key`: true if there was one (the event may be recorded). */
  take(key: string): boolean {
    const now = this.#now();
    const known = this.#buckets.get(key);
    let tokens = SPAM_BURST;
    let at = now;
    if (known) {
      // Most recently used last, so the first entry is the one to forget when the map is full.
      this.#buckets.delete(key);
      const refill = Math.floor((now - known.at) / SPAM_REFILL_MS);
      tokens = known.tokens + refill;
      at = known.at + refill * SPAM_REFILL_MS;
      // A full bucket starts counting its refill from the next token taken.
      if (tokens >= SPAM_BURST) [tokens, at] = [SPAM_BURST, now];
    } else if (this.#buckets.size >= MAX_ALLOWANCES) {
      const oldest = this.#buckets.keys().next().value;
      if (oldest !== undefined) this.#buckets.delete(oldest);
    }
    const allowed = tokens > 0;
    this.#buckets.set(key, { tokens: allowed ? tokens - 1 : 0, at });
    return allowed;
  }

  /** Keys remembered (for tests). */
  get size(): number {
    return this.#buckets.size;
  }
}

/** An {@link EventRecorder} writing to the API server; failures are logged, never thrown. */
export class KubeEventRecorder implements EventRecorder {
  readonly #kc: KubeConfig;
  readonly #logger: Logger;
  readonly #folded = new Map<string, Folded>();
  readonly #queue = new PQueue({ concurrency: SEND_CONCURRENCY });
  readonly #allowance: EventAllowance;
  #dropped = 0;
  #filtered = 0;

  constructor(kc: KubeConfig, logger: Logger, options: { readonly now?: () => number } = {}) {
    this.#kc = kc;
    this.#logger = logger;
    this.#allowance = new EventAllowance(options.now);
  }

  normal(target: EventTarget, reason: string, message: string): void {
    this.#record(target, 'Normal', reason, message);
  }

  warning(target: EventTarget, reason: string, message: string): void {
    this.#record(target, 'Warning', reason, message);
  }

  /** Events dropped because too many were waiting (a burst, e.g. a cold sync of thousands of ServiceInstances). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Events not recorded because their object had used its allowance (the spam filter). */
  get filtered(): number {
    return this.#filtered;
  }

  /** Waits for the events queued and in flight (for shutdown). */
  async flush(): Promise<void> {
    await this.#queue.onIdle();
  }

  /**
   * Queues an event; a few are sent at a time, so that a burst neither floods the apiserver nor
   * holds thousands of requests in memory. Past the backlog limit events are dropped and counted.
   */
  #record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
    if (!this.#allowance.take(`${target.uid ?? `${target.kind}/${target.namespace}/${target.name}`}|${type}`)) {
      this.#filtered++;
      return;
    }
    if (this.#queue.size >= MAX_BACKLOG) {
      if (this.#dropped++ % MAX_BACKLOG === 0)
        this.#logger.warn({ dropped: this.#dropped, backlog: this.#queue.size }, 'too many events waiting to be recorded; dropping some');
      return;
    }
    void this.#queue.add(() =>
      this.#send(target, type, reason, message.slice(0, 1024)).catch((err: unknown) => {
        this.#logger.warn({ err, reason, object: `${target.kind}/${target.namespace}/${target.name}` }, 'could not record event');
      }),
    );
  }

  async #send(target: EventTarget, type: string, reason: string, message: string): Promise<void> {
    const namespace = target.namespace || 'default';
    const foldKey = JSON.stringify([target.uid ?? `${target.kind}/${namespace}/${target.name}`, type, reason, message]);
    const now = new Date();
    const folded = this.#folded.get(foldKey);
    if (folded && now.getTime() - folded.lastSent < FOLD_WINDOW_MS) {
      folded.count++;
      folded.lastSent = now.getTime();
      // A repeat sent while the first is still being created waits for its name.
      const name = await folded.name;
      if (name !== undefined) {
        // The count as it is now: repeats patching at once all write the latest, whatever their order.
        await kubeRequest(this.#kc, {
          method: 'PATCH',
          path: `/api/v1/namespaces/${seg(folded.namespace)}/events/${seg(name)}`,
          body: [
            { op: 'replace', path: '/count', value: folded.count },
            { op: 'replace', path: '/lastTimestamp', value: now.toISOString() },
          ],
          contentType: PatchType.Json,
        });
        return;
      }
    }
    const event: CoreV1Event = {
      metadata: { generateName: `${target.name}.`, namespace },
      involvedObject: {
        apiVersion: target.apiVersion,
        kind: target.kind,
        name: target.name,
        namespace: target.namespace || undefined,
        uid: target.uid,
        resourceVersion: target.resourceVersion,
      },
      reason,
      message,
      type,
      source: { component: COMPONENT },
      reportingComponent: COMPONENT,
      reportingInstance: COMPONENT,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    const created = kubeRequest<CoreV1Event>(this.#kc, {
      method: 'POST',
      path: `/api/v1/namespaces/${seg(namespace)}/events`,
      body: event,
    });
    // Known before it is created, so that a repeat sent meanwhile folds into it.
    if (this.#folded.size >= MAX_FOLDED) this.#folded.clear();
    this.#folded.set(foldKey, {
      name: created.then(
        (e) => e.metadata?.name ?? '',
        () => undefined,
      ),
      namespace,
      count: 1,
      lastSent: now.getTime(),
    });
    await created;
  }
}

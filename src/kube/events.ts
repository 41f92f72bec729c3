/**
 * Kubernetes events on our objects, core/v1 style so `kubectl describe` shows them. Repeats of the
 * same event on the same object are folded into one with a count, as client-go's recorder does,
 * so a retrying failure does not flood the API server.
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
  readonly name: string;
  readonly namespace: string;
  count: number;
  lastSent: number;
}

const COMPONENT = 'kube-registrar';
/** Repeats within this window update the existing event instead of creating a new one. */
const FOLD_WINDOW_MS = 10 * 60_000;
const MAX_FOLDED = 4096;
/** Events sent to the apiserver at once. */
const SEND_CONCURRENCY = 4;
/** Events waiting to be sent beyond which new ones are dropped (as client-go's broadcaster does when its queue is full). */
const MAX_BACKLOG = 1000;

/** An {@link EventRecorder} writing to the API server; failures are logged, never thrown. */
export class KubeEventRecorder implements EventRecorder {
  readonly #kc: KubeConfig;
  readonly #logger: Logger;
  readonly #folded = new Map<string, Folded>();
  readonly #queue = new PQueue({ concurrency: SEND_CONCURRENCY });
  #dropped = 0;

  constructor(kc: KubeConfig, logger: Logger) {
    this.#kc = kc;
    this.#logger = logger;
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

  /** Waits for the events queued and in flight (for shutdown). */
  async flush(): Promise<void> {
    await this.#queue.onIdle();
  }

  /**
   * Queues an event; a few are sent at a time, so that a burst neither floods the apiserver nor
   * holds thousands of requests in memory. Past the backlog limit events are dropped and counted.
   */
  #record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
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
      await kubeRequest(this.#kc, {
        method: 'PATCH',
        path: `/api/v1/namespaces/${seg(folded.namespace)}/events/${seg(folded.name)}`,
        body: [
          { op: 'replace', path: '/count', value: folded.count },
          { op: 'replace', path: '/lastTimestamp', value: now.toISOString() },
        ],
        contentType: PatchType.Json,
      });
      return;
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
    const created = await kubeRequest<CoreV1Event>(this.#kc, {
      method: 'POST',
      path: `/api/v1/namespaces/${seg(namespace)}/events`,
      body: event,
    });
    if (this.#folded.size >= MAX_FOLDED) this.#folded.clear();
    this.#folded.set(foldKey, { name: created.metadata?.name ?? '', namespace, count: 1, lastSent: now.getTime() });
  }
}

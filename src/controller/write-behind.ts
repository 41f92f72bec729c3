/**
 * Write-behind of ServiceInstance finalizers and status: the reconciler hands them over and goes
 * on to the next key, so registry entries never wait for apiserver writes (a cold start or the
 * recovery after an outage writes entries at the registry's rate, statuses follow at the
 * apiserver's).
 *
 * Per key only the newest status waits (an older one is replaced, never written), a key is never
 * written twice at once, and a failed write is retried with backoff by the keyed work queue until
 * it lands or is superseded. Each write reads the object from the cache when it runs, so the
 * finalizer patch carries the newest resourceVersion and the status patch removes exactly the
 * fields the stored status has and the new one lacks.
 */
import type { Logger } from 'pino';
import type { ServiceInstance, ServiceInstanceStatus } from '../api/v1alpha1/types.ts';
import { isConflict } from '../kube/custom-objects.ts';
import { objectKey } from '../kube/informer.ts';
import { WorkQueue, type QueueObserver } from './queue.ts';
import type { ServiceInstanceWriter } from './service-instance-reconciler.ts';

/** The writes behind: what the apiserver is actually sent. */
export interface ServiceInstanceApi {
  addFinalizer(si: ServiceInstance, finalizer: string): Promise<unknown>;
  removeFinalizer(si: ServiceInstance, finalizer: string): Promise<void>;
  patchStatus(si: ServiceInstance, status: ServiceInstanceStatus): Promise<void>;
}

/** Options of {@link WriteBehind}. */
export interface WriteBehindOptions {
  readonly api: ServiceInstanceApi;
  /** The cached object of a key (undefined once it is gone). */
  readonly lookup: (key: string) => ServiceInstance | undefined;
  readonly logger: Logger;
  /** Writes in flight at most. */
  readonly concurrency: number;
  readonly observer?: QueueObserver;
  /** How long a written status stands in for the cached one at most; defaults to {@link WRITTEN_MEMORY_MS}. */
  readonly writtenMemoryMs?: number;
}

/** How long a written status stands in for the cached one at most. */
const WRITTEN_MEMORY_MS = 30_000;

/**
 * Whether two statuses say the same: equal as JSON, whatever the order of their keys (a field set
 * to undefined counts as absent, and no status as an empty one). Compared in place: every resync
 * of every ServiceInstance asks, and serialising both sides each time was garbage in bulk.
 */
export function sameStatus(a: unknown, b: unknown): boolean {
  return sameJson(a ?? {}, b ?? {});
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i] ?? null, b[i] ?? null)) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let fields = 0;
  for (const key in x) {
    if (!Object.hasOwn(x, key) || x[key] === undefined) continue;
    fields++;
    if (!Object.hasOwn(y, key) || !sameJson(x[key], y[key])) return false;
  }
  for (const key in y) if (Object.hasOwn(y, key) && y[key] !== undefined) fields--;
  return fields === 0;
}

/**
 * Finalizer and status writes of ServiceInstances, done behind the reconciler's back, in two lanes:
 * statuses (what users and the Registry's counts read) with the full concurrency, finalizers with a
 * quarter of it, and with one at a time while statuses wait. A cold start or a burst of new
 * ServiceInstances costs two apiserver writes each; this way the apiserver's rate goes to the
 * statuses first and the finalizers follow (until one lands, the reconciler remembers where it
 * wrote, and the garbage collector removes what a ServiceInstance deleted meanwhile left).
 */
export class WriteBehind implements ServiceInstanceWriter {
  readonly #o: WriteBehindOptions;
  readonly #statuses = new Map<string, ServiceInstanceStatus>();
  readonly #finalizers = new Map<string, string>();
  /** Statuses written that the cache may not show yet, so a reconcile in between does not write them again. */
  readonly #written = new Map<string, { status: ServiceInstanceStatus; at: number }>();
  readonly #statusQueue: WorkQueue;
  readonly #finalizerQueue: WorkQueue;
  readonly #memoryMs: number;
  /** Finalizer writes at once while no status waits. */
  readonly #finalizerConcurrency: number;
  /** Set while the finalizer lane is held to one write because statuses wait. */
  #statusesFirst: Promise<void> | undefined;
  /** Forgets the written statuses past {@link WRITTEN_MEMORY_MS}; set while any is remembered. */
  #forgetTimer: NodeJS.Timeout | undefined;

  constructor(options: WriteBehindOptions) {
    this.#o = options;
    this.#memoryMs = options.writtenMemoryMs ?? WRITTEN_MEMORY_MS;
    const queueOptions = (concurrency: number) => ({
      concurrency,
      baseBackoffMs: 500,
      maxBackoffMs: 30_000,
      observer: {
        ...options.observer,
        error: (key: string, err: unknown, retryInMs: number | undefined) => {
          options.observer?.error?.(key, err, retryInMs);
          options.logger.warn({ serviceInstance: key, err, retryInMs }, 'ServiceInstance write failed; retrying');
        },
      },
    });
    this.#statusQueue = new WorkQueue((key) => this.#writeStatus(key), queueOptions(options.concurrency));
    this.#finalizerConcurrency = Math.max(1, Math.floor(options.concurrency / 4));
    this.#finalizerQueue = new WorkQueue((key) => this.#writeFinalizer(key), queueOptions(this.#finalizerConcurrency));
  }

  /** Finalizer writes allowed at once now: one while statuses wait, else a quarter of the concurrency. */
  get finalizerConcurrency(): number {
    return this.#finalizerQueue.concurrency;
  }

  /** Writes waiting or running. */
  get depth(): number {
    return this.#statusQueue.depth + this.#finalizerQueue.depth;
  }

  /** Resolves when no status write is waiting or under way (finalizers may still be). */
  async statusesWritten(): Promise<void> {
    await this.#statusQueue.idle();
  }

  /** Queues the finalizer; resolves at once. */
  addFinalizer(si: ServiceInstance, finalizer: string): Promise<unknown> {
    const key = objectKey(si);
    this.#finalizers.set(key, finalizer);
    this.#finalizerQueue.add(key);
    return Promise.resolve(undefined);
  }

  /**
   * Removes the finalizer now (the object is let go only after its entries are removed, so this
   * one is not deferred); a queued status of the object is dropped, the object is going.
   */
  async removeFinalizer(si: ServiceInstance, finalizer: string): Promise<void> {
    const key = objectKey(si);
    this.#statuses.delete(key);
    this.#finalizers.delete(key);
    this.#written.delete(key);
    await this.#o.api.removeFinalizer(si, finalizer);
  }

  /** Queues the status, replacing one still waiting; resolves at once. */
  patchStatus(si: ServiceInstance, status: ServiceInstanceStatus): Promise<void> {
    const key = objectKey(si);
    this.#statuses.set(key, status);
    this.#statusQueue.add(key);
    this.#holdFinalizers();
    return Promise.resolve();
  }

  /** Holds the finalizer lane to one write at a time until no status waits or is being written. */
  #holdFinalizers(): void {
    if (this.#statusesFirst !== undefined) return;
    this.#finalizerQueue.concurrency = 1;
    this.#statusesFirst = this.#statusQueue.idle().then(() => {
      this.#statusesFirst = undefined;
      this.#finalizerQueue.concurrency = this.#finalizerConcurrency;
    });
  }

  /** The status queued for the object and not yet written, if any: what its status is about to be. */
  intendedStatus(si: ServiceInstance): ServiceInstanceStatus | undefined {
    const key = objectKey(si);
    const pending = this.#statuses.get(key);
    if (pending) return pending;
    const written = this.#written.get(key);
    if (!written) return undefined;
    if (Date.now() - written.at <= this.#memoryMs && !sameStatus(written.status, si.status)) return written.status;
    this.#written.delete(key);
    return undefined;
  }

  /** Stops taking writes and waits for the running ones; what still waits is dropped (a successor writes it again). */
  async shutdown(): Promise<void> {
    await Promise.all([this.#statusQueue.shutdown(), this.#finalizerQueue.shutdown()]);
    this.#statuses.clear();
    this.#finalizers.clear();
    this.#written.clear();
    clearTimeout(this.#forgetTimer);
    this.#forgetTimer = undefined;
  }

  async #writeFinalizer(key: string): Promise<undefined> {
    const finalizer = this.#finalizers.get(key);
    if (finalizer === undefined) return undefined;
    this.#finalizers.delete(key);
    const si = this.#o.lookup(key);
    if (!si || si.metadata?.deletionTimestamp || (si.metadata?.finalizers ?? []).includes(finalizer)) return undefined;
    try {
      await this.#o.api.addFinalizer(si, finalizer);
      return undefined;
    } catch (err: unknown) {
      if (!this.#finalizers.has(key)) this.#finalizers.set(key, finalizer);
      // The cached object was stale: retry (with backoff) once the cache has the newer one.
      if (isConflict(err)) throw new Error(`adding the finalizer to ServiceInstance ${key}: the object changed meanwhile`, { cause: err });
      throw err;
    }
  }

  async #writeStatus(key: string): Promise<undefined> {
    const pending = this.#statuses.get(key);
    if (!pending) return undefined;
    this.#statuses.delete(key);
    const si = this.#o.lookup(key);
    if (!si) {
      this.#written.delete(key);
      return undefined;
    }
    if (sameStatus(pending, si.status)) {
      this.#written.delete(key);
      return undefined;
    }
    try {
      await this.#o.api.patchStatus(si, pending);
    } catch (err: unknown) {
      // Put back unless a newer status was queued meanwhile.
      if (!this.#statuses.has(key)) this.#statuses.set(key, pending);
      throw err;
    }
    this.#remember(key, pending);
    return undefined;
  }

  /** Written statuses remembered now (each until the cache shows it, or for the memory period). */
  get remembered(): number {
    return this.#written.size;
  }

  /**
   * Remembers a written status until the cache shows it, for at most {@link WRITTEN_MEMORY_MS}
   * (the cache is behind by milliseconds; the bound keeps the memory from growing with the objects).
   * Expired ones are forgotten by a timer too: after the initial sync of 10,000 ServiceInstances
   * no status may be written for a whole resync period, and the 10,000 statuses
   * it wrote (about 11 MB) would otherwise stay until each object's next reconcile.
   */
  #remember(key: string, status: ServiceInstanceStatus): void {
    this.#written.delete(key);
    this.#written.set(key, { status, at: Date.now() });
    this.#forgetExpired();
  }

  /** Forgets the statuses remembered longer than the memory period, and sets the timer for the next. */
  #forgetExpired(): void {
    const now = Date.now();
    for (const [oldest, { at }] of this.#written) {
      if (now - at <= this.#memoryMs) break;
      this.#written.delete(oldest);
    }
    // Insertion order is write order: the first left is the next to expire.
    const next = this.#written.values().next();
    if (next.done === true) {
      clearTimeout(this.#forgetTimer);
      this.#forgetTimer = undefined;
      return;
    }
    if (this.#forgetTimer !== undefined) return;
    this.#forgetTimer = setTimeout(
      () => {
        this.#forgetTimer = undefined;
        this.#forgetExpired();
      },
      next.value.at + this.#memoryMs - now + 1,
    );
    this.#forgetTimer.unref();
  }
}

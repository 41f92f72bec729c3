/**
 * The watch cache of one service: what the registry last said, how long ago it was in step with
 * it, and who wants to hear about changes. The client keeps one per service and shares it between
 * every caller (selection, the gRPC resolver, `instances()`), so a process watches each service
 * once however many call sites use it.
 *
 * During a registry outage the cache keeps the last set it had: a consumer that cannot reach its
 * registry goes on calling the instances it knew, which are far more likely to be alive than not.
 * `staleness()` says how long that has been going on.
 */
import type { Clock } from './clock.ts';
import { RegistryUnavailableError } from './errors.ts';
import type { Instance } from './instance.ts';
import type { DiscoverySource, SourceWatch } from './source.ts';

/** How current a cache is. */
export interface Staleness {
  /** True once the registry has been read at least once. */
  readonly loaded: boolean;
  /** True while the source follows the registry (watch connected, last read succeeded). */
  readonly inSync: boolean;
  /** How long the cache has been out of step with the registry, ms (0 while in sync). */
  readonly staleForMs: number;
  /** The registry position of the last update (etcd revision, Consul index). */
  readonly revision: string | undefined;
  /** Why the source is out of step, while it is. */
  readonly lastError: unknown;
}

/** Called with the new set after every change. */
export type CacheListener = (instances: readonly Instance[]) => void;

const NONE: readonly Instance[] = Object.freeze([]);

/** The watch cache of one service. */
export class ServiceCache {
  readonly service: string;
  readonly namespace: string;
  readonly #clock: Clock;
  readonly #watch: SourceWatch;
  readonly #listeners = new Set<CacheListener>();
  readonly #loaded: Promise<void>;
  #resolveLoaded!: () => void;
  #instances: readonly Instance[] = NONE;
  #revision: string | undefined;
  #loadedOnce = false;
  /** Clock time the cache fell out of step, or undefined while in step. */
  #outOfStepSince: number | undefined;
  #lastError: unknown;
  #closed = false;

  /** Starts following `service` through `source` at once. */
  constructor(source: DiscoverySource, service: string, clock: Clock) {
    this.service = service;
    this.namespace = source.namespace;
    this.#clock = clock;
    this.#outOfStepSince = clock.now(); // not in step until the first read
    this.#loaded = new Promise((resolve) => (this.#resolveLoaded = resolve));
    this.#watch = source.watch(service, {
      update: (instances, revision) => this.#update(instances, revision),
      disconnected: (error) => this.#disconnected(error),
    });
  }

  /** The last known instances (empty until the first read). */
  get instances(): readonly Instance[] {
    return this.#instances;
  }

  /** Whether the registry has been read at least once. */
  get loaded(): boolean {
    return this.#loadedOnce;
  }

  /** How current the cache is. */
  staleness(): Staleness {
    const since = this.#outOfStepSince;
    return {
      loaded: this.#loadedOnce,
      inSync: since === undefined,
      staleForMs: since === undefined ? 0 : Math.max(0, this.#clock.now() - since),
      revision: this.#revision,
      lastError: since === undefined ? undefined : this.#lastError,
    };
  }

  /**
   * Resolves once the registry has been read (at once if it has). Rejects with a
   * `RegistryUnavailableError` after `timeoutMs` if it still has not, saying why.
   */
  async loadedWithin(timeoutMs: number): Promise<void> {
    if (this.#loadedOnce) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#unavailable(timeoutMs)), timeoutMs);
    });
    try {
      await Promise.race([this.#loaded, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Calls `listener` after every change; returns the unsubscribe function. */
  subscribe(listener: CacheListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops the watch; the last set stays readable. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    await this.#watch.close();
  }

  #update(instances: readonly Instance[], revision: string): void {
    if (this.#closed) return;
    this.#outOfStepSince = undefined;
    this.#lastError = undefined;
    this.#revision = revision;
    const changed = !this.#loadedOnce || !sameInstances(this.#instances, instances);
    if (changed) this.#instances = Object.freeze([...instances]);
    if (!this.#loadedOnce) {
      this.#loadedOnce = true;
      this.#resolveLoaded();
    }
    if (!changed) return;
    for (const listener of this.#listeners) listener(this.#instances);
  }

  #disconnected(error: unknown): void {
    if (this.#closed) return;
    this.#outOfStepSince ??= this.#clock.now();
    this.#lastError = error;
  }

  #unavailable(timeoutMs: number): RegistryUnavailableError {
    const why = this.#lastError === undefined ? 'no answer yet' : describe(this.#lastError);
    return new RegistryUnavailableError(
      `could not read ${this.service} in namespace ${this.namespace} within ${timeoutMs} ms (${why}): ` +
        'check that the registry is reachable from this process and that its credentials allow reading; the client keeps retrying',
      { cause: this.#lastError },
    );
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Same instances in the same order with the same fields: a registry response that changed nothing. */
function sameInstances(a: readonly Instance[], b: readonly Instance[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (JSON.stringify(a[i]) !== JSON.stringify(b[i])) return false;
  }
  return true;
}

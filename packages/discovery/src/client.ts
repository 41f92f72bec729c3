/**
 * The discovery client: one per registry per process. It keeps a watch cache and a selector per
 * service, created on first use and shared by every caller, and hands out instances:
 * `instances()` lists them (GetNodes), `pick()` chooses one (Resolve/Select), `call()` runs a
 * request against one with timeouts, retries and breakers, and `register()` publishes this
 * process's own endpoint.
 */
import type { Strategy } from './balancers/index.ts';
import { ServiceCache, type Staleness } from './cache.ts';
import { monotonicClock, type Clock } from './clock.ts';
import { DiscoveryConfigError } from './errors.ts';
import type { Instance } from './instance.ts';
import type { OutlierOptions } from './outlier.ts';
import type { PeakEwmaOptions } from './peak-ewma.ts';
import { mathRandom, type RandomSource } from './random.ts';
import { InstanceSelector } from './selector.ts';
import type { DiscoverySource, Registrar, Registration, SelfEndpoint } from './source.ts';
import type { TagFilter } from './tags.ts';

/** Options of a {@link DiscoveryClient}. */
export interface DiscoveryClientOptions {
  /** Where instances are read from: `etcdSource(...)`, `consulSource(...)`. */
  readonly source: DiscoverySource;
  /** Where `register()` writes; required only to self-register. */
  readonly registrar?: Registrar;
  /** Strategy of every service's selector; `setStrategy` changes it later. Default `weighted-round-robin`. */
  readonly strategy?: Strategy;
  /** Outlier ejection options of every selector, or `false` to never eject. */
  readonly outlier?: OutlierOptions | false;
  /** Latency estimate options of every selector. */
  readonly latency?: PeakEwmaOptions;
  /**
   * How long the first read of a service may take before `instances()`, `pick()` and `call()`
   * give up with a `RegistryUnavailableError`. Default 10 s. Later reads never block: the cache
   * serves what it has.
   */
  readonly initialReadTimeoutMs?: number;
  /** Default: `performance.now()`. */
  readonly clock?: Clock;
  /** Default: `Math.random`. */
  readonly random?: RandomSource;
}

const DEFAULT_INITIAL_READ_TIMEOUT_MS = 10_000;

/** One service as the client follows it. */
interface Followed {
  readonly cache: ServiceCache;
  readonly selector: InstanceSelector;
}

/** Finds, picks and calls instances of services in one registry namespace. */
export class DiscoveryClient {
  readonly #options: DiscoveryClientOptions;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #initialReadTimeoutMs: number;
  readonly #services = new Map<string, Followed>();
  readonly #registrations = new Set<Registration>();
  #strategy: Strategy | undefined;
  #closed = false;

  constructor(options: DiscoveryClientOptions) {
    this.#options = options;
    this.#clock = options.clock ?? monotonicClock;
    this.#random = options.random ?? mathRandom;
    this.#strategy = options.strategy;
    this.#initialReadTimeoutMs = options.initialReadTimeoutMs ?? DEFAULT_INITIAL_READ_TIMEOUT_MS;
    if (!(this.#initialReadTimeoutMs > 0)) {
      throw new DiscoveryConfigError(`initialReadTimeoutMs is ${this.#initialReadTimeoutMs}: it must be a positive number of milliseconds`);
    }
  }

  /** The registry namespace every read is pinned to. */
  get namespace(): string {
    return this.#options.source.namespace;
  }

  /** Every instance of `service` matching `tags` (weight 0 left out), after the first read of it. */
  async instances(service: string, tags?: TagFilter): Promise<Instance[]> {
    const followed = await this.#loaded(service);
    return followed.selector.instances(tags);
  }

  /**
   * One instance of `service` matching `tags`, chosen by the strategy. Throws `NoInstanceError`
   * when nothing matches. Report how the call went with `record()`.
   */
  async pick(service: string, tags?: TagFilter): Promise<Instance> {
    const followed = await this.#loaded(service);
    return followed.selector.pick(tags);
  }

  /** The selector of `service` (created and watched on first use), for `acquire`/`release` and `inspect`. */
  selector(service: string): InstanceSelector {
    return this.#follow(service).selector;
  }

  /** The watch cache of `service` (created on first use). */
  cache(service: string): ServiceCache {
    return this.#follow(service).cache;
  }

  /** Resolves once `service` has been read, or rejects with `RegistryUnavailableError` after the initial read timeout. */
  async ready(service: string): Promise<void> {
    await this.#loaded(service);
  }

  /** How current the cache of `service` is. */
  staleness(service: string): Staleness {
    return this.#follow(service).cache.staleness();
  }

  /** Switches the strategy of every service, now and for services followed later. */
  setStrategy(strategy: Strategy): void {
    for (const { selector } of this.#services.values()) selector.setStrategy(strategy);
    this.#strategy = strategy;
  }

  /**
   * Publishes this process's endpoint in the registry, kept alive until the registration (or the
   * client) is closed. Close it on SIGTERM: the entry then disappears at once instead of at the
   * end of its lease or TTL.
   */
  async register(endpoint: SelfEndpoint): Promise<Registration> {
    this.#checkOpen();
    const registrar = this.#options.registrar;
    if (registrar === undefined) {
      throw new DiscoveryConfigError(
        'register() needs a registrar: create the client with etcdDiscovery()/consulDiscovery(), or pass registrar',
      );
    }
    const registration = await registrar.register(endpoint);
    const tracked: Registration = {
      id: registration.id,
      close: async () => {
        this.#registrations.delete(tracked);
        await registration.close();
      },
    };
    this.#registrations.add(tracked);
    return tracked;
  }

  /** Removes this client's registrations, stops every watch and closes the source. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const results = await Promise.allSettled([
      ...[...this.#registrations].map((r) => r.close()),
      ...[...this.#services.values()].map((f) => f.cache.close()),
    ]);
    this.#services.clear();
    await this.#options.source.close();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  async #loaded(service: string): Promise<Followed> {
    const followed = this.#follow(service);
    await followed.cache.loadedWithin(this.#initialReadTimeoutMs);
    return followed;
  }

  #follow(service: string): Followed {
    this.#checkOpen();
    let followed = this.#services.get(service);
    if (followed !== undefined) return followed;
    const selector = new InstanceSelector({
      service,
      namespace: this.namespace,
      ...(this.#strategy !== undefined ? { strategy: this.#strategy } : {}),
      ...(this.#options.outlier !== undefined ? { outlier: this.#options.outlier } : {}),
      ...(this.#options.latency !== undefined ? { latency: this.#options.latency } : {}),
      clock: this.#clock,
      random: this.#random,
    });
    const cache = new ServiceCache(this.#options.source, service, this.#clock);
    cache.subscribe((instances) => selector.update(instances.filter(balanceable)));
    selector.update(cache.instances.filter(balanceable));
    followed = { cache, selector };
    this.#services.set(service, followed);
    return followed;
  }

  #checkOpen(): void {
    if (this.#closed) throw new DiscoveryConfigError('this DiscoveryClient is closed: create a new one');
  }
}

/**
 * Whether an instance from the registry can be balanced at all. Sources decode weights as the
 * operator writes them (0-1000); a hand-written entry with a negative weight is left out rather
 * than refusing the whole update (which would freeze the service at its previous set).
 */
function balanceable(instance: Instance): boolean {
  return instance.weight === undefined || (Number.isFinite(instance.weight) && instance.weight >= 0);
}

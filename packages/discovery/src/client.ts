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
import { instanceId, type Instance } from './instance.ts';
import type { OutlierOptions } from './outlier.ts';
import type { PeakEwmaOptions } from './peak-ewma.ts';
import { mathRandom, type RandomSource } from './random.ts';
import { InstanceBreakers, resolveBreakerOptions } from './call/breakers.ts';
import { runCall, type CallFunction, type ServiceCallContext } from './call/call.ts';
import { DEFAULT_CALL_POLICY, resolvePolicy, type CallDefaults, type CallOptions, type ResolvedPolicy } from './call/options.ts';
import { RetryBudget, resolveRetryBudgetOptions } from './call/retry-budget.ts';
import type { DiscoveryHooks, DiscoveryLogger, ObservedClient } from './observability/hooks.ts';
import { Observer } from './observability/observer.ts';
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
  /** Defaults of every `call()`, the retry budget of each service and the breaker of each instance. */
  readonly call?: CallDefaults;
  /** Where to log ejections, breakers, denied retries and registry outages. Pino-compatible. Default: nowhere. */
  readonly logger?: DiscoveryLogger;
  /** Metrics hooks, e.g. `prometheusHooks(registry)` from `@kube-registrar/discovery/prometheus`. */
  readonly hooks?: DiscoveryHooks;
}

const DEFAULT_INITIAL_READ_TIMEOUT_MS = 10_000;
const EMPTY_OPTIONS: CallOptions = Object.freeze({});
const NOT_FOLLOWED: Staleness = Object.freeze({ loaded: false, inSync: false, staleForMs: 0, revision: undefined, lastError: undefined });

/** One service as the client follows it. */
interface Followed {
  readonly cache: ServiceCache;
  readonly selector: InstanceSelector;
  /** What `call()` keeps for the service (budget, breakers), made by the first call. */
  calls?: ServiceCallContext;
}

/** Finds, picks and calls instances of services in one registry namespace. */
export class DiscoveryClient {
  readonly #options: DiscoveryClientOptions;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #initialReadTimeoutMs: number;
  readonly #source: DiscoverySource;
  readonly #observer: Observer;
  readonly #callPolicy: ResolvedPolicy;
  /** Aborted by `close()`: ends calls under way and their waits between attempts. */
  readonly #closing = new AbortController();
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
    // Checked now, so that a wrong option fails at start-up rather than on the first call.
    this.#callPolicy = resolvePolicy(options.call ?? {}, DEFAULT_CALL_POLICY);
    if (options.call?.retryBudget) resolveRetryBudgetOptions(options.call.retryBudget);
    if (options.call?.breaker) resolveBreakerOptions(options.call.breaker);
    this.#observer = new Observer(options.logger, options.hooks, this.#clock, options.source.namespace);
    this.#source = this.#observer.observe(options.source);
    options.hooks?.attach?.(this.#observed());
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
   * when nothing matches. Report how the call went with `selector(service).record()`.
   */
  async pick(service: string, tags?: TagFilter): Promise<Instance> {
    const followed = await this.#loaded(service);
    return followed.selector.pick(tags);
  }

  /**
   * Runs `fn` against an instance of `service` and returns its first success: each attempt has a
   * timeout (its signal aborts at the deadline), a failed attempt is retried on another instance
   * after a backoff while `attempts`, `retryable` and the service's retry budget allow, and an
   * instance whose circuit breaker is open gets no calls while others are available. Instances
   * are acquired and released, so load-aware strategies see calls in flight and their latency,
   * and failures feed outlier ejection.
   *
   * Throws `NoInstanceError` when nothing matches, `CallFailedError` (every attempt, and the last
   * error as `cause`) when the call gives up, an error `isFailure` says is not a failure as is,
   * and the signal's reason when `options.signal` aborts.
   */
  async call<T>(service: string, fn: CallFunction<T>, options: CallOptions = EMPTY_OPTIONS): Promise<T> {
    const followed = await this.#loaded(service);
    const policy = options === EMPTY_OPTIONS ? this.#callPolicy : resolvePolicy(options, this.#callPolicy);
    const signal = options.signal === undefined ? this.#closing.signal : AbortSignal.any([options.signal, this.#closing.signal]);
    return runCall(this.#callContext(service, followed), fn, { tags: options.tags, policy, signal });
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
    this.#closing.abort(new DiscoveryConfigError('the DiscoveryClient was closed while the call was under way'));
    const results = await Promise.allSettled([
      ...[...this.#registrations].map((r) => r.close()),
      ...[...this.#services.values()].map((f) => f.cache.close()),
    ]);
    this.#services.clear();
    await this.#source.close();
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
      onEjection: (instance, ejectedForMs) => this.#observer.ejected(service, instance, ejectedForMs),
    });
    const cache = new ServiceCache(this.#source, service, this.#clock);
    const created: Followed = { cache, selector };
    cache.subscribe((all) => {
      const instances = all.filter(balanceable);
      selector.update(instances);
      created.calls?.breakers?.retain(new Set(instances.map(instanceId)));
    });
    selector.update(cache.instances.filter(balanceable));
    followed = created;
    this.#services.set(service, followed);
    return followed;
  }

  #callContext(service: string, followed: Followed): ServiceCallContext {
    if (followed.calls !== undefined) return followed.calls;
    const { retryBudget = {}, breaker = {} } = this.#options.call ?? {};
    followed.calls = {
      service,
      namespace: this.namespace,
      selector: followed.selector,
      budget: retryBudget === false ? undefined : new RetryBudget(retryBudget, this.#clock),
      breakers:
        breaker === false
          ? undefined
          : new InstanceBreakers(breaker, (instance, state) => this.#observer.breaker(service, instance, state)),
      clock: this.#clock,
      observer: this.#observer,
    };
    return followed.calls;
  }

  /** What hooks may read: followed services, their staleness and instance states. */
  #observed(): ObservedClient {
    return {
      kind: this.#options.source.kind,
      namespace: this.namespace,
      services: () => [...this.#services.keys()],
      staleness: (service) => this.#services.get(service)?.cache.staleness() ?? NOT_FOLLOWED,
      inspect: (service) => this.#services.get(service)?.selector.inspect() ?? [],
    };
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

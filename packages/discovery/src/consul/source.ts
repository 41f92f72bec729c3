/**
 * `consulSource()`: reads what the kube-registrar operator registers in Consul, for one registry
 * namespace. It reads `GET /v1/health/service/<name>?passing=true`, so an instance is listed only
 * while all of its checks pass: the operator's lease (alias of its heartbeat), the check that keeps
 * weight-0 endpoints out, the check that marks endpoints failing their active health check.
 *
 * Nothing polls at steady state: each followed service holds one blocking query open, which
 * Consul answers when the service changes or after `waitSeconds`.
 */
import { ExponentialBackoff, type IBackoffFactory } from 'cockatiel';

import { monotonicClock, type Clock } from '../clock.ts';
import { DiscoveryConfigError } from '../errors.ts';
import { resolveNamespace, type DiscoverySource, type SourceListener, type SourceWatch } from '../source.ts';
import { MAX_WAIT_SECONDS } from './blocking.ts';
import { ConsulHttp, type ConsulConnectionOptions } from './http.ts';
import { silentLogger, type DiscoveryLogger } from '../logger.ts';
import { consulNamespaceOf, consulServiceName, DEFAULT_SERVICE_NAME_TEMPLATE, registryFilter } from './naming.ts';
import { ConsulServiceWatch } from './watch.ts';

/** Options of {@link consulSource}. */
export interface ConsulSourceOptions extends ConsulConnectionOptions {
  /** Datacenter to read (`dc`); default the agent's own. */
  readonly datacenter?: string;
  /**
   * Consul Enterprise namespace: the Registry's `spec.consul.namespace` template over
   * `{namespace}`. Absent or '' on open-source Consul.
   */
  readonly consulNamespace?: string;
  /** The Registry's `spec.consul.serviceName` template over `{service}` and `{namespace}`; default `{service}`. */
  readonly serviceName?: string;
  /** Registry namespace to read: default `$KUBE_REGISTRAR_NAMESPACE`, else `default`. */
  readonly namespace?: string;
  /** How long Consul may hold a blocking query open, 1-600 s; default 300. */
  readonly waitSeconds?: number;
  /** Least time between the starts of two queries of one service, ms; default 250. */
  readonly minQueryIntervalMs?: number;
  /** Deadline of a plain read (the first one, and after a failure), ms; default 10000. */
  readonly readTimeoutMs?: number;
  /** Delays between retries after failures; default exponential from 250 ms to 15 s with decorrelated jitter. */
  readonly backoff?: IBackoffFactory<unknown>;
  readonly clock?: Clock;
  readonly logger?: DiscoveryLogger;
}

/** Default `wait` of blocking queries: Consul's maximum is 600 s, its default 300 s. */
export const DEFAULT_WAIT_SECONDS = 300;
const DEFAULT_MIN_QUERY_INTERVAL_MS = 250;
const DEFAULT_READ_TIMEOUT_MS = 10_000;

/** A source reading one registry namespace of one Consul datacenter. See the module comment. */
export function consulSource(options: ConsulSourceOptions): DiscoverySource {
  return new ConsulSource(options);
}

class ConsulSource implements DiscoverySource {
  readonly kind = 'consul';
  readonly namespace: string;
  readonly #http: ConsulHttp;
  readonly #options: ConsulSourceOptions;
  readonly #template: string;
  readonly #query: Record<string, string>;
  readonly #waitSeconds: number;
  readonly #backoff: IBackoffFactory<unknown>;
  readonly #watches = new Set<SourceWatch>();

  constructor(options: ConsulSourceOptions) {
    this.namespace = resolveNamespace(options.namespace);
    this.#options = options;
    this.#http = new ConsulHttp(options);
    this.#template = options.serviceName ?? DEFAULT_SERVICE_NAME_TEMPLATE;
    consulServiceName(this.#template, this.namespace, 'probe'); // refuses a bad template now, not on first use
    this.#query = { dc: options.datacenter ?? '', ns: consulNamespaceOf(options.consulNamespace, this.namespace) };
    this.#waitSeconds = options.waitSeconds ?? DEFAULT_WAIT_SECONDS;
    if (!Number.isInteger(this.#waitSeconds) || this.#waitSeconds < 1 || this.#waitSeconds > MAX_WAIT_SECONDS) {
      throw new DiscoveryConfigError(`waitSeconds is ${this.#waitSeconds}: Consul accepts whole seconds from 1 to ${MAX_WAIT_SECONDS}`);
    }
    this.#backoff = options.backoff ?? new ExponentialBackoff({ initialDelay: 250, maxDelay: 15_000 });
  }

  watch(service: string, listener: SourceListener): SourceWatch {
    const watch = new ConsulServiceWatch(
      {
        http: this.#http,
        name: consulServiceName(this.#template, this.namespace, service),
        query: { ...this.#query, filter: registryFilter(this.namespace, service) },
        waitSeconds: this.#waitSeconds,
        readTimeoutMs: this.#options.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS,
        minQueryIntervalMs: this.#options.minQueryIntervalMs ?? DEFAULT_MIN_QUERY_INTERVAL_MS,
        backoff: this.#backoff,
        clock: this.#options.clock ?? monotonicClock,
        logger: this.#options.logger ?? silentLogger,
        service,
        namespace: this.namespace,
      },
      listener,
    );
    const owned: SourceWatch = {
      close: async () => {
        this.#watches.delete(owned);
        await watch.close();
      },
    };
    this.#watches.add(owned);
    return owned;
  }

  /** Closes every watch still open; the source has no other connection to close. */
  async close(): Promise<void> {
    await Promise.all([...this.#watches].map((w) => w.close()));
  }
}

/**
 * @kube-registrar/discovery: the consumer side of kube-registrar. A `DiscoveryClient` reads one
 * registry namespace of etcd or Consul exactly as the operator writes it (`etcdDiscovery`,
 * `consulDiscovery`), keeps one watch cache per service, picks instances with a tag filter and one
 * of five strategies, ejects instances that keep failing, runs `call()` with timeouts, retries on
 * another instance under a budget and a breaker per instance, and registers this process under a
 * lease or TTL of its own. The ZooKeeper source, the gRPC resolver and the Prometheus hooks have
 * entry points of their own (`/zookeeper`, `/grpc`, `/prometheus`), so their optional peers load
 * only when asked for.
 */
export { InstanceSelector, type CallResult, type InstanceSelectorOptions, type InstanceState } from './selector.ts';
export { STRATEGIES, type Strategy } from './balancers/index.ts';
export { hostPort, instanceId, type Instance } from './instance.ts';
export { formatTags, matchesTags, type TagFilter } from './tags.ts';
export { DEFAULT_OUTLIER, type OutlierOptions } from './outlier.ts';
export { DEFAULT_PEAK_EWMA, type PeakEwmaOptions } from './peak-ewma.ts';
export { monotonicClock, type Clock } from './clock.ts';
export { mathRandom, seededRandom, type RandomSource } from './random.ts';
export { DiscoveryConfigError, DiscoveryError, InvalidInstanceError, NoInstanceError, RegistryUnavailableError } from './errors.ts';
export { DiscoveryClient, type DiscoveryClientOptions } from './client.ts';
export { staticSource, type StaticSourceOptions } from './static-source.ts';
export type { CallFunction } from './call/call.ts';
export type { BackoffOptions, CallDefaults, CallOptions, CallPolicy } from './call/options.ts';
export { CallFailedError, CallTimeoutError, type CallAttempt, type GiveUpReason } from './call/errors.ts';
export { DEFAULT_RETRY_BUDGET, RetryBudget, type RetryBudgetOptions } from './call/retry-budget.ts';
export { DEFAULT_BREAKER, type BreakerOptions, type BreakerState } from './call/breakers.ts';
export type { CallOutcome, DiscoveryHooks, DiscoveryLogger, ObservedClient } from './observability/hooks.ts';
export { ServiceCache, type CacheListener, type Staleness } from './cache.ts';
export {
  DEFAULT_NAMESPACE,
  NAMESPACE_ENV,
  resolveNamespace,
  type DiscoverySource,
  type Registrar,
  type Registration,
  type SelfEndpoint,
  type SourceListener,
  type SourceWatch,
} from './source.ts';
export { consulSource, DEFAULT_WAIT_SECONDS, type ConsulSourceOptions } from './consul/source.ts';
export { consulDiscovery, type ConsulDiscoveryOptions } from './consul/discovery.ts';
export { consulRegistrar, DEFAULT_SELF_TTL_SECONDS, RegistrationConflictError, type ConsulRegistrarOptions } from './consul/registrar.ts';
export { ConsulRequestError, type ConsulConnectionOptions, type ConsulToken } from './consul/http.ts';
export { etcdSource, defaultEtcdBackoff, type EtcdSourceOptions } from './etcd/source.ts';
export { etcdRegistrar, type EtcdRegistrar, type EtcdRegistrarOptions } from './etcd/registrar.ts';
export { etcdDiscovery, type EtcdDiscoveryOptions } from './etcd/discovery.ts';
export { EntryOwnedElsewhereError } from './etcd/errors.ts';
export type { EtcdConnectionOptions } from './etcd/client.ts';
export type { EntryOwner, EtcdValueFormat } from './etcd/record.ts';

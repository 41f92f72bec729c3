/**
 * What the client tells the outside world: a logger (pino-compatible) for people, and metrics
 * hooks for dashboards. Both are optional; `prometheusHooks()` (in
 * `@kube-registrar/discovery/prometheus`) is a ready-made set of hooks.
 */
import type { Staleness } from '../cache.ts';
import type { BreakerState } from '../call/breakers.ts';
import type { Instance } from '../instance.ts';
import type { InstanceState } from '../selector.ts';

export type { DiscoveryLogger } from '../logger.ts';

/**
 * How a `call()` ended:
 * - `success`: an attempt returned;
 * - `error`: an attempt threw an error `isFailure` says is not a failure (an HTTP 404, say), thrown as is;
 * - `failed`: attempts failed and the call gave up (`CallFailedError`);
 * - `timeout`: as `failed`, the last attempt having timed out;
 * - `cancelled`: the caller's signal aborted it (or the client was closed);
 * - `no_instance`: nothing to call (`NoInstanceError`).
 */
export type CallOutcome = 'success' | 'error' | 'failed' | 'timeout' | 'cancelled' | 'no_instance';

/** What hooks may read from the client whenever they like (at scrape time, say). */
export interface ObservedClient {
  /** The kind of registry (`etcd`, `consul`, ...). */
  readonly kind: string;
  /** The registry namespace. */
  readonly namespace: string;
  /** Services followed so far. */
  services(): string[];
  /** How current the cache of a followed service is. */
  staleness(service: string): Staleness;
  /** The selector's view of a followed service's instances. */
  inspect(service: string): InstanceState[];
}

/**
 * Metrics hooks. Every method is optional and must be quick: they run on the call path. One that
 * throws is logged and otherwise ignored.
 */
export interface DiscoveryHooks {
  /** Called once by each client given these hooks, when it is created. */
  attach?(client: ObservedClient): void;
  /** A `call()` ended; `instance` is the one of its last attempt, if any; `seconds` covers every attempt. */
  onCall?(service: string, instance: Instance | undefined, outcome: CallOutcome, seconds: number): void;
  /** A failed attempt on `failed` is being retried (`attempt` is the number of the next one). */
  onRetry?(service: string, failed: Instance, attempt: number): void;
  /** A failed attempt on `failed` was not retried because the service's retry budget is spent. */
  onRetryDenied?(service: string, failed: Instance): void;
  /** Outlier ejection took `instance` out of selection for `ejectedForMs`. */
  onEjection?(service: string, instance: Instance, ejectedForMs: number): void;
  /** The circuit breaker of `instance` changed state. */
  onBreaker?(service: string, instance: Instance, state: BreakerState): void;
  /** The registry answered for `service` with `count` instances (after each change or reconnection). */
  onCacheUpdate?(service: string, count: number): void;
  /** The cache of `service` fell out of step with the registry (`inSync` false, with the error) or caught up. */
  onCacheSync?(service: string, inSync: boolean, error: unknown): void;
}

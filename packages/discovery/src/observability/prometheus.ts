/**
 * Prometheus metrics for the discovery client, as `DiscoveryHooks`. A separate entry point
 * (`@kube-registrar/discovery/prometheus`) because prom-client is an optional peer dependency:
 * a process that does not import this never loads it.
 *
 * ```ts
 * import { prometheusHooks } from '@kube-registrar/discovery/prometheus';
 * const client = etcdDiscovery({ ..., hooks: prometheusHooks(registry) });
 * ```
 *
 * Counters and the histogram move as events happen; `discovery_instances` and
 * `discovery_cache_stale_seconds` are read from the clients at scrape time. Hooks given to
 * several clients sum their instances and report the stalest cache per service.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { DiscoveryHooks, ObservedClient } from './hooks.ts';

/** Options of `prometheusHooks`. */
export interface PrometheusHooksOptions {
  /** Buckets of `discovery_call_duration_seconds`, seconds. Default: prom-client's (5 ms to 10 s). */
  readonly buckets?: number[];
}

/** Hooks that keep the `discovery_*` metrics in `registry`; create them once per registry. */
export function prometheusHooks(registry: Registry, options: PrometheusHooksOptions = {}): DiscoveryHooks {
  const registers = [registry];
  const clients: ObservedClient[] = [];

  const calls = new Counter({
    name: 'discovery_calls_total',
    help: 'call() invocations by how they ended: success, error (not a failure), failed, timeout, cancelled, no_instance.',
    labelNames: ['service', 'outcome'] as const,
    registers,
  });
  const duration = new Histogram({
    name: 'discovery_call_duration_seconds',
    help: 'Duration of call() invocations, every attempt and backoff included.',
    labelNames: ['service'] as const,
    ...(options.buckets !== undefined ? { buckets: options.buckets } : {}),
    registers,
  });
  const retries = new Counter({
    name: 'discovery_retries_total',
    help: 'Retries of failed attempts: sent, or denied because the retry budget was spent.',
    labelNames: ['service', 'result'] as const,
    registers,
  });
  const ejections = new Counter({
    name: 'discovery_ejections_total',
    help: 'Instances ejected by outlier detection.',
    labelNames: ['service'] as const,
    registers,
  });
  const breakerOpens = new Counter({
    name: 'discovery_breaker_open_total',
    help: 'Circuit breakers of instances opened (a trial that fails opens it again).',
    labelNames: ['service'] as const,
    registers,
  });
  const instances: Gauge<'service' | 'state'> = new Gauge({
    name: 'discovery_instances',
    help: 'Instances known per service (state="known"), and those of them ejected (state="ejected").',
    labelNames: ['service', 'state'] as const,
    registers,
    collect() {
      instances.reset(); // services no longer followed disappear
      for (const client of clients) {
        for (const service of client.services()) {
          const states = client.inspect(service);
          instances.inc({ service, state: 'known' }, states.length);
          instances.inc({ service, state: 'ejected' }, states.filter((s) => s.ejected).length);
        }
      }
    },
  });
  const stale: Gauge<'service'> = new Gauge({
    name: 'discovery_cache_stale_seconds',
    help: 'How long the watch cache of a service has been out of step with the registry (0 while in step).',
    labelNames: ['service'] as const,
    registers,
    collect() {
      stale.reset();
      const stalest = new Map<string, number>();
      for (const client of clients) {
        for (const service of client.services()) {
          const seconds = client.staleness(service).staleForMs / 1000;
          stalest.set(service, Math.max(seconds, stalest.get(service) ?? 0));
        }
      }
      for (const [service, seconds] of stalest) stale.set({ service }, seconds);
    },
  });

  return {
    attach: (client) => void clients.push(client),
    onCall: (service, _instance, outcome, seconds) => {
      calls.inc({ service, outcome });
      duration.observe({ service }, seconds);
    },
    onRetry: (service) => retries.inc({ service, result: 'sent' }),
    onRetryDenied: (service) => retries.inc({ service, result: 'denied' }),
    onEjection: (service) => ejections.inc({ service }),
    onBreaker: (service, _instance, state) => {
      if (state === 'open') breakerOpens.inc({ service });
    },
  };
}

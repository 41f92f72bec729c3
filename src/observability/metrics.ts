/**
 * Prometheus metrics (prom-client). One registry per process; collectors are created here and
 * handed to the parts that observe them.
 */
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from 'prom-client';
import type { QueueObserver } from '../controller/queue.ts';

/** The operator's metrics. */
export interface Metrics {
  readonly registry: PromRegistry;
  readonly reconciles: Counter<'outcome'>;
  readonly reconcileDuration: Histogram;
  readonly queueDepth: Gauge;
  readonly queueLatency: Histogram;
  readonly informerErrors: Counter<'informer'>;
  readonly leader: Gauge;
  readonly registryOperations: Counter<'backend' | 'operation' | 'outcome'>;
  readonly registryOperationDuration: Histogram<'backend' | 'operation'>;
  readonly keepaliveFailures: Counter<'backend'>;
  readonly registryEntries: Gauge<'registry'>;
  readonly circuitOpen: Gauge<'registry'>;
  readonly liveBackends: Gauge;
  readonly garbageCollected: Counter<'registry'>;
  readonly liveKeepalives: Gauge<'registry'>;
  readonly healthProbes: Counter<'outcome'>;
  readonly healthProbeDuration: Histogram;
  /** Adapter for the work queue. */
  readonly queueObserver: QueueObserver;
}

/** What the gauges of live backends read at scrape time. */
export interface MetricSources {
  readonly backendStats?: () => { readonly backends: number; readonly keepalives: ReadonlyMap<string, number> };
  /** Probed endpoints by verdict, and ServiceInstances in panic mode. */
  readonly healthCounts?: () => {
    readonly healthy: number;
    readonly unhealthy: number;
    readonly unknown: number;
    readonly panicking: number;
  };
}

/** Creates the metrics, with Node's default process metrics. */
export function createMetrics(sources: MetricSources = {}): Metrics {
  const registry = new PromRegistry();
  collectDefaultMetrics({ register: registry, prefix: 'kube_registrar_' });
  const reconciles = new Counter({
    name: 'kube_registrar_reconcile_total',
    help: 'ServiceInstance reconciles by outcome (success, requeue, error, terminal).',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const reconcileDuration = new Histogram({
    name: 'kube_registrar_reconcile_duration_seconds',
    help: 'Duration of ServiceInstance reconciles.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const queueDepth = new Gauge({ name: 'kube_registrar_workqueue_depth', help: 'Keys waiting or being processed.', registers: [registry] });
  const queueLatency = new Histogram({
    name: 'kube_registrar_workqueue_queue_duration_seconds',
    help: 'Time a key waits before a worker picks it up.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60],
    registers: [registry],
  });
  const informerErrors = new Counter({
    name: 'kube_registrar_informer_errors_total',
    help: 'List/watch failures by informer.',
    labelNames: ['informer'],
    registers: [registry],
  });
  const leader = new Gauge({
    name: 'kube_registrar_leader',
    help: '1 while this process is the leader (or runs without leader election).',
    registers: [registry],
  });
  const registryOperations = new Counter({
    name: 'kube_registrar_registry_operations_total',
    help: 'Registry reads and change batches by backend, operation (records, apply) and outcome (success, error).',
    labelNames: ['backend', 'operation', 'outcome'],
    registers: [registry],
  });
  const registryOperationDuration = new Histogram({
    name: 'kube_registrar_registry_operation_duration_seconds',
    help: 'Duration of registry reads and change batches.',
    labelNames: ['backend', 'operation'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const keepaliveFailures = new Counter({
    name: 'kube_registrar_lease_keepalive_failures_total',
    help: 'Failed etcd lease keepalives or Consul heartbeat passes, by backend.',
    labelNames: ['backend'],
    registers: [registry],
  });
  const registryEntries = new Gauge({
    name: 'kube_registrar_registry_entries',
    help: 'Entries the operator holds in each Registry.',
    labelNames: ['registry'],
    registers: [registry],
  });
  const circuitOpen = new Gauge({
    name: 'kube_registrar_registry_circuit_open',
    help: '1 while the circuit breaker of a Registry is open (calls paused after repeated failures).',
    labelNames: ['registry'],
    registers: [registry],
  });
  const stats = sources.backendStats;
  const liveBackends = new Gauge({
    name: 'kube_registrar_registry_backends',
    help: 'Registry backends alive in this process (one per usable Registry; more means a leak).',
    registers: [registry],
    collect() {
      if (stats) this.set(stats().backends);
    },
  });
  const liveKeepalives = new Gauge({
    name: 'kube_registrar_registry_keepalives',
    help: 'etcd leases kept alive plus Consul heartbeats passed by this process, by Registry (one per registry namespace in use), and ZooKeeper sessions held (one per Registry).',
    labelNames: ['registry'],
    registers: [registry],
    collect() {
      if (!stats) return;
      // Only Registries with a live backend: a released one disappears instead of reading 0 for ever.
      this.reset();
      for (const [name, n] of stats().keepalives) this.set({ registry: name }, n);
    },
  });
  const garbageCollected = new Counter({
    name: 'kube_registrar_garbage_collected_total',
    help: 'Entries of this cluster removed by the owner-wide sweep because no ServiceInstance wants them any more, by Registry.',
    labelNames: ['registry'],
    registers: [registry],
  });
  const healthProbes = new Counter({
    name: 'kube_registrar_health_probes_total',
    help: 'Health probes of static endpoints by outcome (success, failure, timeout).',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const healthProbeDuration = new Histogram({
    name: 'kube_registrar_health_probe_duration_seconds',
    help: 'Duration of health probes of static endpoints.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const healthCounts = sources.healthCounts;
  new Gauge({
    name: 'kube_registrar_health_endpoints',
    help: 'Health-checked endpoints by verdict (healthy, unhealthy, unknown: not probed enough yet).',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      if (!healthCounts) return;
      const counts = healthCounts();
      for (const state of ['healthy', 'unhealthy', 'unknown'] as const) this.set({ state }, counts[state]);
    },
  });
  new Gauge({
    name: 'kube_registrar_health_panic_service_instances',
    help: 'ServiceInstances in panic mode: too few endpoints healthy, so every endpoint is kept registered (fail open).',
    registers: [registry],
    collect() {
      if (healthCounts) this.set(healthCounts().panicking);
    },
  });
  const queueObserver: QueueObserver = {
    depth: (d) => queueDepth.set(d),
    latency: (ms) => queueLatency.observe(ms / 1000),
    processed: (_key, outcome, ms) => {
      reconciles.inc({ outcome });
      reconcileDuration.observe(ms / 1000);
    },
  };
  return {
    registry,
    reconciles,
    reconcileDuration,
    queueDepth,
    queueLatency,
    informerErrors,
    leader,
    registryOperations,
    registryOperationDuration,
    keepaliveFailures,
    registryEntries,
    circuitOpen,
    liveBackends,
    liveKeepalives,
    garbageCollected,
    healthProbes,
    healthProbeDuration,
    queueObserver,
  };
}

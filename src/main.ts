/**
 * kube-registrar's entry point, wiring only: config → clients → controllers → servers, and signal
 * handling. Shutdown stops reconciling and closes backends without revoking leases, so the
 * entries stay in the registries for the next process (or leader) to adopt.
 */
import type { Server } from 'node:http';
import type { V1Namespace, V1Secret } from '@kubernetes/client-node';
import { GROUP, REGISTRY_PLURAL, SERVICE_INSTANCE_PLURAL, VERSION } from './api/v1alpha1/types.ts';
import { ConfigError, loadConfig, parseAddress, usage, type Config } from './config.ts';
import { LeaderElector } from './controller/leader.ts';
import { GarbageCollector } from './controller/garbage-collector.ts';
import { REGISTRY_STATUS_DELAY_MS } from './controller/event-routing.ts';
import { ControllerManager } from './controller/manager.ts';
import { RegistryReconciler } from './controller/registry-reconciler.ts';
import { ServiceInstanceReconciler } from './controller/service-instance-reconciler.ts';
import { HEAP_COMPACTION_DEFAULTS, HeapCompactor } from './heap-compactor.ts';
import { settleHeapGrowth } from './runtime-settings.ts';
import { WriteBehind } from './controller/write-behind.ts';
import { kubeRequest, seg } from './kube/api.ts';
import type { KubeConfig } from './kube/client.ts';
import { CustomObjectWriter } from './kube/custom-objects.ts';
import { KubeEventRecorder } from './kube/events.ts';
import { OperatorKubeConfig } from './kube/kube-config.ts';
import { createLogger } from './observability/logger.ts';
import { createMetrics } from './observability/metrics.ts';
import { startOpsServer } from './observability/server.ts';
import { KubeBackendProvider } from './registry/provider.ts';
import { systemClock } from './clock.ts';
import { HealthMonitor } from './health/monitor.ts';

function loadKubeConfig(cfg: Config): KubeConfig {
  const kc = new OperatorKubeConfig();
  if (cfg.kubeconfig) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromDefault();
  return kc;
}

async function clusterIdOf(kc: KubeConfig, cfg: Config): Promise<string> {
  if (cfg.clusterId) return cfg.clusterId;
  try {
    const ns = await kubeRequest<V1Namespace>(kc, { method: 'GET', path: '/api/v1/namespaces/kube-system' });
    if (ns.metadata?.uid) return ns.metadata.uid;
  } catch (err: unknown) {
    throw new Error('cannot read namespace kube-system to derive the cluster id: grant get on namespaces, or set --cluster-id', {
      cause: err,
    });
  }
  throw new Error('namespace kube-system has no UID; set --cluster-id');
}

async function main(): Promise<void> {
  let cfg: Config | undefined;
  try {
    cfg = loadConfig(process.argv.slice(2), process.env);
  } catch (err: unknown) {
    if (err instanceof ConfigError) {
      console.error(`kube-registrar: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  if (!cfg) {
    console.log(usage());
    return;
  }
  const logger = createLogger(cfg.logLevel);
  // Signals that arrive while starting up end the process at once; once running, they shut down
  // gracefully (see below).
  let onSignal = (_signal: string): Promise<void> => Promise.resolve();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, (s) => void onSignal(s).finally(() => process.exit(0)));
  const kc = loadKubeConfig(cfg);
  const clusterId = await clusterIdOf(kc, cfg);
  logger.info(
    { clusterId, watchNamespaces: cfg.watchNamespaces, dryRun: cfg.dryRun, server: kc.getCurrentCluster()?.server },
    'kube-registrar starting',
  );

  const metrics = createMetrics({ backendStats: () => backends.stats(), healthCounts: () => health.counts() });
  const events = new KubeEventRecorder(kc, logger);
  const backends = new KubeBackendProvider({
    clusterId,
    logger,
    callTimeoutMs: cfg.registryTimeoutSeconds * 1000,
    dryRun: cfg.dryRun,
    secretRefreshMs: Math.min(cfg.resyncSeconds, 30) * 1000, // rotated Secrets are picked up within this
    // A tenth of the resync period: a hand edit shows in the next view well before the edited
    // entry's ServiceInstance resyncs, at ten bulk reads per etcd namespace or Consul agent per period.
    viewMaxAgeMs: Math.min(cfg.resyncSeconds * 100, 30_000),
    observer: {
      operation: (backend, operation, outcome, seconds) => {
        metrics.registryOperations.inc({ backend, operation, outcome });
        metrics.registryOperationDuration.observe({ backend, operation }, seconds);
      },
      keepaliveFailure: (backend) => metrics.keepaliveFailures.inc({ backend }),
      circuit: (registry, open) => {
        metrics.circuitOpen.set({ registry }, open ? 1 : 0);
        if (open) logger.warn({ registry }, 'registry failing repeatedly: circuit open, calls paused');
        else logger.info({ registry }, 'registry answering again: circuit closed');
      },
    },
    readSecret: async (namespace, name) => {
      const secret = await kubeRequest<V1Secret>(kc, { method: 'GET', path: `/api/v1/namespaces/${seg(namespace)}/secrets/${seg(name)}` });
      return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
    },
  });
  const manager = new ControllerManager({
    kubeConfig: kc,
    logger,
    watchNamespaces: cfg.watchNamespaces,
    concurrency: cfg.concurrency,
    resyncMs: cfg.resyncSeconds * 1000,
    queueObserver: {
      ...metrics.queueObserver,
      // The error itself (a 403 names the verb and resource) goes to the log; status and events
      // carry what the reconciler could say about it.
      error: (key, err, retryInMs) =>
        logger.warn(
          { serviceInstance: key, err, retryInMs },
          retryInMs === undefined ? 'reconcile failed; not retrying (invalid input)' : 'reconcile failed; retrying',
        ),
    },
    onInformerError: (informer) => metrics.informerErrors.inc({ informer }),
    onRegistryDeleted: (name, uid) => void backends.release(name, uid),
  });
  // Probes only what the reconciler hands it, and only the leader reconciles: only the leader probes.
  const health = new HealthMonitor({
    clock: systemClock,
    concurrency: cfg.healthCheckConcurrency,
    logger,
    onChange: (key) => manager.requeue(key),
    observer: {
      probe: (outcome, seconds) => {
        metrics.healthProbes.inc({ outcome });
        metrics.healthProbeDuration.observe(seconds);
      },
    },
  });
  // Finalizers and statuses are written behind the reconciler: entries never wait for the apiserver.
  const writeBehind = new WriteBehind({
    api: new CustomObjectWriter(kc, { group: GROUP, version: VERSION, plural: SERVICE_INSTANCE_PLURAL }),
    lookup: (key) => manager.serviceInstance(key),
    logger,
    concurrency: cfg.concurrency,
  });
  const reconciler = new ServiceInstanceReconciler({
    health,
    clusterId,
    caches: manager,
    backends,
    writer: writeBehind,
    events,
    logger,
    now: () => new Date(),
    resyncMs: cfg.resyncSeconds * 1000,
    onLeaseChanged: (registry) => manager.requeueRegistry(registry, REGISTRY_STATUS_DELAY_MS),
  });

  const collector = new GarbageCollector({
    clusterId,
    caches: manager,
    backends,
    logger,
    watchNamespaces: cfg.watchNamespaces,
    intervalMs: cfg.resyncSeconds * 1000,
    onCollected: (registry, entries) => metrics.garbageCollected.inc({ registry }, entries),
  });

  const servers: Server[] = [];
  if (cfg.healthAddress) {
    const { host, port } = parseAddress('health-address', cfg.healthAddress);
    servers.push(await startOpsServer({ host, port, ready: () => manager.synced }));
  }
  if (cfg.metricsAddress) {
    const { host, port } = parseAddress('metrics-address', cfg.metricsAddress);
    servers.push(await startOpsServer({ host, port, metrics: metrics.registry }));
  }

  const registryReconciler = new RegistryReconciler({
    caches: manager,
    backends,
    writer: new CustomObjectWriter(kc, { group: GROUP, version: VERSION, plural: REGISTRY_PLURAL }),
    events,
    logger,
    now: () => new Date(),
    resyncMs: cfg.resyncSeconds * 1000,
    onEntries: (registry, entries) => metrics.registryEntries.set({ registry }, entries),
  });
  let compactor: HeapCompactor | undefined;
  const startReconciling = async (): Promise<void> => {
    // Entries first, in bulk where a backend batches writes; then every ServiceInstance is
    // reconciled as usual (statuses, finalizers, events, what the first pass left).
    await reconciler
      .prime(manager.allServiceInstances())
      .catch((err: unknown) => logger.warn({ err }, 'first pass failed; the reconciles do its work'));
    if (stopping) return;
    manager.startReconciling(
      (key) => reconciler.reconcile(key),
      (name) => registryReconciler.reconcile(name),
    );
    collector.start();
    // Once every ServiceInstance is reconciled and its status written, the heap the initial sync
    // grew is given back (see runtime-settings.ts), and from then on whenever it grew while idle
    // (heap-compactor.ts).
    await manager.idle();
    await writeBehind.statusesWritten();
    if (stopping) return;
    const mb = (n: number): number => Math.round(n / 1e6);
    let first = true;
    compactor = new HeapCompactor({
      ...HEAP_COMPACTION_DEFAULTS,
      busy: () => manager.queueDepth > 0,
      onCompacted: (before, after) => {
        const figures = {
          heapReservedMB: [mb(before.heapTotal), mb(after.heapTotal)],
          heapUsedMB: [mb(before.heapUsed), mb(after.heapUsed)],
          rssMB: [mb(before.rss), mb(after.rss)],
        };
        if (first) logger.info(figures, 'initial sync converged; heap compacted');
        else logger.debug(figures, 'heap compacted');
        first = false;
      },
    });
    if (compactor.start()) settleHeapGrowth();
  };
  const elector = cfg.leaderElection
    ? new LeaderElector({
        kubeConfig: kc,
        namespace: cfg.leaderElectionNamespace,
        name: cfg.leaderElectionId,
        leaseDurationSeconds: cfg.leaseDurationSeconds,
        renewDeadlineSeconds: cfg.renewDeadlineSeconds,
        retryPeriodSeconds: cfg.retryPeriodSeconds,
        logger,
        onStartedLeading: () => {
          metrics.leader.set(1);
          void startReconciling();
        },
        // As controller-runtime does: a process that lost leadership exits and restarts as a
        // standby, leaving its registry leases to the new leader (nothing is revoked or deleted).
        onStoppedLeading: () => {
          // First, and synchronously: from here on the successor may be writing.
          backends.fence('lost the leader Lease');
          metrics.leader.set(0);
          // Bounded: a shutdown step stuck on a cut-off apiserver must not keep the process around.
          setTimeout(() => process.exit(1), 10_000).unref();
          void shutdown('lost leadership').finally(() => process.exit(1));
        },
      })
    : undefined;
  let stopping = false;
  const shutdown = async (reason: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, 'shutting down; registry leases are left for the next process to adopt');
    compactor?.stop();
    await collector.stop();
    await manager.stop();
    await writeBehind.shutdown();
    await health.stop();
    await elector?.stop();
    await backends.close();
    await events.flush();
    for (const s of servers) s.close();
    logger.flush();
  };
  onSignal = shutdown;

  // Without leader election this process is the one that writes: its backends connect, and adopt
  // and keep alive the leases they find, while the ServiceInstances and pods are still listed.
  // A standby leaves them alone until it leads.
  const warmBackends = (): void => {
    for (const reg of manager.registries()) void backends.get(reg).catch(() => undefined); // the reconciles report it
  };
  await manager.startCaches(elector ? undefined : warmBackends);
  if (!elector) {
    metrics.leader.set(1);
    await startReconciling();
    return;
  }
  metrics.leader.set(0);
  logger.info(
    { identity: elector.identity, lease: `${cfg.leaderElectionNamespace}/${cfg.leaderElectionId}` },
    'standing by for leader election',
  );
  elector.start();
}

main().catch((err: unknown) => {
  console.error(
    JSON.stringify({
      level: 'fatal',
      msg: 'kube-registrar failed',
      err: err instanceof Error ? { message: err.message, cause: err.cause instanceof Error ? err.cause.message : undefined } : String(err),
    }),
  );
  process.exit(1);
});

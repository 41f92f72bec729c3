/**
 * The controller manager: informers for ServiceInstances, Registries, Namespaces and Pods feed a
 * keyed work queue of ServiceInstance keys; a periodic resync re-queues every ServiceInstance so
 * that entries edited or deleted by hand are repaired.
 */
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Namespace, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { FINALIZER, GROUP, REGISTRY_PLURAL, SERVICE_INSTANCE_PLURAL, VERSION, type Registry as RegistryResource, type ServiceInstance } from '../api/v1alpha1/types.ts';
import { Informer, objectKey, type ListPage } from '../kube/informer.ts';
import { selectorMatches } from '../source/endpoints.ts';
import { slimPod, type SlimPod } from '../source/pods.ts';
import { WorkQueue, type QueueObserver } from './queue.ts';
import type { ReconcilerCaches, ServiceInstanceReconciler } from './service-instance-reconciler.ts';

/** A namespace as cached: name and labels only. */
export interface SlimNamespace {
  readonly metadata: { readonly name: string; readonly resourceVersion?: string; readonly labels: Readonly<Record<string, string>> };
}

/** Options of {@link ControllerManager}. */
export interface ManagerOptions {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  /** Namespaces to watch; empty: all. */
  readonly watchNamespaces: readonly string[];
  readonly concurrency: number;
  readonly resyncMs: number;
  readonly queueObserver?: QueueObserver;
  /** Called after each list/watch failure of an informer (for metrics). */
  readonly onInformerError?: (informer: string) => void;
  /** Called when a Registry is deleted, so its backend can be closed. */
  readonly onRegistryDeleted?: (name: string, uid: string | undefined) => void;
}

type Reconcile = ServiceInstanceReconciler['reconcile'];

/** How long a Registry waits for more ServiceInstance status changes before its entry count is written. */
const REGISTRY_STATUS_DELAY_MS = 1000;

/** kubectl's copy of the last applied object: as large as the object, and never read here. */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * A ServiceInstance as cached: without managedFields and kubectl's last-applied copy, which
 * together are often larger than the rest of the object and are never read by the operator.
 */
export function slimServiceInstance(si: ServiceInstance): ServiceInstance {
  const metadata = si.metadata;
  if (!metadata) return si;
  const { managedFields: _managedFields, ...rest } = metadata as typeof metadata & { managedFields?: unknown };
  const annotations = rest.annotations;
  if (annotations && LAST_APPLIED in annotations) {
    const { [LAST_APPLIED]: _lastApplied, ...kept } = annotations;
    rest.annotations = kept;
  }
  return { ...si, metadata: rest };
}

/** Wires informers to the queue and exposes the caches to the reconciler. */
export class ControllerManager implements ReconcilerCaches {
  readonly #o: ManagerOptions;
  readonly #siInformers: Informer<ServiceInstance, ServiceInstance>[] = [];
  readonly #podInformers: Informer<V1Pod, SlimPod>[] = [];
  readonly #registryInformer: Informer<RegistryResource, RegistryResource>;
  readonly #namespaceInformer: Informer<V1Namespace, SlimNamespace>;
  #queue: WorkQueue | undefined;
  #registryQueue: WorkQueue | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;

  constructor(options: ManagerOptions) {
    this.#o = options;
    const kc = options.kubeConfig;
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const page = <T>(p: Promise<unknown>): Promise<ListPage<T>> => p as Promise<ListPage<T>>;
    const scopes: (string | undefined)[] = options.watchNamespaces.length > 0 ? [...options.watchNamespaces] : [undefined];
    for (const ns of scopes) {
      this.#siInformers.push(
        new Informer<ServiceInstance, ServiceInstance>({
          name: `serviceinstances${ns ? `/${ns}` : ''}`,
          kubeConfig: kc,
          path: ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${SERVICE_INSTANCE_PLURAL}` : `/apis/${GROUP}/${VERSION}/${SERVICE_INSTANCE_PLURAL}`,
          list: (limit, cont) =>
            page(
              ns
                ? custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: SERVICE_INSTANCE_PLURAL, namespace: ns, limit, _continue: cont })
                : custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: SERVICE_INSTANCE_PLURAL, limit, _continue: cont }),
            ),
          transform: slimServiceInstance,
          logger: options.logger,
          onError: () => options.onInformerError?.(ns ? `serviceinstances/${ns}` : 'serviceinstances'),
        }),
      );
      this.#podInformers.push(
        new Informer<V1Pod, SlimPod>({
          name: `pods${ns ? `/${ns}` : ''}`,
          kubeConfig: kc,
          path: ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods',
          list: (limit, cont) => page(ns ? core.listNamespacedPod({ namespace: ns, limit, _continue: cont }) : core.listPodForAllNamespaces({ limit, _continue: cont })),
          transform: slimPod,
          logger: options.logger,
          onError: () => options.onInformerError?.(ns ? `pods/${ns}` : 'pods'),
        }),
      );
    }
    this.#registryInformer = new Informer<RegistryResource, RegistryResource>({
      name: 'registries',
      kubeConfig: kc,
      path: `/apis/${GROUP}/${VERSION}/${REGISTRY_PLURAL}`,
      list: (limit, cont) => page(custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: REGISTRY_PLURAL, limit, _continue: cont })),
      transform: (r) => r,
      logger: options.logger,
      onError: () => options.onInformerError?.('registries'),
    });
    this.#namespaceInformer = new Informer<V1Namespace, SlimNamespace>({
      name: 'namespaces',
      kubeConfig: kc,
      path: '/api/v1/namespaces',
      list: (limit, cont) => page(core.listNamespace({ limit, _continue: cont })),
      transform: (n) => ({ metadata: { name: n.metadata?.name ?? '', ...(n.metadata?.resourceVersion ? { resourceVersion: n.metadata.resourceVersion } : {}), labels: { ...(n.metadata?.labels ?? {}) } } }),
      logger: options.logger,
      onError: () => options.onInformerError?.('namespaces'),
    });
  }

  // --- ReconcilerCaches ---

  serviceInstance(key: string): ServiceInstance | undefined {
    for (const inf of this.#siInformers) {
      const si = inf.get(key);
      if (si) return si;
    }
    return undefined;
  }

  pods(namespace: string): readonly SlimPod[] {
    return this.#podInformers.flatMap((inf) => inf.list(namespace));
  }

  registries(): readonly RegistryResource[] {
    return this.#registryInformer.list();
  }

  /** A cached Registry by name. */
  registry(name: string): RegistryResource | undefined {
    return this.#registryInformer.get(name);
  }

  namespaceLabels(namespace: string): Readonly<Record<string, string>> | undefined {
    return this.#namespaceInformer.get(namespace)?.metadata.labels;
  }

  /** Every cached ServiceInstance. */
  allServiceInstances(): ServiceInstance[] {
    return this.#siInformers.flatMap((inf) => inf.list());
  }

  /** True once every informer has listed. */
  get synced(): boolean {
    return [...this.#siInformers, ...this.#podInformers, this.#registryInformer, this.#namespaceInformer].every((i) => i.synced);
  }

  /** Queue depth (for metrics). */
  get queueDepth(): number {
    return this.#queue?.depth ?? 0;
  }

  #enqueue(si: ServiceInstance): void {
    this.#queue?.add(objectKey(si));
  }

  #enqueueAll(): void {
    for (const si of this.allServiceInstances()) this.#enqueue(si);
  }

  /**
   * The periodic safety net: queues every ServiceInstance the queue does not already track. Each
   * reconcile schedules its own next resync (jittered, so the work is spread out), so this only
   * catches keys that fell out, e.g. after a terminal error; queueing every key at once would
   * reconcile everything twice per period and let the queue spike to the number of objects.
   */
  #enqueueUntracked(): void {
    const queue = this.#queue;
    if (!queue) return;
    for (const si of this.allServiceInstances()) {
      const key = objectKey(si);
      if (!queue.has(key)) queue.add(key);
    }
  }

  /**
   * Queues the Registries a ServiceInstance's status names, so that their entry counts follow. A
   * short delay folds the status changes of a burst (thousands during a cold sync) into one
   * Registry status write, instead of a write per ServiceInstance that each sums every status.
   */
  #enqueueRegistries(si: ServiceInstance | undefined): void {
    for (const r of si?.status?.registrations ?? []) this.#registryQueue?.addAfter(r.registry, REGISTRY_STATUS_DELAY_MS);
  }

  /**
   * Starts the informers and waits until they synced. Events only reach the queue once
   * {@link startReconciling} ran, so a standby keeps warm caches without acting on them.
   */
  async startCaches(): Promise<void> {
    const enqueue = (si: ServiceInstance): void => this.#enqueue(si);
    const enqueueNamespace = (ns: string): void => {
      for (const inf of this.#siInformers) for (const si of inf.list(ns)) enqueue(si);
    };
    const enqueueAll = (): void => this.#enqueueAll();
    for (const inf of this.#siInformers) {
      inf.on({
        add: enqueue,
        update: (si, old) => {
          // Registry status sums the entries in ServiceInstance status.
          if (JSON.stringify(si.status?.registrations) !== JSON.stringify(old.status?.registrations)) {
            this.#enqueueRegistries(si);
            this.#enqueueRegistries(old);
          }
          // Our own writes do not retrigger: status is written through the status subresource, and
          // the reconcile that adds the finalizer goes on to sync in the same pass. Spec changes,
          // deletion, and someone removing our finalizer do.
          if (
            si.metadata?.generation !== old.metadata?.generation ||
            si.metadata?.deletionTimestamp !== old.metadata?.deletionTimestamp ||
            ((old.metadata?.finalizers ?? []).includes(FINALIZER) && !(si.metadata?.finalizers ?? []).includes(FINALIZER))
          ) {
            enqueue(si);
          }
        },
        delete: (si) => {
          this.#queue?.forget(objectKey(si));
          this.#enqueueRegistries(si);
        },
      });
    }
    const onPod = (pod: SlimPod, old?: SlimPod): void => {
      for (const inf of this.#siInformers) {
        for (const si of inf.list(pod.metadata.namespace)) {
          const sel = si.spec.selector;
          if (!sel) continue;
          if (selectorMatches(sel, pod.metadata.labels) || (old && selectorMatches(sel, old.metadata.labels))) enqueue(si);
        }
      }
    };
    for (const inf of this.#podInformers) {
      inf.on({
        add: (p) => onPod(p),
        update: (p, old) => {
          if (p.ready !== old.ready || p.ip !== old.ip || p.metadata.terminating !== old.metadata.terminating || p.finished !== old.finished || JSON.stringify(p.metadata.labels) !== JSON.stringify(old.metadata.labels) || JSON.stringify(p.ports) !== JSON.stringify(old.ports)) {
            onPod(p, old);
          }
        },
        delete: (p) => onPod(p),
      });
    }
    this.#registryInformer.on({
      add: (r) => {
        this.#registryQueue?.add(r.metadata?.name ?? '');
        enqueueAll();
      },
      update: (r, old) => {
        if (r.metadata?.generation !== old.metadata?.generation) {
          this.#registryQueue?.add(r.metadata?.name ?? '');
          enqueueAll();
        }
      },
      delete: (r) => {
        this.#o.onRegistryDeleted?.(r.metadata?.name ?? '', r.metadata?.uid);
        enqueueAll();
      },
    });
    // Which Registries admit a ServiceInstance follows its namespace's labels. The namespace and
    // ServiceInstance watches are separate streams, so a ServiceInstance created right after its
    // namespace can be reconciled before the namespace is cached, and be refused; its namespace
    // arriving (or leaving) must queue it again, or it waits for the resync.
    this.#namespaceInformer.on({
      add: (n) => enqueueNamespace(n.metadata.name),
      update: (n, old) => {
        if (JSON.stringify(n.metadata.labels) !== JSON.stringify(old.metadata.labels)) enqueueNamespace(n.metadata.name);
      },
      delete: (n) => enqueueNamespace(n.metadata.name),
    });
    // Pods and Registries first, so the first reconciles see every pod and Registry.
    await Promise.all([this.#registryInformer.start(), this.#namespaceInformer.start(), ...this.#podInformers.map((i) => i.start())]);
    await Promise.all(this.#siInformers.map((i) => i.start()));
    this.#o.logger.info({ serviceInstances: this.allServiceInstances().length, registries: this.registries().length, pods: this.#podInformers.reduce((n, i) => n + i.size, 0) }, 'caches synced');
  }

  /** Starts the work queues and the periodic resync, and queues every ServiceInstance and Registry. */
  startReconciling(reconcile: Reconcile, reconcileRegistry: Reconcile): void {
    if (this.#queue) return;
    this.#queue = new WorkQueue((key) => reconcile(key), { concurrency: this.#o.concurrency, ...(this.#o.queueObserver ? { observer: this.#o.queueObserver } : {}) });
    this.#registryQueue = new WorkQueue((name) => reconcileRegistry(name), { concurrency: 2 });
    const enqueueRegistries = (): void => {
      for (const r of this.registries()) this.#registryQueue?.add(r.metadata?.name ?? '');
    };
    this.#enqueueAll();
    enqueueRegistries();
    this.#resyncTimer = setInterval(() => {
      this.#enqueueUntracked();
      enqueueRegistries();
    }, this.#o.resyncMs);
    this.#o.logger.info('reconciling');
  }

  /** Stops informers, the resync timer and the queue (waiting for running reconciles). */
  async stop(): Promise<void> {
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    for (const inf of [...this.#siInformers, ...this.#podInformers, this.#registryInformer, this.#namespaceInformer]) inf.stop();
    await Promise.all([this.#queue?.shutdown(), this.#registryQueue?.shutdown()]);
  }
}

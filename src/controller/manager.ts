/**
 * The controller manager: the cluster caches (caches.ts) feed, through the event routing
 * (event-routing.ts), a keyed work queue of ServiceInstance keys and a queue of Registry names; a
 * periodic pass queues every ServiceInstance the queue lost track of, so that entries edited or
 * deleted by hand are repaired. Events only reach the queues once reconciling started, so a
 * standby keeps warm caches without acting on them.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry as RegistryResource, ServiceInstance } from '../api/v1alpha1/types.ts';
import { objectKey } from '../kube/informer.ts';
import type { LabelSelectorLike } from '../source/endpoints.ts';
import type { SlimPod } from '../source/pods.ts';
import { ClusterCaches } from './caches.ts';
import { routeEvents } from './event-routing.ts';
import { WorkQueue, type QueueObserver } from './queue.ts';
import type { ReconcilerCaches, ServiceInstanceReconciler } from './service-instance-reconciler.ts';
import { resolveTargets } from './targets.ts';

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

/** Wires the caches to the queues and exposes the caches to the reconcilers. */
export class ControllerManager implements ReconcilerCaches {
  readonly #o: ManagerOptions;
  readonly #caches: ClusterCaches;
  #queue: WorkQueue | undefined;
  #registryQueue: WorkQueue | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;

  constructor(options: ManagerOptions) {
    this.#o = options;
    this.#caches = new ClusterCaches({
      kubeConfig: options.kubeConfig,
      logger: options.logger,
      watchNamespaces: options.watchNamespaces,
      ...(options.onInformerError ? { onInformerError: options.onInformerError } : {}),
    });
  }

  // --- ReconcilerCaches ---

  serviceInstance(key: string): ServiceInstance | undefined {
    return this.#caches.serviceInstance(key);
  }

  pods(namespace: string): readonly SlimPod[] {
    return this.#caches.pods(namespace);
  }

  podsMatching(namespace: string, selector: LabelSelectorLike): readonly SlimPod[] {
    return this.#caches.podsMatching(namespace, selector);
  }

  registries(): readonly RegistryResource[] {
    return this.#caches.registries();
  }

  /** A cached Registry by name. */
  registry(name: string): RegistryResource | undefined {
    return this.#caches.registry(name);
  }

  namespaceLabels(namespace: string): Readonly<Record<string, string>> | undefined {
    return this.#caches.namespaceLabels(namespace);
  }

  /** Every cached ServiceInstance. */
  allServiceInstances(): ServiceInstance[] {
    return this.#caches.allServiceInstances();
  }

  /** True once every informer has listed. */
  get synced(): boolean {
    return this.#caches.synced;
  }

  /** Queues a ServiceInstance for reconciling (once reconciling started). */
  requeue(key: string): void {
    this.#queue?.add(key);
  }

  /** Queues a Registry for reconciling after `delayMs` (once reconciling started); later calls within the delay share it. */
  requeueRegistry(name: string, delayMs: number): void {
    this.#registryQueue?.addAfter(name, delayMs);
  }

  /** Queue depth (for metrics). */
  get queueDepth(): number {
    return this.#queue?.depth ?? 0;
  }

  /**
   * A ServiceInstance's lane in the queue: the Registries it writes to now. Each lane reconciles up
   * to `concurrency` at once, so ServiceInstances of a slow backend never hold the workers of
   * another's. One that is gone, or writes nowhere, shares the empty lane.
   */
  #lane(key: string): string {
    const si = this.#caches.serviceInstance(key);
    const ns = si?.metadata?.namespace;
    if (!si || !ns) return '';
    const { targets } = resolveTargets(si.spec.registries, ns, this.#caches.namespaceLabels(ns) ?? {}, this.#caches.registries());
    return targets.map((r) => r.metadata?.name ?? '').join(',');
  }

  #enqueueAll(): void {
    for (const si of this.allServiceInstances()) this.#queue?.add(objectKey(si));
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
   * Starts the informers and waits until they synced; events reach the queues once reconciling
   * started. `onRegistriesListed` runs as soon as the Registries are listed, before the rest is.
   */
  async startCaches(onRegistriesListed?: () => void): Promise<void> {
    routeEvents(this.#caches, {
      serviceInstance: (key) => this.#queue?.add(key),
      forgetServiceInstance: (key) => this.#queue?.forget(key),
      allServiceInstances: () => this.#enqueueAll(),
      registry: (name, delayMs) => (delayMs === undefined ? this.#registryQueue?.add(name) : this.#registryQueue?.addAfter(name, delayMs)),
      registryDeleted: (name, uid) => this.#o.onRegistryDeleted?.(name, uid),
    });
    await this.#caches.start(onRegistriesListed);
  }

  /** Starts the work queues and the periodic resync, and queues every ServiceInstance and Registry. */
  startReconciling(reconcile: Reconcile, reconcileRegistry: Reconcile): void {
    if (this.#queue) return;
    this.#queue = new WorkQueue((key) => reconcile(key), {
      concurrency: this.#o.concurrency,
      lane: (key) => this.#lane(key),
      ...(this.#o.queueObserver ? { observer: this.#o.queueObserver } : {}),
    });
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

  /** Resolves when no ServiceInstance is queued or being reconciled (at once before reconciling started). */
  async idle(): Promise<void> {
    await this.#queue?.idle();
  }

  /** Stops informers, the resync timer and the queue (waiting for running reconciles). */
  async stop(): Promise<void> {
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    this.#caches.stop();
    await Promise.all([this.#queue?.shutdown(), this.#registryQueue?.shutdown()]);
  }
}

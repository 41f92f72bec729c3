/**
 * The operator's view of the cluster: informers for ServiceInstances and Pods (per watched
 * namespace, or cluster-wide), Registries and Namespaces, and the cache reads the reconcilers use.
 * Which events queue which keys is event-routing.ts's business; this file only lists and watches.
 */
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { kubeRequest } from '../kube/api.ts';
import { internJson } from '../intern.ts';
import type { KubeConfig } from '../kube/client.ts';
import type { Logger } from 'pino';
import {
  GROUP,
  REGISTRY_PLURAL,
  SERVICE_INSTANCE_PLURAL,
  VERSION,
  type Registry as RegistryResource,
  type ServiceInstance,
} from '../api/v1alpha1/types.ts';
import { Informer, objectKey, type ListPage } from '../kube/informer.ts';
import type { LabelSelectorLike } from '../source/endpoints.ts';
import { PodLabelIndex, sameLabels } from '../source/pod-index.ts';
import { slimPod, type SlimPod } from '../source/pods.ts';
import type { ReconcilerCaches } from './service-instance-reconciler.ts';

/** A namespace as cached: name and labels only. */
export interface SlimNamespace {
  readonly metadata: { readonly name: string; readonly resourceVersion?: string; readonly labels: Readonly<Record<string, string>> };
}

/** Options of {@link ClusterCaches}. */
export interface CachesOptions {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  /** Namespaces to watch; empty: all. */
  readonly watchNamespaces: readonly string[];
  /** Called after each list/watch failure of an informer (for metrics). */
  readonly onInformerError?: (informer: string) => void;
}

/** kubectl's copy of the last applied object: as large as the object, and never read here. */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** Values no two ServiceInstances share: not worth a place in the table of shared strings. */
const UNIQUE_KEYS: ReadonlySet<string> = new Set(['name', 'uid', 'resourceVersion']);

/**
 * A ServiceInstance as cached: without managedFields and kubectl's last-applied copy, which
 * together are often larger than the rest of the object and are never read by the operator, and
 * with the strings ServiceInstances repeat (condition types, reasons and messages, registry and
 * namespace names, timestamps) shared (kube/intern.ts).
 */
export function slimServiceInstance(si: ServiceInstance): ServiceInstance {
  return internJson(withoutBookkeeping(si), UNIQUE_KEYS);
}

function withoutBookkeeping(si: ServiceInstance): ServiceInstance {
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

/** The informers and what the reconcilers read from them. */
export class ClusterCaches implements ReconcilerCaches {
  readonly siInformers: Informer<ServiceInstance, ServiceInstance>[] = [];
  readonly podInformers: Informer<V1Pod, SlimPod>[] = [];
  readonly registryInformer: Informer<RegistryResource, RegistryResource>;
  readonly namespaceInformer: Informer<V1Namespace, SlimNamespace>;
  readonly #logger: Logger;
  /** Per namespace: its pods by label, built on first use after a pod there changed. */
  readonly #podIndexes = new Map<string, PodLabelIndex>();

  constructor(options: CachesOptions) {
    this.#logger = options.logger;
    const kc = options.kubeConfig;
    // One page of a list, as plain JSON (the watch delivers the same shape).
    const page =
      <T>(path: string) =>
      (limit: number, cont: string | undefined): Promise<ListPage<T>> =>
        kubeRequest<ListPage<T>>(kc, { method: 'GET', path, query: { limit, continue: cont } });
    const scopes: (string | undefined)[] = options.watchNamespaces.length > 0 ? [...options.watchNamespaces] : [undefined];
    for (const ns of scopes) {
      const siPath = ns
        ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${SERVICE_INSTANCE_PLURAL}`
        : `/apis/${GROUP}/${VERSION}/${SERVICE_INSTANCE_PLURAL}`;
      this.siInformers.push(
        new Informer<ServiceInstance, ServiceInstance>({
          name: `serviceinstances${ns ? `/${ns}` : ''}`,
          kubeConfig: kc,
          path: siPath,
          list: page<ServiceInstance>(siPath),
          transform: slimServiceInstance,
          logger: options.logger,
          onError: () => options.onInformerError?.(ns ? `serviceinstances/${ns}` : 'serviceinstances'),
        }),
      );
      const podPath = ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods';
      const pods = new Informer<V1Pod, SlimPod>({
        name: `pods${ns ? `/${ns}` : ''}`,
        kubeConfig: kc,
        path: podPath,
        list: page<V1Pod>(podPath),
        transform: slimPod,
        logger: options.logger,
        onError: () => options.onInformerError?.(ns ? `pods/${ns}` : 'pods'),
      });
      const stale = (pod: SlimPod): void => void this.#podIndexes.delete(pod.metadata.namespace);
      // An index hands out pods as they are now: only pods coming, going or relabelled change it.
      pods.on({
        add: stale,
        update: (pod, old) => {
          if (!sameLabels(pod.metadata.labels, old.metadata.labels)) stale(pod);
        },
        delete: stale,
      });
      this.podInformers.push(pods);
    }
    const registryPath = `/apis/${GROUP}/${VERSION}/${REGISTRY_PLURAL}`;
    this.registryInformer = new Informer<RegistryResource, RegistryResource>({
      name: 'registries',
      kubeConfig: kc,
      path: registryPath,
      list: page<RegistryResource>(registryPath),
      transform: (r) => r,
      logger: options.logger,
      onError: () => options.onInformerError?.('registries'),
    });
    this.namespaceInformer = new Informer<V1Namespace, SlimNamespace>({
      name: 'namespaces',
      kubeConfig: kc,
      path: '/api/v1/namespaces',
      list: page<V1Namespace>('/api/v1/namespaces'),
      transform: (n) => ({
        metadata: {
          name: n.metadata?.name ?? '',
          ...(n.metadata?.resourceVersion ? { resourceVersion: n.metadata.resourceVersion } : {}),
          labels: { ...(n.metadata?.labels ?? {}) },
        },
      }),
      logger: options.logger,
      onError: () => options.onInformerError?.('namespaces'),
    });
  }

  serviceInstance(key: string): ServiceInstance | undefined {
    for (const inf of this.siInformers) {
      const si = inf.get(key);
      if (si) return si;
    }
    return undefined;
  }

  pods(namespace: string): readonly SlimPod[] {
    return this.podInformers.flatMap((inf) => inf.list(namespace));
  }

  /** The pods of `namespace` that `selector` can match (a superset: check the selector on them). */
  podsMatching(namespace: string, selector: LabelSelectorLike): readonly SlimPod[] {
    let index = this.#podIndexes.get(namespace);
    if (!index) this.#podIndexes.set(namespace, (index = new PodLabelIndex(this.pods(namespace), (pod) => this.#livePod(pod))));
    return index.candidates(selector);
  }

  /** The cached version of `pod` now, if it is still cached. */
  #livePod(pod: SlimPod): SlimPod | undefined {
    const key = objectKey(pod);
    for (const inf of this.podInformers) {
      const live = inf.get(key);
      if (live !== undefined) return live;
    }
    return undefined;
  }

  registries(): readonly RegistryResource[] {
    return this.registryInformer.list();
  }

  /** A cached Registry by name. */
  registry(name: string): RegistryResource | undefined {
    return this.registryInformer.get(name);
  }

  namespaceLabels(namespace: string): Readonly<Record<string, string>> | undefined {
    return this.namespaceInformer.get(namespace)?.metadata.labels;
  }

  /** Every cached ServiceInstance. */
  allServiceInstances(): ServiceInstance[] {
    return this.siInformers.flatMap((inf) => inf.list());
  }

  /** True once every informer has listed. */
  get synced(): boolean {
    return [...this.siInformers, ...this.podInformers, this.registryInformer, this.namespaceInformer].every((i) => i.synced);
  }

  /**
   * Starts every informer and waits until all listed: Pods, Registries and Namespaces first, so
   * that the first reconciles see every pod and Registry. Handlers must be attached before.
   * `onRegistriesListed` runs once the Registries are listed, while the rest still lists.
   */
  async start(onRegistriesListed?: () => void): Promise<void> {
    await Promise.all([
      this.registryInformer.start().then(() => onRegistriesListed?.()),
      this.namespaceInformer.start(),
      ...this.podInformers.map((i) => i.start()),
    ]);
    await Promise.all(this.siInformers.map((i) => i.start()));
    this.#logger.info(
      {
        serviceInstances: this.allServiceInstances().length,
        registries: this.registries().length,
        pods: this.podInformers.reduce((n, i) => n + i.size, 0),
      },
      'caches synced',
    );
  }

  /** Stops every informer. */
  stop(): void {
    for (const inf of [...this.siInformers, ...this.podInformers, this.registryInformer, this.namespaceInformer]) inf.stop();
  }
}

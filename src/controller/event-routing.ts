/**
 * Which informer events queue which keys: ServiceInstance changes that need a reconcile, pods to
 * the ServiceInstances whose selector matches them (now or before), Registries to every
 * ServiceInstance, namespaces to their ServiceInstances, and ServiceInstance status changes to the
 * Registries whose entry counts they feed. Our own status writes do not come back as work.
 */
import { FINALIZER, type ServiceInstance } from '../api/v1alpha1/types.ts';
import { objectKey } from '../kube/informer.ts';
import { selectorMatches } from '../source/endpoints.ts';
import type { SlimPod } from '../source/pods.ts';
import type { ClusterCaches } from './caches.ts';

/** Where routed events go. */
export interface EventSink {
  /** Queues a ServiceInstance key. */
  serviceInstance(key: string): void;
  /** A ServiceInstance is gone: drop its key and pending retries. */
  forgetServiceInstance(key: string): void;
  /** Queues every ServiceInstance (a Registry changed: any of them may target it now). */
  allServiceInstances(): void;
  /** Queues a Registry's status; `delayMs` folds a burst of changes into one write. */
  registry(name: string, delayMs?: number): void;
  /** A Registry was deleted (its backend should be closed). */
  registryDeleted(name: string, uid: string | undefined): void;
}

/** How long a Registry waits for more ServiceInstance status changes before its entry count is written. */
export const REGISTRY_STATUS_DELAY_MS = 1000;

function podChanged(p: SlimPod, old: SlimPod): boolean {
  return (
    p.ready !== old.ready ||
    p.ip !== old.ip ||
    p.metadata.terminating !== old.metadata.terminating ||
    p.finished !== old.finished ||
    JSON.stringify(p.metadata.labels) !== JSON.stringify(old.metadata.labels) ||
    JSON.stringify(p.ports) !== JSON.stringify(old.ports)
  );
}

/** Attaches the handlers that route every informer's events to `sink`. Call before the caches start. */
export function routeEvents(caches: ClusterCaches, sink: EventSink): void {
  const enqueue = (si: ServiceInstance): void => sink.serviceInstance(objectKey(si));
  const enqueueNamespace = (ns: string): void => {
    for (const inf of caches.siInformers) for (const si of inf.list(ns)) enqueue(si);
  };
  // Registry status sums the entries in ServiceInstance status; a short delay folds the status
  // changes of a burst (thousands during a cold sync) into one Registry status write.
  const registriesOf = (si: ServiceInstance | undefined): void => {
    for (const r of si?.status?.registrations ?? []) sink.registry(r.registry, REGISTRY_STATUS_DELAY_MS);
  };
  for (const inf of caches.siInformers) {
    inf.on({
      add: enqueue,
      update: (si, old) => {
        if (JSON.stringify(si.status?.registrations) !== JSON.stringify(old.status?.registrations)) {
          registriesOf(si);
          registriesOf(old);
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
        sink.forgetServiceInstance(objectKey(si));
        registriesOf(si);
      },
    });
  }
  const onPod = (pod: SlimPod, old?: SlimPod): void => {
    for (const inf of caches.siInformers) {
      for (const si of inf.list(pod.metadata.namespace)) {
        const sel = si.spec.selector;
        if (!sel) continue;
        if (selectorMatches(sel, pod.metadata.labels) || (old && selectorMatches(sel, old.metadata.labels))) enqueue(si);
      }
    }
  };
  for (const inf of caches.podInformers) {
    inf.on({
      add: (p) => onPod(p),
      update: (p, old) => {
        if (podChanged(p, old)) onPod(p, old);
      },
      delete: (p) => onPod(p),
    });
  }
  caches.registryInformer.on({
    add: (r) => {
      sink.registry(r.metadata?.name ?? '');
      sink.allServiceInstances();
    },
    update: (r, old) => {
      if (r.metadata?.generation !== old.metadata?.generation) {
        sink.registry(r.metadata?.name ?? '');
        sink.allServiceInstances();
      }
    },
    delete: (r) => {
      sink.registryDeleted(r.metadata?.name ?? '', r.metadata?.uid);
      sink.allServiceInstances();
    },
  });
  // Which Registries admit a ServiceInstance follows its namespace's labels. The namespace and
  // ServiceInstance watches are separate streams, so a ServiceInstance created right after its
  // namespace can be reconciled before the namespace is cached, and be refused; its namespace
  // arriving (or leaving) must queue it again, or it waits for the resync.
  caches.namespaceInformer.on({
    add: (n) => enqueueNamespace(n.metadata.name),
    update: (n, old) => {
      if (JSON.stringify(n.metadata.labels) !== JSON.stringify(old.metadata.labels)) enqueueNamespace(n.metadata.name);
    },
    delete: (n) => enqueueNamespace(n.metadata.name),
  });
}

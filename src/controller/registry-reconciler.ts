/**
 * reconcileRegistry: a Registry's status says whether the operator can reach and use it (Ready
 * condition) and how many entries the operator holds there (summed from the ServiceInstances'
 * registrations). Written only when it changed.
 */
import type { Logger } from 'pino';
import {
  ConditionReason,
  RegistryConditionType,
  type Registry as RegistryResource,
  type RegistryLease,
  type RegistryStatus,
  type ServiceInstance,
} from '../api/v1alpha1/types.ts';
import type { EventRecorder } from '../kube/events.ts';
import { RegistryConfigError, type BackendProvider, type Backend } from '../registry/provider.ts';
import { setCondition } from './conditions.ts';
import { sameStatus } from './write-behind.ts';
import type { ReconcileResult } from './queue.ts';

/** Read access to the caches the Registry reconciler needs. */
export interface RegistryCaches {
  registry(name: string): RegistryResource | undefined;
  allServiceInstances(): readonly ServiceInstance[];
}

/** Writes a Registry's status. */
export interface RegistryStatusWriter {
  patchStatus(registry: RegistryResource, status: RegistryStatus): Promise<void>;
}

/** Dependencies of {@link RegistryReconciler}. */
export interface RegistryReconcilerDeps {
  readonly caches: RegistryCaches;
  readonly backends: BackendProvider;
  readonly writer: RegistryStatusWriter;
  readonly events: EventRecorder;
  readonly logger: Logger;
  readonly now: () => Date;
  readonly resyncMs: number;
  /** Reports the entries held per Registry (for metrics). */
  readonly onEntries?: (registry: string, entries: number) => void;
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
  return String(err);
}

/** The lease of each registry namespace ServiceInstances write through this Registry, sorted. */
function leasesOf(backend: Backend, namespaces: ReadonlySet<string>): RegistryLease[] {
  const leases: RegistryLease[] = [];
  for (const namespace of [...namespaces].sort()) {
    const leaseID = backend.leaseId?.(namespace);
    if (leaseID) leases.push({ namespace, leaseID });
  }
  return leases;
}

/**
 * Whether `registry`'s status.leases names another lease for `namespace` than `leaseID`: the
 * Registry's status is due for a write. Cheap enough to ask on every reconcile.
 */
export function leaseOutdated(registry: RegistryResource, namespace: string, leaseID: string | undefined): boolean {
  if (leaseID === undefined) return false;
  let byNamespace = recordedLeases.get(registry);
  if (!byNamespace) {
    byNamespace = new Map((registry.status?.leases ?? []).map((l) => [l.namespace, l.leaseID]));
    recordedLeases.set(registry, byNamespace);
  }
  return byNamespace.get(namespace) !== leaseID;
}

/** status.leases of each cached Registry object by namespace (objects are replaced, never changed, on update). */
const recordedLeases = new WeakMap<RegistryResource, ReadonlyMap<string, string>>();

/** Reconciles Registry status. */
export class RegistryReconciler {
  readonly #d: RegistryReconcilerDeps;

  constructor(deps: RegistryReconcilerDeps) {
    this.#d = deps;
  }

  /** Reconciles the Registry named `name`. */
  async reconcile(name: string): Promise<ReconcileResult> {
    const d = this.#d;
    const reg = d.caches.registry(name);
    if (!reg) return undefined;
    let entries = 0;
    const namespaces = new Set<string>();
    for (const si of d.caches.allServiceInstances()) {
      for (const r of si.status?.registrations ?? [])
        if (r.registry === name) {
          entries += r.entries;
          if (r.namespace) namespaces.add(r.namespace);
        }
    }
    d.onEntries?.(name, entries);
    let ready: { status: 'True' | 'False'; reason: string; message: string };
    let leases: RegistryLease[] = [];
    try {
      const backend = await d.backends.get(reg);
      leases = leasesOf(backend, namespaces);
      const failing = backend.failing?.();
      ready = failing
        ? { status: 'False', reason: ConditionReason.Unreachable, message: failing }
        : backend.dryRun
          ? {
              status: 'True',
              reason: ConditionReason.DryRun,
              message: 'reachable; dry run: changes are computed and logged, nothing is written',
            }
          : { status: 'True', reason: ConditionReason.Connected, message: 'reachable with the configured credentials' };
    } catch (err: unknown) {
      const message = messageOf(err);
      const reason =
        err instanceof RegistryConfigError
          ? /Secret/.test(message)
            ? ConditionReason.CredentialsNotFound
            : ConditionReason.InvalidSpec
          : /40[13]|denied|auth/i.test(message)
            ? ConditionReason.AuthenticationFailed
            : ConditionReason.Unreachable;
      ready = { status: 'False', reason, message };
    }
    const generation = reg.metadata?.generation;
    const gen = generation === undefined ? {} : { observedGeneration: generation };
    const previous = reg.status?.conditions?.find((c) => c.type === RegistryConditionType.Ready);
    const conditions = setCondition(reg.status?.conditions, { type: RegistryConditionType.Ready, ...ready, ...gen }, d.now());
    const status: RegistryStatus = { ...gen, conditions, entries, ...(leases.length > 0 ? { leases } : {}) };
    if (!sameStatus(status, reg.status)) {
      await d.writer.patchStatus(reg, status);
      if (previous?.status !== ready.status) {
        const target = {
          apiVersion: 'registrar.dev/v1alpha1',
          kind: 'Registry',
          name,
          namespace: '',
          uid: reg.metadata?.uid,
          resourceVersion: reg.metadata?.resourceVersion,
        };
        if (ready.status === 'True') d.events.normal(target, ready.reason, ready.message);
        else d.events.warning(target, ready.reason, ready.message);
      }
    }
    return { requeueAfterMs: ready.status === 'True' ? d.resyncMs : Math.min(d.resyncMs, 30_000) };
  }
}

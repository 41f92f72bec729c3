/**
 * reconcileServiceInstance: one ServiceInstance key → desired endpoints → plan per target
 * registry → apply → status and events. Level-based: it reads the current state from the caches
 * and the registries every time, whatever event brought the key here.
 *
 *   registry.records() → source.endpoints() → plan.calculate() → registry.applyChanges()
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import {
  ConditionReason,
  FINALIZER,
  ServiceInstanceConditionType,
  type EndpointHealthSummary,
  type Registration,
  type UnhealthyEndpoint,
  type Registry as RegistryResource,
  type ServiceInstance,
  type ServiceInstanceStatus,
} from '../api/v1alpha1/types.ts';
import { calculatePlan, entryKey, isEmptyPlan } from '../plan/plan.ts';
import { isOwnedBy, OwnedRegistry, partitionByOwner, type ForeignEntryConflict } from '../registry/owner.ts';
import { renderRegistryNamespace } from '../registry/template.ts';
import type { Owner, RegistryEntry, Scope } from '../registry/types.ts';
import { desiredEndpoints, type LabelSelectorLike, type SourceResult } from '../source/endpoints.ts';
import type { SlimPod } from '../source/pods.ts';
import { setCondition, type Condition } from './conditions.ts';
import { TerminalError, type ReconcileResult } from './queue.ts';
import { leaseOutdated } from './registry-reconciler.ts';
import { objectKey } from '../kube/informer.ts';
import { sameStatus } from './write-behind.ts';
import { resolveTargets, type Refusal } from './targets.ts';
import { RegistryConfigError, type Backend, type BackendProvider } from '../registry/provider.ts';
import { EtcdKeyError } from '../registry/etcd/keys.ts';
import { TemplateError } from '../registry/template.ts';
import type { EventRecorder, EventTarget } from '../kube/events.ts';
import { gateEndpoints, healthGate, truncateOutput, type HealthGate } from '../health/gate.ts';
import type { EndpointVerdict, HealthTransition } from '../health/monitor.ts';
import { endpointKey, type EndpointAddress } from '../health/state.ts';
import { InvalidHealthCheckError, withDefaults, type ResolvedHealthCheck } from '../health/types.ts';

/** Reasons of the events the reconciler records. */
export const EventReason = {
  Registered: 'Registered',
  Deregistered: 'Deregistered',
  OwnershipConflict: 'OwnershipConflict',
  RegistrationFailed: 'RegistrationFailed',
  InvalidEndpoints: 'InvalidEndpoints',
  /** A ServiceInstance let go without deregistering: its registry was unreachable past the lease TTL, so its entries had expired. */
  EntriesExpired: 'EntriesExpired',
  /** An endpoint failed its health check failureThreshold times in a row. */
  EndpointUnhealthy: 'EndpointUnhealthy',
  /** An endpoint passed its health check successThreshold times in a row. */
  EndpointHealthy: 'EndpointHealthy',
  /** Too few endpoints are healthy: every endpoint is kept registered (fail open). */
  PanicThreshold: 'PanicThreshold',
  /** Enough endpoints are healthy again: failing endpoints leave the registries again. */
  PanicThresholdCleared: 'PanicThresholdCleared',
} as const;

/** Most unhealthy endpoints listed in status.health. */
const MAX_UNHEALTHY_IN_STATUS = 10;

/** What the reconciler needs of the health monitor (src/health/monitor.ts). */
export interface HealthTracker {
  track(owner: string, check: ResolvedHealthCheck, endpoints: readonly EndpointAddress[]): ReadonlyMap<string, EndpointVerdict>;
  untrack(owner: string): void;
  takeTransitions(owner: string): HealthTransition[];
  setPanic(owner: string, panic: boolean): void;
}

/** The health of one ServiceInstance's endpoints in one reconcile. */
interface HealthPass {
  /** Undefined when the check is unusable (`invalid` says why): every endpoint is then left as the registries hold it. */
  readonly check: ResolvedHealthCheck | undefined;
  readonly gate: HealthGate;
  readonly transitions: readonly HealthTransition[];
  readonly invalid?: string;
}

/**
 * Writes to ServiceInstances (finalizers and status). A writer may do them later (write-behind.ts):
 * then `intendedStatus` says what a status is about to be.
 */
export interface ServiceInstanceWriter {
  addFinalizer(si: ServiceInstance, finalizer: string): Promise<unknown>;
  removeFinalizer(si: ServiceInstance, finalizer: string): Promise<void>;
  patchStatus(si: ServiceInstance, status: ServiceInstanceStatus): Promise<void>;
  intendedStatus?(si: ServiceInstance): ServiceInstanceStatus | undefined;
}

/** Read access to the informer caches the reconciler needs. */
export interface ReconcilerCaches {
  serviceInstance(key: string): ServiceInstance | undefined;
  pods(namespace: string): readonly SlimPod[];
  /** The pods of `namespace` that `selector` can match, when the caches index them (else: pods()). */
  podsMatching?(namespace: string, selector: LabelSelectorLike): readonly SlimPod[];
  registries(): readonly RegistryResource[];
  namespaceLabels(namespace: string): Readonly<Record<string, string>> | undefined;
}

/** Everything the reconciler depends on, injected. */
export interface ReconcilerDeps {
  readonly clusterId: string;
  readonly caches: ReconcilerCaches;
  readonly backends: BackendProvider;
  readonly writer: ServiceInstanceWriter;
  readonly events: EventRecorder;
  readonly logger: Logger;
  readonly now: () => Date;
  /** Every ServiceInstance is reconciled again after about this long. */
  readonly resyncMs: number;
  readonly random?: () => number;
  /** Probes the static endpoints of ServiceInstances with spec.healthCheck; without it, health checks are not run. */
  readonly health?: HealthTracker;
  /** A registry namespace's lease is not the one its Registry's status.leases names: that status is due for a write. */
  readonly onLeaseChanged?: (registry: string) => void;
}

/**
 * ServiceInstances of one registry namespace the first pass reads, plans and hands its backend in
 * one call each, about: the backend packs the writes into its own transactions (etcd: 128
 * operations each, merging calls that arrive while one is under way), and the first writes go out
 * while the rest is still planned. A backend that names its batch ({@link Registry.writeBatch})
 * gets the multiple of it nearest to this, so that no transaction goes out partly filled.
 */
const PRIME_GROUP = 256;

/** Scopes per group of the first pass for `backend`: see {@link PRIME_GROUP}. */
function primeGroupSize(backend: Backend): number {
  const batch = backend.writeBatch;
  return batch !== undefined && batch > 0 ? batch * Math.max(1, Math.round(PRIME_GROUP / batch)) : PRIME_GROUP;
}
/** The first group of a registry namespace is smaller: it settles the namespace's lease while the rest is planned. */
const PRIME_FIRST_GROUP = 16;
/** Groups of the first pass under way at once, over every backend: bounds what it holds in memory. */
const PRIME_GROUPS_IN_FLIGHT = 32;

/** One scope of one ServiceInstance, planned by the first pass once its group is read. */
interface PrimeScope {
  readonly key: string;
  readonly owner: Owner;
  /** Whether the cached object carries our finalizer. */
  readonly finalized: boolean;
  readonly k8sNamespace: string;
  readonly scope: Scope;
  readonly endpoints: SourceResult['endpoints'];
  readonly policy: NonNullable<RegistryResource['spec']['policy']>;
}

/** ServiceInstances' scopes in one registry namespace of one Registry, read and written together. */
interface PrimeGroup {
  readonly backend: Backend;
  readonly registry: string;
  readonly scopes: PrimeScope[];
}

/** What {@link ServiceInstanceReconciler.prime} wrote to one scope of one ServiceInstance. */
interface PrimedWrites {
  readonly created: number;
  readonly updated: number;
  readonly deleted: number;
}

/** What {@link ServiceInstanceReconciler.prime} did. */
export interface PrimeSummary {
  readonly serviceInstances: number;
  /** Scopes with changes handed to a backend. */
  readonly scopes: number;
  /** Entries created, updated and deleted. */
  readonly entries: number;
  /** Scope reads and writes that failed (left to the reconciles). */
  readonly failed: number;
  readonly ms: number;
}

interface TargetOutcome {
  readonly registration: Registration;
  readonly registered: number;
  readonly conflicts: readonly ForeignEntryConflict[];
  readonly error?: unknown;
  readonly created: number;
  readonly updated: number;
  readonly deleted: number;
}

function errorMessage(err: unknown): string {
  if (err instanceof AggregateError) return err.errors.map(errorMessage).join('; ');
  if (err instanceof Error) return err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
  return String(err);
}

/**
 * Errors that only a change of the Registry or ServiceInstance can fix (both queue it again): an
 * unusable Registry, template or name. A Secret that cannot be read is not one of them: it is
 * often created just after the Registry, and is not watched.
 */
function isConfigurationError(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof RegistryConfigError) return !/Secret/.test(e.message);
    if (e instanceof TemplateError || e instanceof EtcdKeyError) return true;
  }
  return false;
}

function eventTarget(si: ServiceInstance): EventTarget {
  return {
    apiVersion: si.apiVersion ?? 'registrar.dev/v1alpha1',
    kind: si.kind ?? 'ServiceInstance',
    name: si.metadata?.name ?? '',
    namespace: si.metadata?.namespace ?? '',
    uid: si.metadata?.uid,
    resourceVersion: si.metadata?.resourceVersion,
  };
}

function registrationKey(r: { registry: string; namespace: string; service?: string }): string {
  return JSON.stringify([r.registry, r.namespace, r.service ?? '']);
}

/** Slack on top of a registry's expiry before an unreachable registry's entries count as gone. */
const LAPSE_MARGIN_MS = 5000;

/**
 * How long after the last renewal a Registry's entries are certainly gone: etcd drops keys when
 * their lease expires; Consul fails instances when the heartbeat expires and reaps them after
 * DeregisterCriticalServiceAfter (at least a minute, three TTLs by default).
 */
function lapseAfterMs(reg: RegistryResource): number {
  // A ZooKeeper session times out like a lease (the server clamps the timeout asked to its own bounds).
  const ttl = (reg.spec.type === 'zookeeper' ? reg.spec.zookeeper?.sessionTimeoutSeconds : undefined) ?? reg.spec.leaseTTLSeconds ?? 30;
  const afterExpiry = reg.spec.type === 'consul' ? Math.max(60, 3 * ttl) + 30 : 0;
  return (ttl + afterExpiry) * 1000 + LAPSE_MARGIN_MS;
}

/** The reconciler of ServiceInstances. */
export class ServiceInstanceReconciler {
  readonly #d: ReconcilerDeps;
  /** Nothing of this process renewed any registry lease before this moment. */
  readonly #startedAt: number;
  /**
   * Scopes written for ServiceInstances whose finalizer the cache does not show yet (it is added
   * behind the reconciler's back): if one goes away before its finalizer lands, these are where its
   * entries are removed from. Owner-wide garbage collection covers a restart in between.
   */
  readonly #unfinalized = new Map<string, Map<string, { registry: string; scope: Scope }>>();
  /** Per ServiceInstance key and scope: a fingerprint of the endpoints last written there. */
  readonly #written = new Map<string, Map<string, string>>();
  /**
   * Per ServiceInstance key and scope: what {@link prime} wrote there, for the reconcile that
   * follows to report (events, lastSyncTime) as if it had written it itself.
   */
  readonly #primed = new Map<string, Map<string, PrimedWrites>>();

  constructor(deps: ReconcilerDeps) {
    this.#d = deps;
    this.#startedAt = deps.now().getTime();
  }

  /**
   * Whether no entry of the scope can have survived: nothing of this process has kept its lease
   * alive (or passed its heartbeat) for longer than the registry takes to drop or fail them. When
   * so, the backend forgets the owner's entries there, so that a lease recovery cannot bring them
   * back once the registry answers again.
   */
  async #lapsed(registryName: string, scope: Scope, owner: Owner): Promise<boolean> {
    const reg = this.#d.caches.registries().find((r) => r.metadata?.name === registryName);
    if (!reg) return true;
    try {
      const backend = await this.#d.backends.get(reg);
      if (backend.livenessLapsed?.(scope.registryNamespace) !== true) return false;
      backend.forget?.(scope, owner);
      return true;
    } catch {
      const since = Math.max(this.#startedAt, this.#d.backends.buildFailingSince?.(registryName) ?? Infinity);
      return this.#d.now().getTime() - since > lapseAfterMs(reg);
    }
  }

  /** Reconciles one `namespace/name` key. */
  async reconcile(key: string): Promise<ReconcileResult> {
    const si = this.#d.caches.serviceInstance(key);
    if (!si || si.metadata?.deletionTimestamp) this.#d.health?.untrack(key);
    if (!si) {
      await this.#removeUnfinalized(key, undefined);
      this.#written.delete(key);
      this.#primed.delete(key);
      return undefined;
    }
    const finalizers = si.metadata?.finalizers ?? [];
    if (si.metadata?.deletionTimestamp) {
      if (finalizers.includes(FINALIZER)) await this.#finalize(si);
      else await this.#removeUnfinalized(key, si);
      this.#written.delete(key);
      this.#primed.delete(key);
      return undefined;
    }
    if (finalizers.includes(FINALIZER)) this.#unfinalized.delete(key);
    // Asked for before anything is written; a write-behind writer adds it later, and until the
    // cache shows it the scopes written are remembered (#unfinalized), so that no entry can
    // outlive its ServiceInstance either way.
    else await this.#d.writer.addFinalizer(si, FINALIZER);
    return this.#sync(si, key);
  }

  /**
   * The first pass after the caches synced, before the work queue starts: plans the entries of
   * every ServiceInstance and hands all their writes to the backends at once, so that a cold start,
   * or a restart after an outage that let every lease expire, fills a registry at the backend's
   * batch rate (etcd: 128-operation transactions) instead of one reconcile at a time.
   *
   * Only entries, and only where nothing else has to come first: backends that merge concurrent
   * writes ({@link Registry.batchesWrites}), no dry run, no health check (its endpoints wait for
   * probes), no deletion under way. Ownership is checked as in a reconcile (foreign entries are
   * never touched), unfinalized scopes are remembered, and every ServiceInstance is reconciled right
   * after as usual: that reconcile finds its entries in place, reports what this pass wrote, and
   * writes the status and finalizer. A failure here only leaves the work to that reconcile.
   */
  async prime(serviceInstances: readonly ServiceInstance[]): Promise<PrimeSummary> {
    const d = this.#d;
    const started = performance.now();
    const running: Promise<void>[] = [];
    let inFlight = 0;
    const waiting: (() => void)[] = [];
    const backends = new Map<string, Backend | undefined>();
    const backendOf = async (reg: RegistryResource): Promise<Backend | undefined> => {
      const name = reg.metadata?.name ?? '';
      if (backends.has(name)) return backends.get(name);
      const backend = await d.backends.get(reg).then(
        (b) => (b.batchesWrites === true && b.dryRun !== true && reg.spec.dryRun !== true ? b : undefined),
        () => undefined, // the reconcile reports it
      );
      backends.set(name, backend);
      return backend;
    };
    let entries = 0;
    let failed = 0;
    let planned = 0;

    // Reads a group's scopes in one call, plans each as a reconcile would, and hands the backend
    // every write of the group in one call.
    const runGroup = async (group: PrimeGroup): Promise<void> => {
      const { backend, registry, scopes } = group;
      let reads: RegistryEntry[][];
      try {
        reads = backend.recordsMany
          ? await backend.recordsMany(scopes.map((s) => s.scope))
          : await Promise.all(scopes.map((s) => backend.records(s.scope)));
      } catch {
        failed += scopes.length;
        return;
      }
      const changes = {
        create: [] as RegistryEntry[],
        updateOld: [] as RegistryEntry[],
        updateNew: [] as RegistryEntry[],
        delete: [] as RegistryEntry[],
      };
      const primedScopes: { key: string; scopeKey: string; writes: PrimedWrites }[] = [];
      let count = 0;
      scopes.forEach(({ key, owner, finalized, k8sNamespace, scope, endpoints, policy }, i) => {
        const all = reads[i] ?? [];
        const { registryNamespace } = scope;
        const current = all.filter((entry) => isOwnedBy(entry, owner));
        const desired: RegistryEntry[] = gateEndpoints(endpoints, undefined, current, backend.marksUnhealthy === true).map((endpoint) => ({
          registryNamespace,
          k8sNamespace,
          owner,
          endpoint,
        }));
        const plan = calculatePlan({ current, desired, owner, policy });
        if (isEmptyPlan(plan)) return;
        // Ownership as a reconcile checks it: what would touch someone else's entry is left to the
        // reconcile, which reports it. Nothing there (a cold start): nothing of anybody else's.
        let applied = plan;
        if (all.length > 0) {
          const existing = new Map<string, RegistryEntry>();
          for (const entry of all) existing.set(entryKey(entry), entry);
          applied = partitionByOwner(plan, owner, existing).applied;
        }
        const writes = { created: applied.create.length, updated: applied.updateNew.length, deleted: applied.delete.length };
        if (writes.created + writes.updated + writes.deleted === 0) return;
        planned++;
        if (!finalized) this.#noteScope(key, registry, scope);
        changes.create.push(...applied.create);
        changes.updateOld.push(...applied.updateOld);
        changes.updateNew.push(...applied.updateNew);
        changes.delete.push(...applied.delete);
        primedScopes.push({ key, scopeKey: registrationKey({ registry, namespace: registryNamespace, service: scope.service }), writes });
        count += writes.created + writes.updated + writes.deleted;
      });
      if (count === 0) return;
      try {
        await backend.applyChanges(changes);
      } catch {
        failed += primedScopes.length;
        return;
      }
      entries += count;
      for (const { key, scopeKey, writes } of primedScopes) {
        let primed = this.#primed.get(key);
        if (!primed) this.#primed.set(key, (primed = new Map<string, PrimedWrites>()));
        primed.set(scopeKey, writes);
      }
    };
    const launch = async (group: PrimeGroup): Promise<void> => {
      while (inFlight >= PRIME_GROUPS_IN_FLIGHT) await new Promise<void>((resolve) => waiting.push(resolve));
      inFlight++;
      running.push(
        runGroup(group).finally(() => {
          inFlight--;
          waiting.shift()?.();
        }),
      );
      // Scope reads served from memory never leave the microtask queue: let the group's calls go
      // out, so that the backend reads, settles the lease and writes while the rest is gathered.
      await new Promise<void>((resolve) => setImmediate(resolve));
    };

    const groups = new Map<string, PrimeGroup>();
    const launched = new Set<string>();
    const registries = d.caches.registries();
    const defaultTargets = new Map<string, readonly RegistryResource[]>();
    for (const si of serviceInstances) {
      if (si.metadata?.deletionTimestamp || si.spec.healthCheck) continue;
      const key = objectKey(si);
      const ns = si.metadata?.namespace ?? '';
      const owner = this.#owner(si);
      const finalized = (si.metadata?.finalizers ?? []).includes(FINALIZER);
      // The default Registries of a namespace are the same for every ServiceInstance in it.
      const byDefault = !si.spec.registries?.length;
      let targets = byDefault ? defaultTargets.get(ns) : undefined;
      if (!targets) {
        targets = resolveTargets(si.spec.registries, ns, d.caches.namespaceLabels(ns) ?? {}, registries).targets;
        if (byDefault) defaultTargets.set(ns, targets);
      }
      let source: SourceResult | undefined;
      for (const reg of targets) {
        const name = reg.metadata?.name ?? '';
        const backend = backends.has(name) ? backends.get(name) : await backendOf(reg);
        if (!backend) continue;
        let registryNamespace: string;
        try {
          registryNamespace = renderRegistryNamespace(reg.spec.namespace ?? '{namespace}', ns);
        } catch {
          continue;
        }
        source ??= desiredEndpoints(
          { namespace: ns, name: owner.name, spec: si.spec },
          si.spec.selector ? this.#podsFor(ns, si.spec.selector) : [],
        );
        const groupKey = JSON.stringify([name, registryNamespace]);
        let group = groups.get(groupKey);
        if (!group) groups.set(groupKey, (group = { backend, registry: name, scopes: [] }));
        group.scopes.push({
          key,
          owner,
          finalized,
          k8sNamespace: ns,
          scope: { registryNamespace, service: si.spec.service },
          endpoints: source.endpoints,
          policy: reg.spec.policy ?? 'sync',
        });
        if (group.scopes.length >= (launched.has(groupKey) ? primeGroupSize(backend) : PRIME_FIRST_GROUP)) {
          groups.delete(groupKey);
          launched.add(groupKey);
          await launch(group);
        }
      }
    }
    for (const group of groups.values()) await launch(group);
    await Promise.all(running);
    const summary: PrimeSummary = {
      serviceInstances: serviceInstances.length,
      scopes: planned,
      entries,
      failed,
      ms: performance.now() - started,
    };
    if (planned > 0 || failed > 0)
      d.logger.info(
        { ...summary, ms: Math.round(summary.ms) },
        failed > 0 ? 'first pass wrote entries in bulk; the reconciles retry what failed' : 'first pass wrote entries in bulk',
      );
    return summary;
  }

  /** Remembers that `reg`'s scope of an object without our finalizer (yet) is about to be written. */
  #noteUnfinalized(key: string, si: ServiceInstance, reg: RegistryResource): void {
    let registryNamespace: string;
    try {
      registryNamespace = renderRegistryNamespace(reg.spec.namespace ?? '{namespace}', si.metadata?.namespace ?? '');
    } catch {
      return; // an unusable template writes nothing
    }
    this.#noteScope(key, reg.metadata?.name ?? '', { registryNamespace, service: si.spec.service });
  }

  #noteScope(key: string, registry: string, scope: Scope): void {
    const { registryNamespace } = scope;
    let scopes = this.#unfinalized.get(key);
    if (!scopes) this.#unfinalized.set(key, (scopes = new Map<string, { registry: string; scope: Scope }>()));
    scopes.set(registrationKey({ registry, namespace: registryNamespace, service: scope.service }), { registry, scope });
  }

  /**
   * Removes the entries of a ServiceInstance that went (or is going) without our finalizer, from
   * the scopes written while it had none.
   */
  async #removeUnfinalized(key: string, si: ServiceInstance | undefined): Promise<void> {
    const scopes = this.#unfinalized.get(key);
    if (!scopes) return;
    const slash = key.indexOf('/');
    const owner: Owner = { clusterId: this.#d.clusterId, namespace: key.slice(0, slash), name: key.slice(slash + 1) };
    for (const [k, { registry, scope }] of scopes) {
      await this.#cleanupScope(registry, scope, owner, si);
      scopes.delete(k);
    }
    this.#unfinalized.delete(key);
    this.#d.logger.info({ serviceInstance: key }, 'ServiceInstance went before its finalizer was added; entries removed');
  }

  /** The pods a selector can match in `ns` (desiredEndpoints checks the selector on each). */
  #podsFor(ns: string, selector: LabelSelectorLike): readonly SlimPod[] {
    const caches = this.#d.caches;
    return caches.podsMatching ? caches.podsMatching(ns, selector) : caches.pods(ns);
  }

  #owner(si: ServiceInstance): Owner {
    return { clusterId: this.#d.clusterId, namespace: si.metadata?.namespace ?? '', name: si.metadata?.name ?? '' };
  }

  /**
   * Probes the endpoints of a ServiceInstance with a health check and reads their verdicts; stops
   * probing one without. Resolves undefined when no check applies.
   */
  #healthPass(si: ServiceInstance, key: string, source: SourceResult): HealthPass | undefined {
    const tracker = this.#d.health;
    const spec = si.spec.healthCheck;
    // Admission refuses a check with spec.selector: pods have the kubelet's readiness probes.
    if (!tracker || !spec || si.spec.selector) {
      tracker?.untrack(key);
      return undefined;
    }
    let check: ResolvedHealthCheck;
    try {
      check = withDefaults(spec);
    } catch (err: unknown) {
      if (!(err instanceof InvalidHealthCheckError)) throw err;
      tracker.untrack(key);
      return { check: undefined, gate: healthGate(source.endpoints, new Map(), 0), transitions: [], invalid: err.message };
    }
    const verdicts = tracker.track(key, check, source.endpoints);
    const gate = healthGate(source.endpoints, verdicts, check.panicThresholdPercent);
    tracker.setPanic(key, gate.selection.panic);
    return { check, gate, transitions: tracker.takeTransitions(key) };
  }

  async #sync(si: ServiceInstance, key: string): Promise<ReconcileResult> {
    const d = this.#d;
    const ns = si.metadata?.namespace ?? '';
    const owner = this.#owner(si);
    const log = d.logger.child({ serviceInstance: `${ns}/${si.metadata?.name ?? ''}` });
    const labels = d.caches.namespaceLabels(ns) ?? {};
    const { targets, refusals } = resolveTargets(si.spec.registries, ns, labels, d.caches.registries());
    // Static endpoints need no pods: skip copying the namespace's pod cache for them.
    const source = desiredEndpoints(
      { namespace: ns, name: owner.name, spec: si.spec },
      si.spec.selector ? this.#podsFor(ns, si.spec.selector) : [],
    );
    // What the status is about to be when a write of it is still on its way.
    const known = d.writer.intendedStatus?.(si) ?? si.status;
    const previous = new Map((known?.registrations ?? []).map((r) => [registrationKey(r), r]));
    const health = this.#healthPass(si, key, source);
    const finalized = (si.metadata?.finalizers ?? []).includes(FINALIZER);

    const outcomes: TargetOutcome[] = [];
    const wanted = new Set<string>();
    for (const reg of targets) {
      if (!finalized) this.#noteUnfinalized(key, si, reg);
      const outcome = await this.#syncTarget(si, known, reg, source, health?.gate, owner, previous, log);
      wanted.add(registrationKey(outcome.registration));
      outcomes.push(outcome);
    }
    // Scopes written before but no longer targeted (service renamed, registry dropped, template
    // changed): remove what this ServiceInstance owns there.
    const staleErrors: unknown[] = [];
    for (const [k, reg] of previous) {
      if (wanted.has(k) || !reg.service) continue;
      try {
        await this.#cleanupScope(reg.registry, { registryNamespace: reg.namespace, service: reg.service }, owner, si);
      } catch (err: unknown) {
        staleErrors.push(err);
        outcomes.push({
          registration: { ...reg, message: `cleanup pending: ${errorMessage(err)}` },
          registered: 0,
          conflicts: [],
          error: err,
          created: 0,
          updated: 0,
          deleted: 0,
        });
      }
    }

    // What the first pass wrote to a scope no longer targeted has nobody left to report it.
    this.#primed.delete(key);
    const status = this.#status(si, known, source, outcomes, refusals, targets.length, health);
    const target = eventTarget(si);
    for (const r of refusals) d.events.warning(target, r.reason, r.message);
    if (health) this.#healthEvents(si, known, health);
    for (const o of outcomes) {
      if (o.created > 0 || o.updated > 0)
        d.events.normal(
          target,
          EventReason.Registered,
          `registered ${o.created} and updated ${o.updated} endpoint(s) in Registry ${o.registration.registry} (namespace ${o.registration.namespace})`,
        );
      if (o.deleted > 0)
        d.events.normal(
          target,
          EventReason.Deregistered,
          `deregistered ${o.deleted} endpoint(s) from Registry ${o.registration.registry} (namespace ${o.registration.namespace})`,
        );
      for (const c of o.conflicts) d.events.warning(target, EventReason.OwnershipConflict, c.message);
      if (o.error !== undefined)
        d.events.warning(target, EventReason.RegistrationFailed, `Registry ${o.registration.registry}: ${errorMessage(o.error)}`);
    }
    for (const p of source.problems) d.events.warning(target, EventReason.InvalidEndpoints, p);
    if (!sameStatus(status, known)) await d.writer.patchStatus(si, status);

    const errors = [...outcomes.filter((o) => o.error !== undefined).map((o) => o.error), ...staleErrors];
    if (errors.length > 0) {
      const failure = new AggregateError(errors, `ServiceInstance ${ns}/${owner.name}: ${errors.length} registry operation(s) failed`);
      // Retrying cannot fix a Registry that cannot be used as configured; a change of the Registry
      // or of this ServiceInstance queues it again, and so does the next resync.
      if (errors.every(isConfigurationError))
        throw new TerminalError(`${failure.message}: ${errors.map(errorMessage).join('; ')}`, { cause: failure });
      throw failure;
    }
    const jitter = 0.9 + 0.2 * (d.random ?? Math.random)();
    return { requeueAfterMs: Math.round(d.resyncMs * jitter) };
  }

  async #syncTarget(
    si: ServiceInstance,
    known: ServiceInstanceStatus | undefined,
    reg: RegistryResource,
    source: SourceResult,
    gate: HealthGate | undefined,
    owner: Owner,
    previous: ReadonlyMap<string, Registration>,
    log: Logger,
  ): Promise<TargetOutcome> {
    const d = this.#d;
    const registryName = reg.metadata?.name ?? '';
    const ns = si.metadata?.namespace ?? '';
    const service = si.spec.service;
    let registryNamespace = '';
    try {
      registryNamespace = renderRegistryNamespace(reg.spec.namespace ?? '{namespace}', ns);
    } catch (err: unknown) {
      return {
        registration: {
          registry: registryName,
          namespace: '',
          service,
          entries: 0,
          message: `Registry ${registryName} has an unusable namespace template: ${errorMessage(err)}`,
        },
        registered: 0,
        conflicts: [],
        error: err,
        created: 0,
        updated: 0,
        deleted: 0,
      };
    }
    const prev = previous.get(registrationKey({ registry: registryName, namespace: registryNamespace, service }));
    try {
      const backend = await this.#d.backends.get(reg);
      const owned = new OwnedRegistry(backend, owner);
      const scope: Scope = { registryNamespace, service };
      const current = await owned.records(scope);
      const endpoints = gateEndpoints(source.endpoints, gate, current, backend.marksUnhealthy === true);
      const desired: RegistryEntry[] = endpoints.map((endpoint) => ({ registryNamespace, k8sNamespace: ns, owner, endpoint }));
      const changes = calculatePlan({ current, desired, owner, policy: reg.spec.policy ?? 'sync' });
      const siKey = objectKey(si);
      const scopeKey = registrationKey({ registry: registryName, namespace: registryNamespace, service });
      // What the first pass wrote here is reported by this reconcile (#sync forgets it afterwards).
      const primed = this.#primed.get(siKey)?.get(scopeKey);
      let conflicts: readonly ForeignEntryConflict[] = [];
      if (!isEmptyPlan(changes)) {
        log.info(
          {
            registry: registryName,
            registryNamespace,
            create: changes.create.length,
            update: changes.updateNew.length,
            delete: changes.delete.length,
          },
          'applying registry changes',
        );
        const result = await owned.applyChanges(changes);
        conflicts = result.conflicts;
      }
      const refusedCreates = conflicts.filter((c) => c.operation !== 'delete').length;
      const registered = desired.length - refusedCreates;
      const wrote = !isEmptyPlan(changes) || primed !== undefined;
      const fingerprint = endpointsFingerprint(endpoints);
      let written = this.#written.get(siKey);
      if (!written) this.#written.set(siKey, (written = new Map<string, string>()));
      const lastWritten = written.get(scopeKey);
      written.set(scopeKey, fingerprint);
      // Putting back what the registry lost (an expired lease, a hand edit) changes nothing the
      // ServiceInstance registers: no new lastSyncTime, so no status write per ServiceInstance
      // after an outage, and no Registered event.
      const repaired =
        prev !== undefined &&
        prev.entries === registered &&
        (lastWritten === undefined ? known?.observedGeneration === si.metadata?.generation : lastWritten === fingerprint);
      const changed = wrote && !repaired;
      if (repaired && wrote) log.info({ registry: registryName, registryNamespace }, 'registry entries repaired');
      const lastSyncTime =
        changed || !prev?.lastSyncTime
          ? d
              .now()
              .toISOString()
              .replace(/\.\d{3}Z$/, 'Z')
          : prev.lastSyncTime;
      const dry = reg.spec.dryRun === true || backend.dryRun === true;
      const registration: Registration = {
        registry: registryName,
        namespace: registryNamespace,
        service,
        entries: registered,
        lastSyncTime,
        message:
          conflicts.length > 0
            ? conflicts.map((c) => c.message).join('; ')
            : dry
              ? 'dry run: changes are computed and logged, nothing is written'
              : 'in sync',
      };
      // The lease is the registry namespace's, shown on the Registry's status (one write there
      // when it changes, not one per ServiceInstance).
      if (leaseOutdated(reg, registryNamespace, backend.leaseId?.(registryNamespace))) d.onLeaseChanged?.(registryName);
      return {
        registration,
        registered,
        conflicts,
        created: repaired ? 0 : changes.create.length - refusedCreates + (primed?.created ?? 0),
        updated: repaired ? 0 : changes.updateNew.length + (primed?.updated ?? 0),
        deleted: repaired ? 0 : changes.delete.length + (primed?.deleted ?? 0),
      };
    } catch (err: unknown) {
      log.warn({ err, registry: registryName }, 'registry sync failed');
      return {
        registration: {
          registry: registryName,
          namespace: registryNamespace,
          service,
          entries: prev?.entries ?? 0,
          ...(prev?.lastSyncTime ? { lastSyncTime: prev.lastSyncTime } : {}),
          message: errorMessage(err),
        },
        registered: 0,
        conflicts: [],
        error: err,
        created: 0,
        updated: 0,
        deleted: 0,
      };
    }
  }

  #status(
    si: ServiceInstance,
    known: ServiceInstanceStatus | undefined,
    source: SourceResult,
    outcomes: readonly TargetOutcome[],
    refusals: readonly Refusal[],
    targetCount: number,
    health: HealthPass | undefined,
  ): ServiceInstanceStatus {
    const generation = si.metadata?.generation;
    const now = this.#d.now();
    const summary = health?.check ? healthSummary(source, health) : undefined;
    // With a health check, ready means healthy: what consumers are sent to.
    const ready = summary ? summary.healthy : source.ready;
    const failed = outcomes.filter((o) => o.error !== undefined);
    const conflicts = outcomes.flatMap((o) => o.conflicts);
    const registered =
      targetCount === 0
        ? 0
        : Math.min(...outcomes.filter((o) => o.error === undefined).map((o) => o.registered), failed.length > 0 ? 0 : Infinity);
    let conditions: readonly Condition[] = known?.conditions ?? [];
    const gen = generation === undefined ? {} : { observedGeneration: generation };
    let registeredCond: { status: 'True' | 'False'; reason: string; message: string };
    if (failed.length > 0)
      registeredCond = {
        status: 'False',
        reason: ConditionReason.RegistrationFailed,
        message: failed.map((o) => `${o.registration.registry}: ${o.registration.message ?? ''}`).join('; '),
      };
    else if (refusals[0])
      registeredCond = { status: 'False', reason: refusals[0].reason, message: refusals.map((r) => r.message).join('; ') };
    else if (targetCount === 0)
      registeredCond = {
        status: 'False',
        reason: ConditionReason.NoRegistry,
        message:
          'no Registry applies: name one in spec.registries, or mark a Registry default whose namespaceSelector admits this namespace',
      };
    else if (conflicts.length > 0)
      registeredCond = { status: 'False', reason: ConditionReason.OwnershipConflict, message: conflicts.map((c) => c.message).join('; ') };
    else
      registeredCond = {
        status: 'True',
        reason: ConditionReason.Synced,
        message: `${registered} endpoint(s) registered in ${outcomes.map((o) => o.registration.registry).join(', ')}`,
      };
    conditions = setCondition(conditions, { type: ServiceInstanceConditionType.Registered, ...registeredCond, ...gen }, now);
    let readyCond: { status: 'True' | 'False'; reason: string; message: string };
    if (registeredCond.status !== 'True') readyCond = { status: 'False', reason: registeredCond.reason, message: registeredCond.message };
    else if (source.problems.length > 0)
      readyCond = { status: 'False', reason: ConditionReason.InvalidEndpoints, message: source.problems.join('; ') };
    else if (ready === 0)
      readyCond = {
        status: 'False',
        reason: ConditionReason.NoReadyEndpoints,
        message: si.spec.selector
          ? 'no pod matching spec.selector is Ready'
          : summary
            ? `no endpoint has passed its health check${summary.panic ? ' (panic mode keeps them all registered)' : ''}`
            : 'no endpoints',
      };
    else
      readyCond = {
        status: 'True',
        reason: ConditionReason.Synced,
        message: `${ready}/${source.total} endpoint(s) ${summary ? 'healthy' : 'ready'} and registered`,
      };
    conditions = setCondition(conditions, { type: ServiceInstanceConditionType.Ready, ...readyCond, ...gen }, now);
    const healthCond = health ? healthCondition(health, summary) : undefined;
    conditions = healthCond
      ? setCondition(conditions, { type: ServiceInstanceConditionType.EndpointsHealthy, ...healthCond, ...gen }, now)
      : conditions.filter((c) => c.type !== ServiceInstanceConditionType.EndpointsHealthy);
    const status: ServiceInstanceStatus = {
      ...gen,
      conditions,
      readyRatio: `${ready}/${source.total}`,
      ...(summary ? { health: summary } : {}),
      endpoints: { total: source.total, ready, registered: Number.isFinite(registered) ? registered : 0 },
      // Ordinal order, the same in every locale (and without loading ICU's collation data).
      registrations: outcomes
        .map((o) => ({ key: registrationKey(o.registration), registration: o.registration }))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
        .map((o) => o.registration),
    };
    return status;
  }

  /** Events for the verdict changes since the last reconcile, and for panic mode starting or ending. */
  #healthEvents(si: ServiceInstance, known: ServiceInstanceStatus | undefined, health: HealthPass): void {
    const { events } = this.#d;
    const target = eventTarget(si);
    const panic = health.gate.selection.panic;
    for (const t of health.transitions) {
      const where = endpointKey(t.endpoint);
      if (t.to === 'unhealthy')
        events.warning(
          target,
          EventReason.EndpointUnhealthy,
          `endpoint ${where} failed its health check ${t.consecutive} time(s) in a row (${truncateOutput(t.message)}); ` +
            (panic ? 'panic mode keeps it registered' : 'it leaves the etcd Registries and is marked critical in the Consul ones'),
        );
      else if (t.to === 'healthy')
        events.normal(
          target,
          EventReason.EndpointHealthy,
          `endpoint ${where} passed its health check ${t.consecutive} time(s) in a row; it is registered`,
        );
    }
    const wasPanic = known?.health?.panic === true;
    if (panic && !wasPanic) events.warning(target, EventReason.PanicThreshold, panicMessage(health));
    else if (!panic && wasPanic)
      events.normal(
        target,
        EventReason.PanicThresholdCleared,
        `${health.gate.selection.unhealthy} endpoint(s) fail their health check now, no longer enough for panic mode: failing endpoints leave the registries again`,
      );
  }

  async #cleanupScope(registryName: string, scope: Scope, owner: Owner, si: ServiceInstance | undefined): Promise<number> {
    const reg = this.#d.caches.registries().find((r) => r.metadata?.name === registryName);
    // A deleted Registry keeps nothing alive: its lease stops and the entries expire.
    if (!reg) return 0;
    const backend = await this.#d.backends.get(reg);
    const owned = new OwnedRegistry(backend, owner);
    const current = await owned.records(scope);
    if (current.length === 0) return 0;
    await owned.applyChanges({ create: [], updateOld: [], updateNew: [], delete: current });
    if (si)
      this.#d.events.normal(
        eventTarget(si),
        EventReason.Deregistered,
        `deregistered ${current.length} endpoint(s) from Registry ${registryName} (namespace ${scope.registryNamespace}, service ${scope.service})`,
      );
    return current.length;
  }

  async #finalize(si: ServiceInstance): Promise<void> {
    const d = this.#d;
    const ns = si.metadata?.namespace ?? '';
    const owner = this.#owner(si);
    const scopes = new Map<string, { registry: string; scope: Scope }>();
    for (const r of si.status?.registrations ?? []) {
      const service = r.service ?? si.spec.service;
      if (r.namespace)
        scopes.set(registrationKey({ registry: r.registry, namespace: r.namespace, service }), {
          registry: r.registry,
          scope: { registryNamespace: r.namespace, service },
        });
    }
    // Also every Registry it would target now, in case status was never written.
    const { targets } = resolveTargets(si.spec.registries, ns, d.caches.namespaceLabels(ns) ?? {}, d.caches.registries());
    for (const reg of targets) {
      try {
        const registryNamespace = renderRegistryNamespace(reg.spec.namespace ?? '{namespace}', ns);
        const name = reg.metadata?.name ?? '';
        scopes.set(registrationKey({ registry: name, namespace: registryNamespace, service: si.spec.service }), {
          registry: name,
          scope: { registryNamespace, service: si.spec.service },
        });
      } catch {
        // An unusable template never wrote anything.
      }
    }
    let removed = 0;
    for (const { registry, scope } of scopes.values()) {
      try {
        removed += await this.#cleanupScope(registry, scope, owner, si);
      } catch (err: unknown) {
        // Deletion must not hang for ever on a registry that is gone: once nothing has kept the
        // scope's lease alive for longer than its TTL, every entry there has expired by itself.
        if (!(await this.#lapsed(registry, scope, owner))) throw err;
        const message =
          `Registry ${registry} has been unreachable for longer than its entries live without renewal (${errorMessage(err)}); ` +
          `the entries of namespace ${scope.registryNamespace}, service ${scope.service} have expired, ` +
          'so the ServiceInstance is let go without deregistering them';
        d.logger.warn({ serviceInstance: `${ns}/${owner.name}`, registry, registryNamespace: scope.registryNamespace }, message);
        d.events.warning(eventTarget(si), EventReason.EntriesExpired, message);
      }
    }
    d.logger.info({ serviceInstance: `${ns}/${owner.name}`, removed }, 'ServiceInstance deleted; entries removed');
    await d.writer.removeFinalizer(si, FINALIZER);
  }
}

function panicMessage(health: HealthPass): string {
  const { healthy, unhealthy } = health.gate.selection;
  const total = health.gate.selection.registered.length;
  return (
    `${unhealthy} of ${total} endpoint(s) fail their health check and only ${healthy} pass, below panicThresholdPercent ` +
    `${health.check?.panicThresholdPercent ?? 0}%: every endpoint is kept registered (fail open) until more pass their checks`
  );
}

/** A short digest of the endpoints a scope should hold, to tell a change from a repair. */
function endpointsFingerprint(endpoints: readonly unknown[]): string {
  return createHash('sha1').update(JSON.stringify(endpoints)).digest('base64');
}

/** RFC 3339 to the second, as Kubernetes writes times. */
function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** status.health: counts by verdict and the first unhealthy endpoints with their last failure. */
function healthSummary(source: SourceResult, health: HealthPass): EndpointHealthSummary {
  const counts = { healthy: 0, unhealthy: 0, unknown: 0 };
  const unhealthyEndpoints: UnhealthyEndpoint[] = [];
  for (const endpoint of source.endpoints) {
    const verdict = health.gate.verdicts.get(endpoint.instanceId);
    const status = verdict?.status ?? 'unknown';
    counts[status]++;
    if (verdict && status === 'unhealthy' && unhealthyEndpoints.length < MAX_UNHEALTHY_IN_STATUS)
      unhealthyEndpoints.push({
        address: endpoint.address,
        port: endpoint.port,
        lastFailure: truncateOutput(verdict.lastMessage),
        since: rfc3339(verdict.since),
      });
  }
  return { ...counts, panic: health.gate.selection.panic, ...(unhealthyEndpoints.length > 0 ? { unhealthyEndpoints } : {}) };
}

/** The EndpointsHealthy condition. */
function healthCondition(
  health: HealthPass,
  summary: EndpointHealthSummary | undefined,
): { status: 'True' | 'False' | 'Unknown'; reason: string; message: string } {
  if (health.invalid !== undefined || !summary)
    return {
      status: 'Unknown',
      reason: ConditionReason.InvalidSpec,
      message: `${health.invalid ?? 'spec.healthCheck cannot be used'}; endpoints are left as the registries hold them`,
    };
  if (summary.panic) return { status: 'False', reason: ConditionReason.PanicThreshold, message: panicMessage(health) };
  if (summary.unhealthy > 0) {
    const listed = (summary.unhealthyEndpoints ?? []).map((u) => `${endpointKey(u)}: ${u.lastFailure}`).join('; ');
    return {
      status: 'False',
      reason: ConditionReason.SomeUnhealthy,
      message: `${summary.unhealthy} of ${summary.healthy + summary.unhealthy + summary.unknown} endpoint(s) failing their health check (${listed})`,
    };
  }
  if (summary.unknown > 0)
    return {
      status: 'Unknown',
      reason: ConditionReason.AwaitingProbes,
      message: `${summary.unknown} endpoint(s) not probed enough yet; until then they are left as the registries hold them`,
    };
  return { status: 'True', reason: ConditionReason.AllHealthy, message: `all ${summary.healthy} endpoint(s) pass their health check` };
}

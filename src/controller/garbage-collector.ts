/**
 * Owner-wide garbage collection: the safety net under the finalizer.
 *
 * Cleanup in the ServiceInstance reconciler knows only the scopes listed in a ServiceInstance's
 * status, so entries can be left behind when that memory is lost: a service renamed twice before
 * its status was written, a finalizer removed by hand, a ServiceInstance deleted while no operator
 * ran. Each would live as long as its registry namespace's lease, which the operator keeps alive
 * for the namespace's other entries. The sweep reads every entry this cluster owns in each
 * Registry and removes those whose ServiceInstance no longer exists or no longer targets that
 * scope. Entries of other clusters (or of nobody known) are never touched, an upsert-only
 * Registry is never swept, a dry run only logs, and every deletion goes through the owner wrapper
 * and the backend's write guards like any other.
 *
 * The same sweep then releases the registry namespaces nothing writes to any more (their
 * namespace deleted, the template changed): their lease keepalive or heartbeat stops, their
 * bookkeeping goes, and the backend forgets them, so per-namespace state does not only grow.
 */
import type { Logger } from 'pino';
import type { Registry as RegistryResource, ServiceInstance } from '../api/v1alpha1/types.ts';
import { describe } from '../errors.ts';
import { OwnedRegistry } from '../registry/owner.ts';
import type { BackendProvider } from '../registry/provider.ts';
import { renderRegistryNamespace } from '../registry/template.ts';
import type { RegistryEntry } from '../registry/types.ts';
import { systemClock, type Clock } from '../clock.ts';
import type { ReconcilerCaches } from './service-instance-reconciler.ts';
import { resolveTargets } from './targets.ts';

/** What the collector reads: the reconciler's caches and every cached ServiceInstance. */
export type CollectorCaches = ReconcilerCaches & { allServiceInstances(): readonly ServiceInstance[] };

/** Everything the collector depends on, injected. */
export interface GarbageCollectorDeps {
  readonly clusterId: string;
  readonly caches: CollectorCaches;
  readonly backends: BackendProvider;
  readonly logger: Logger;
  /** Namespaces this operator watches; empty: all. Owners elsewhere belong to another install. */
  readonly watchNamespaces: readonly string[];
  /** Time between sweeps after the first. */
  readonly intervalMs: number;
  readonly clock?: Clock;
  /** Entries removed from a Registry by a sweep (for the metric). */
  readonly onCollected?: (registry: string, entries: number) => void;
}

/** What one sweep did. */
export interface SweepResult {
  /** Entries removed (or, in a dry run, that would have been), per Registry. */
  readonly collected: ReadonlyMap<string, number>;
  /** Registries that could not be swept, with the reason. */
  readonly failed: ReadonlyMap<string, string>;
}

/**
 * What one sweep knows of the ServiceInstances, worked out once from the caches: which registry
 * namespaces each ServiceInstance's Registries write, and which each Registry serves.
 */
interface SweepView {
  /** Per ServiceInstance key: the registry namespaces its targets write; undefined when a template cannot be rendered. */
  readonly written: ReadonlyMap<string, ReadonlySet<string> | undefined>;
  /** Per Registry name: the registry namespaces some ServiceInstance writes through it. */
  readonly wanted: ReadonlyMap<string, ReadonlySet<string>>;
}

/** Sweeps once on start, then every interval, until stopped. */
export class GarbageCollector {
  readonly #d: GarbageCollectorDeps;
  readonly #clock: Clock;
  #timer: unknown;
  #running: Promise<SweepResult> | undefined;
  #stopped = false;

  constructor(deps: GarbageCollectorDeps) {
    this.#d = deps;
    this.#clock = deps.clock ?? systemClock;
  }

  /** Runs a sweep now and schedules the next ones. Call once the caches have synced. */
  start(): void {
    if (this.#stopped || this.#timer !== undefined) return;
    const loop = (): void => {
      void this.sweep().finally(() => {
        if (!this.#stopped) this.#timer = this.#clock.setTimeout(loop, this.#d.intervalMs);
      });
    };
    loop();
  }

  /** Stops scheduling and waits for a sweep under way. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    await this.#running?.catch(() => undefined);
  }

  /** One sweep over every Registry; never rejects (a Registry that fails is reported and skipped). */
  sweep(): Promise<SweepResult> {
    this.#running ??= this.#sweep().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #sweep(): Promise<SweepResult> {
    const collected = new Map<string, number>();
    const failed = new Map<string, string>();
    const view = this.#view();
    for (const reg of this.#d.caches.registries()) {
      const name = reg.metadata?.name ?? '';
      if ((reg.spec.policy ?? 'sync') === 'upsert-only') continue;
      // A Registry nothing targets and no backend serves keeps nothing alive: its entries expire
      // by themselves, and building a backend just to look would read Secrets nobody needs.
      if (!view.wanted.has(name) && this.#d.backends.isBuilt?.(name) !== true) continue;
      try {
        const n = await this.#sweepRegistry(reg, view);
        if (n > 0) collected.set(name, n);
      } catch (err: unknown) {
        failed.set(name, describe(err));
        this.#d.logger.warn({ registry: name, err }, 'garbage collection skipped a Registry that could not be read; next sweep retries');
      }
    }
    return { collected, failed };
  }

  async #sweepRegistry(reg: RegistryResource, view: SweepView): Promise<number> {
    const d = this.#d;
    const name = reg.metadata?.name ?? '';
    const backend = await d.backends.get(reg);
    if (!backend.ownedByCluster) return 0;
    const owned = await backend.ownedByCluster();
    const orphans = new Map<string, RegistryEntry[]>();
    for (const entry of owned) {
      if (entry.owner.clusterId !== d.clusterId || !this.#orphaned(entry, view)) continue;
      const key = `${entry.owner.namespace}/${entry.owner.name}`;
      orphans.set(key, [...(orphans.get(key) ?? []), entry]);
    }
    let removed = 0;
    for (const [key, entries] of orphans) {
      const first = entries[0];
      if (first === undefined) continue;
      if (backend.dryRun) {
        d.logger.info(
          { registry: name, serviceInstance: key, entries: entries.length },
          'dry run: garbage collection would remove entries whose ServiceInstance no longer wants them',
        );
        continue;
      }
      const { applied, conflicts } = await new OwnedRegistry(backend, first.owner).applyChanges({
        create: [],
        updateOld: [],
        updateNew: [],
        delete: entries,
      });
      removed += applied.delete.length;
      if (applied.delete.length > 0)
        d.logger.info(
          { registry: name, serviceInstance: key, entries: applied.delete.length },
          'garbage collection removed entries whose ServiceInstance no longer wants them',
        );
      for (const c of conflicts) d.logger.warn({ registry: name }, c.message);
    }
    if (removed > 0) d.onCollected?.(name, removed);
    if (backend.retainNamespaces) {
      // The backend logs what it released.
      await backend.retainNamespaces(view.wanted.get(name) ?? new Set(), d.intervalMs);
    }
    return removed;
  }

  /**
   * Resolves every cached ServiceInstance's targets once per sweep (not once per Registry and
   * entry): the registry namespaces it writes, and per Registry the namespaces it serves, which
   * includes ServiceInstances being deleted (their finalizer still has to clean up). Everything
   * else may be released.
   */
  #view(): SweepView {
    const d = this.#d;
    const written = new Map<string, ReadonlySet<string> | undefined>();
    const wanted = new Map<string, Set<string>>();
    for (const si of d.caches.allServiceInstances()) {
      const ns = si.metadata?.namespace ?? '';
      const { targets } = resolveTargets(si.spec.registries, ns, d.caches.namespaceLabels(ns) ?? {}, d.caches.registries());
      let namespaces: Set<string> | undefined = new Set<string>();
      for (const target of targets) {
        let registryNamespace: string;
        try {
          registryNamespace = renderRegistryNamespace(target.spec.namespace ?? '{namespace}', ns);
        } catch {
          namespaces = undefined; // an unusable template writes nothing, and decides nothing here
          continue;
        }
        namespaces?.add(registryNamespace);
        const name = target.metadata?.name ?? '';
        let set = wanted.get(name);
        if (set === undefined) wanted.set(name, (set = new Set()));
        set.add(registryNamespace);
      }
      written.set(`${ns}/${si.metadata?.name ?? ''}`, namespaces);
    }
    return { written, wanted };
  }

  /**
   * Whether nothing vouches for an entry of this cluster any more: its ServiceInstance is gone, or
   * no longer has the entry's service, or none of its Registries writes the entry's registry
   * namespace. Anything the caches cannot decide yet (an unwatched namespace, a namespace not cached, a ServiceInstance
   * being deleted, which its finalizer cleans up) counts as wanted.
   */
  #orphaned(entry: RegistryEntry, view: SweepView): boolean {
    const d = this.#d;
    const ns = entry.owner.namespace;
    if (d.watchNamespaces.length > 0 && !d.watchNamespaces.includes(ns)) return false;
    const key = `${ns}/${entry.owner.name}`;
    const si: ServiceInstance | undefined = d.caches.serviceInstance(key);
    if (si === undefined) return true;
    if (si.metadata?.deletionTimestamp) return false;
    if (d.caches.namespaceLabels(ns) === undefined) return false;
    if (si.spec.service !== entry.endpoint.service) return true;
    // Entries carry their owner, not the Registry that wrote them, and two Registries may reach the
    // same storage (one etcd prefix or Consul agent under two addresses). So an entry is wanted
    // when any Registry its ServiceInstance targets writes its registry namespace, not only this one.
    const written = view.written.get(key);
    // Not in the view (created after it was made) or an unusable template: leave it to the reconciler.
    if (written === undefined) return false;
    return !written.has(entry.registryNamespace);
  }
}

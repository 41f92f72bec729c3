/**
 * An in-memory source for unit tests above the backend boundary: the test sets a service's
 * instances or cuts the "registry", and the source tells its watchers as a real one would.
 */
import type { Instance } from '../src/instance.ts';
import type { DiscoverySource, SourceListener, SourceWatch } from '../src/source.ts';

/** A registry held in memory, one namespace. */
export class MemorySource implements DiscoverySource {
  readonly kind = 'memory';
  readonly namespace: string;
  readonly #services = new Map<string, readonly Instance[]>();
  readonly #watchers = new Map<string, Set<SourceListener>>();
  #revision = 0;
  #down: Error | undefined;
  closed = false;

  constructor(namespace = 'test') {
    this.namespace = namespace;
  }

  /** Replaces the instances of `service` and tells its watchers (unless the registry is down). */
  set(service: string, instances: readonly Instance[]): void {
    this.#services.set(service, instances);
    this.#revision++;
    if (this.#down === undefined) for (const l of this.#watchers.get(service) ?? []) l.update(instances, String(this.#revision));
  }

  /** Cuts every watcher off, as a registry outage would. */
  goDown(error = new Error('registry unreachable')): void {
    this.#down = error;
    for (const set of this.#watchers.values()) for (const l of set) l.disconnected(error);
  }

  /** Brings the registry back: watchers catch up with the current sets. */
  comeBack(): void {
    this.#down = undefined;
    for (const [service, set] of this.#watchers) for (const l of set) l.update(this.#services.get(service) ?? [], String(this.#revision));
  }

  /** How many watches are open on `service`. */
  watchers(service: string): number {
    return this.#watchers.get(service)?.size ?? 0;
  }

  watch(service: string, listener: SourceListener): SourceWatch {
    let set = this.#watchers.get(service);
    if (set === undefined) this.#watchers.set(service, (set = new Set()));
    set.add(listener);
    queueMicrotask(() => {
      if (!set.has(listener)) return;
      if (this.#down === undefined) listener.update(this.#services.get(service) ?? [], String(this.#revision));
      else listener.disconnected(this.#down);
    });
    return {
      close: async () => {
        set.delete(listener);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

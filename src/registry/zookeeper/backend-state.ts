/** What the parts of one ZooKeeper backend (session keeper, reads, writes) share. */
import type { RegistryLogger } from '../logger.ts';
import type { RegistryEntry } from '../types.ts';
import type { ZooKeeperValueFormat } from './codec.ts';
import type { ZooKeeperLayout } from './paths.ts';
import type { SessionKeeper } from './session-keeper.ts';

/** A failed ZooKeeper operation of the backend; `cause` holds the client error. */
export class ZooKeeperRegistryError extends Error {
  override readonly name: string = 'ZooKeeperRegistryError';
}

/** A node was written or deleted by someone else after it was read for the plan; nothing of the entry was written. */
export class ZooKeeperEntryChangedError extends ZooKeeperRegistryError {
  override readonly name = 'ZooKeeperEntryChangedError';
}

/** A node as last read or written here: what every write of it is compared against. */
export interface KnownNode {
  /** Data version. */
  readonly version: number;
  /** ephemeralOwner: the session holding it, zeros for a persistent node. */
  readonly owner: string;
}

/** An entry this backend holds, as it was last written or read back. */
export interface HeldEntry {
  readonly entry: RegistryEntry;
}

/** Data of the service nodes this backend creates, so it removes only those, and only when empty. */
export const SERVICE_NODE_MARKER = Buffer.from('kube-registrar');

/**
 * Values by node path, grouped by parent path, so that what is known under one service is found
 * without walking every node of the backend (a read of one scope stays O(its own nodes)).
 */
export class NodeMap<V> {
  readonly #byParent = new Map<string, Map<string, V>>();
  #size = 0;

  static #split(path: string): [string, string] {
    const slash = path.lastIndexOf('/');
    return [path.slice(0, slash), path.slice(slash + 1)];
  }

  get size(): number {
    return this.#size;
  }

  get(path: string): V | undefined {
    const [parent, name] = NodeMap.#split(path);
    return this.#byParent.get(parent)?.get(name);
  }

  has(path: string): boolean {
    return this.get(path) !== undefined;
  }

  set(path: string, value: V): this {
    const [parent, name] = NodeMap.#split(path);
    let children = this.#byParent.get(parent);
    if (children === undefined) this.#byParent.set(parent, (children = new Map<string, V>()));
    if (!children.has(name)) this.#size++;
    children.set(name, value);
    return this;
  }

  delete(path: string): boolean {
    const [parent, name] = NodeMap.#split(path);
    const children = this.#byParent.get(parent);
    if (children?.delete(name) !== true) return false;
    this.#size--;
    if (children.size === 0) this.#byParent.delete(parent);
    return true;
  }

  /** The paths and values directly under `parent`. */
  *childrenOf(parent: string): IterableIterator<[string, V]> {
    for (const [name, value] of this.#byParent.get(parent) ?? []) yield [`${parent}/${name}`, value];
  }

  /** Whether anything is known directly under `parent`. */
  hasChildren(parent: string): boolean {
    return this.#byParent.has(parent);
  }

  *[Symbol.iterator](): IterableIterator<[string, V]> {
    for (const parent of this.#byParent.keys()) yield* this.childrenOf(parent);
  }

  *keys(): IterableIterator<string> {
    for (const [path] of this) yield path;
  }
}

/** The memory of one backend; every field is owned by the backend's parts, not by callers. */
export class ZooKeeperBackendState {
  /** Stat of each entry and owner-index node last read or written. */
  readonly nodes = new NodeMap<KnownNode>();
  /**
   * The entries of this backend, by entry path: re-created under a new session after an expiry,
   * without waiting for every ServiceInstance to resync.
   */
  readonly held = new NodeMap<HeldEntry>();
  /** `registrationTimeUTC` of each `curator` entry read back, written again unchanged. */
  readonly registeredAt = new Map<string, number>();
  /** Parent paths known to exist: service nodes and every ancestor of them. */
  readonly parents = new Set<string>();
  /** Counts writes that landed, so a read knows whether it raced one. */
  epoch = 0;
}

/** The session keeper, layout, memory and validated settings of one ZooKeeper backend. */
export interface ZooKeeperBackendContext {
  readonly keeper: SessionKeeper;
  readonly layout: ZooKeeperLayout;
  readonly state: ZooKeeperBackendState;
  readonly clusterId: string;
  readonly format: ZooKeeperValueFormat;
  readonly dryRun: boolean;
  readonly logger: RegistryLogger;
  /** Milliseconds since the epoch. */
  readonly now: () => number;
}

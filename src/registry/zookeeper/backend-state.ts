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

/** The memory of one backend; every field is owned by the backend's parts, not by callers. */
export class ZooKeeperBackendState {
  /** Stat of each entry and owner-index node last read or written. */
  readonly nodes = new Map<string, KnownNode>();
  /**
   * The entries of this backend, by entry path: re-created under a new session after an expiry,
   * without waiting for every ServiceInstance to resync.
   */
  readonly held = new Map<string, HeldEntry>();
  /** `registrationTimeUTC` of each `curator` entry read back, written again unchanged. */
  readonly registeredAt = new Map<string, number>();
  /** Parent paths known to exist. */
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

/**
 * What the etcd backend knows of each registry namespace: its lease, its place in the write queue,
 * and its memory of the keys it owns, their mod revisions and the owner-index keys seen.
 *
 * The memory exists because after a lease is lost its keys are gone from etcd, and they must be
 * rewritten without waiting for every ServiceInstance to resync; the revisions exist because every
 * write of an entry is guarded by the revision the plan read.
 */
import { sameOwner } from '../../plan/plan.ts';
import type { Owner, Scope } from '../types.ts';
import type { StoredKeyValue, TxnGuard, TxnWrite } from './client.ts';
import { decodeEntry } from './codec.ts';
import type { EtcdKeyLayout } from './keys.ts';
import type { NamespaceView } from './namespace-view.ts';
import type { PendingWrites } from './writes.ts';

/** One read of a service's entry keys and owner-index keys, as {@link NamespaceState.recordRead} takes it. */
export interface ServiceRead {
  /** `<prefix>/<ns>/<service>/` */
  readonly valuePrefix: string;
  /** `<prefix>/_kube-registrar/owners/<ns>/<service>/` */
  readonly indexPrefix: string;
  readonly values: readonly StoredKeyValue[];
  readonly index: readonly StoredKeyValue[];
  /** Decimal id of the namespace's live lease, or undefined when it has none. */
  readonly lease: string | undefined;
}

/** The state of one registry namespace; every field is owned by the backend's parts, not by callers. */
export class NamespaceState {
  readonly registryNamespace: string;
  /** The lease this namespace's keys hang on, once known. */
  lease: bigint | undefined = undefined;
  /** etcd said `lease` is gone; entries must be rewritten on a new one. */
  lost = false;
  recovering = false;
  /**
   * When a read last found no live lease of ours for this namespace and granted none, in ms since
   * the epoch; reads within the view age after it read without asking again (a write grants one).
   */
  leaselessAt: number | undefined = undefined;
  /**
   * Every key on our lease with its value. Needed because after a lease is lost its keys are gone
   * from etcd, and they must be rewritten without waiting for every ServiceInstance to resync.
   */
  readonly owned = new Map<string, string>();
  /** Owner-index keys seen in etcd, so a switch to the json format can remove them. */
  readonly indexKeys = new Set<string>();
  /**
   * Mod revision of each entry key as last read or written here: every write of an entry is
   * guarded by it, so a foreign write that lands between a plan's read and its write makes the
   * write fail instead of being overwritten or deleted.
   */
  readonly revisions = new Map<string, string>();
  /** Serialises lease work and writes of this namespace. */
  tail: Promise<void> = Promise.resolve();
  /** Writes waiting for the transaction under way to finish; they go to etcd together. */
  pending: PendingWrites | undefined = undefined;
  /** A flush loop is running for this namespace. */
  flushing = false;
  /** Counts transactions that landed, so a read knows whether writes landed while it ran. */
  epoch = 0;
  /** The namespace as last read whole, with this backend's writes since; scope reads are served from it. */
  view: NamespaceView | undefined = undefined;
  /** The read of the namespace under way, which scope reads arriving meanwhile share. */
  viewLoading: Promise<NamespaceView> | undefined = undefined;
  /** Transactions that landed while the namespace was being read for a view. */
  #viewBacklog: { writes: readonly TxnWrite[]; revision: string }[] | undefined = undefined;
  /** When etcd last confirmed the lease alive (granted, adopted or renewed), in ms since the epoch. */
  renewedAt = 0;
  /** When a read or write last asked for this namespace, in ms since the epoch. */
  usedAt = 0;
  /** `<prefix>/_kube-registrar/owners/<ns>/`: tells owner-index keys from entry keys. */
  readonly #indexPrefix: string;

  /** `indexPrefix` is the namespace's owner-index prefix (see {@link EtcdKeyLayout.ownerIndexNamespacePrefix}). */
  constructor(registryNamespace: string, indexPrefix: string) {
    this.registryNamespace = registryNamespace;
    this.#indexPrefix = indexPrefix;
  }

  /** Runs `work` after every earlier piece of lease work and every write of this namespace. */
  serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Guard that holds only while `key` is as last read or written here ('0': absent). */
  revisionGuard(key: string): TxnGuard {
    return { key, modRevision: this.revisions.get(key) ?? '0' };
  }

  /** Takes in the writes of a transaction that landed at `revision`. */
  remember(writes: readonly TxnWrite[], revision: string): void {
    this.epoch++;
    this.view?.apply(writes, revision);
    this.#viewBacklog?.push({ writes, revision });
    for (const w of writes) {
      const isIndex = w.key.startsWith(this.#indexPrefix);
      if (w.kind === 'put') {
        if (w.lease !== 0n) this.owned.set(w.key, w.value);
        if (isIndex) this.indexKeys.add(w.key);
        else this.revisions.set(w.key, revision);
      } else {
        this.owned.delete(w.key);
        this.revisions.delete(w.key);
        if (isIndex) this.indexKeys.delete(w.key);
      }
    }
  }

  /** Records the revision of moved keys without touching the owned memory (still the old lease's). */
  rememberRevisions(puts: readonly TxnWrite[], revision: string): void {
    // The moved keys' leases changed: the next read looks at etcd again.
    if (puts.length > 0) this.view = undefined;
    for (const w of puts) if (!w.key.startsWith(this.#indexPrefix)) this.revisions.set(w.key, revision);
  }

  /** Replaces the owned-key memory with the keys of a read of the whole namespace that hang on `lease`. */
  replaceOwned(values: readonly StoredKeyValue[], index: readonly StoredKeyValue[], lease: bigint): void {
    const dec = lease.toString();
    this.owned.clear();
    for (const kv of [...values, ...index]) if (kv.lease === dec) this.owned.set(kv.key, kv.value);
    for (const kv of index) this.indexKeys.add(kv.key);
  }

  /** Starts collecting the transactions that land while the namespace is read for a view. */
  beginViewRead(): void {
    this.#viewBacklog = [];
  }

  /** Makes `view` the namespace's view, with the transactions that landed while it was read applied. */
  endViewRead(view: NamespaceView | undefined): void {
    if (view) for (const { writes, revision } of this.#viewBacklog ?? []) view.apply(writes, revision);
    this.#viewBacklog = undefined;
    this.view = view;
  }

  /**
   * Takes in a read of the whole namespace (entries under `<prefix>/<ns>/`, owner index under
   * `indexPrefix`), as {@link recordRead} does for one service, in one pass. Returns the values
   * this backend remembered writing at keys that now hold something else: a value edited by hand
   * into something no format decodes is still ours to repair if we wrote the key.
   */
  recordNamespaceRead(
    values: readonly StoredKeyValue[],
    index: readonly StoredKeyValue[],
    lease: string | undefined,
    current: boolean,
  ): Map<string, string> {
    const remembered = new Map<string, string>();
    for (const kv of values) {
      const value = this.owned.get(kv.key);
      if (value !== undefined && value !== kv.value) remembered.set(kv.key, value);
    }
    // What the read replaces is updated in place, not cleared and refilled: every view refresh
    // would otherwise rebuild three tables of the namespace's size for the old generation to collect.
    for (const kv of index) this.indexKeys.add(kv.key);
    if (current) keepOnly(this.indexKeys, index.length, () => index.map((kv) => kv.key));
    for (const kv of values) {
      const known = current ? undefined : this.revisions.get(kv.key);
      if (known === undefined || BigInt(known) < BigInt(kv.modRevision)) this.revisions.set(kv.key, kv.modRevision);
    }
    if (current) keepOnly(this.revisions, values.length, () => values.map((kv) => kv.key));
    if (lease !== undefined && current) {
      const onLease = [...values, ...index].filter((kv) => kv.lease === lease);
      for (const kv of onLease) this.owned.set(kv.key, kv.value);
      keepOnly(this.owned, onLease.length, () => onLease.map((kv) => kv.key));
    }
    return remembered;
  }

  /**
   * Takes in a read of one service. `current` says that no write landed while the read ran: only
   * then does the read replace what is remembered of the service's keys.
   */
  recordRead(read: ServiceRead, current: boolean): void {
    const { valuePrefix, indexPrefix, values, index, lease } = read;
    if (current) {
      for (const key of this.indexKeys) if (key.startsWith(indexPrefix)) this.indexKeys.delete(key);
      for (const kv of index) this.indexKeys.add(kv.key);
      for (const key of this.revisions.keys()) if (key.startsWith(valuePrefix)) this.revisions.delete(key);
    }
    for (const kv of values) {
      // Revisions only grow: a read that raced a write of ours never takes the newer one back.
      const known = this.revisions.get(kv.key);
      if (known === undefined || BigInt(known) < BigInt(kv.modRevision)) this.revisions.set(kv.key, kv.modRevision);
    }
    if (lease !== undefined && current) {
      // Remember exactly what etcd holds on our lease; keys deleted or re-put without the lease by
      // hand are forgotten here and repaired by the plan. Without a live lease, keep the memory:
      // it is what a lease recovery rewrites.
      for (const key of this.owned.keys()) {
        if (key.startsWith(valuePrefix) || key.startsWith(indexPrefix)) this.owned.delete(key);
      }
      for (const kv of [...values, ...index]) if (kv.lease === lease) this.owned.set(kv.key, kv.value);
    }
  }
}

/**
 * Drops from `held` every key but `keys()` (`count` of them, all in `held` already): the keys are
 * listed only when `held` has more than that.
 */
function keepOnly(held: Map<string, unknown> | Set<string>, count: number, keys: () => readonly string[]): void {
  if (held.size <= count) return;
  const keep = new Set(keys());
  for (const key of held.keys()) if (!keep.has(key)) held.delete(key);
}

/** The state of every registry namespace the backend has used, by name; `get` does not count as a use. */
export class NamespaceStates extends Map<string, NamespaceState> {
  readonly #keys: EtcdKeyLayout;
  readonly #now: () => number;

  /** `now` stamps each use of a namespace, so that idle ones can be released. */
  constructor(keys: EtcdKeyLayout, now: () => number) {
    super();
    this.#keys = keys;
    this.#now = now;
  }

  /** The namespace's state, created if need be, marked as used now. Throws for a name etcd keys cannot hold. */
  use(registryNamespace: string): NamespaceState {
    let state = this.get(registryNamespace);
    if (state === undefined) {
      this.#keys.namespacePrefix(registryNamespace); // refuse bad names before any I/O
      state = new NamespaceState(registryNamespace, this.#keys.ownerIndexNamespacePrefix(registryNamespace));
      this.set(registryNamespace, state);
    }
    state.usedAt = this.#now();
    return state;
  }

  /**
   * Drops `owner`'s keys in the scope from the memory of owned keys, so that a lease recovery does
   * not write back the entries of a ServiceInstance that is gone while etcd could not be reached.
   */
  forget(scope: Scope, owner: Owner): void {
    const state = this.get(scope.registryNamespace);
    if (state === undefined) return;
    const valuePrefix = this.#keys.servicePrefix(scope.registryNamespace, scope.service);
    const indexPrefix = this.#keys.ownerIndexServicePrefix(scope.registryNamespace, scope.service);
    for (const [key, value] of [...state.owned]) {
      if (!key.startsWith(valuePrefix)) continue;
      const instanceId = key.slice(valuePrefix.length);
      const indexKey = `${indexPrefix}${instanceId}`;
      const decoded = decodeEntry(value, state.owned.get(indexKey), {
        registryNamespace: scope.registryNamespace,
        service: scope.service,
        instanceId,
      });
      if (decoded === undefined || !sameOwner(decoded.entry.owner, owner)) continue;
      state.owned.delete(key);
      state.owned.delete(indexKey);
    }
  }
}

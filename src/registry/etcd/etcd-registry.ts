/**
 * The etcd backend: entries under `<prefix>/<registryNamespace>/<service>/<instanceId>`, one lease
 * per (registry namespace, cluster), writes in transactions of at most 128 operations.
 *
 * The lease id lives in etcd, not in memory, so a restarted operator or a new leader adopts the
 * lease (and thereby every entry on it) instead of granting a new one and rewriting everything.
 * Every transaction is guarded by that id key: if someone else has moved the namespace to another
 * lease, the write is not applied and the backend re-reads before trying again.
 */
import { EtcdLeaseInvalidError, EtcdPermissionDeniedError } from 'etcd3';

import { sameOwner } from '../../plan/plan.ts';
import { UNKNOWN_OWNER } from '../owner.ts';
import type { Changes, Owner, Registry, RegistryEntry, Scope } from '../types.ts';
import { createEtcdClient } from './client.ts';
import type { EtcdClient, StoredKeyValue, TxnGuard, TxnResult, TxnWrite } from './client.ts';
import { decodeEntry, encodeEntry, ETCD_VALUE_FORMATS } from './codec.ts';
import type { EtcdValueFormat } from './codec.ts';
import { LeaseKeepalive } from './keepalive.ts';
import { EtcdKeyLayout } from './keys.ts';
import { silentLogger } from './logger.ts';
import type { WriteFence } from '../fence.ts';
import type { RegistryLogger } from './logger.ts';

/** Credentials read from the Registry's `credentialsSecretRef`. */
export interface EtcdCredentials {
  readonly username?: string;
  readonly password?: string;
  /** PEM CA bundle (`ca.crt`). */
  readonly ca?: Buffer | string;
  /** PEM client certificate (`tls.crt`). */
  readonly cert?: Buffer | string;
  /** PEM client key (`tls.key`). */
  readonly key?: Buffer | string;
}

/** Configuration of one {@link EtcdRegistry}: one Registry resource of type etcd. */
export interface EtcdRegistryOptions {
  /** Client URLs, e.g. `https://etcd-0:2379`. */
  readonly endpoints: readonly string[];
  readonly credentials?: EtcdCredentials;
  /** Deadline of every etcd call in milliseconds (default 5000). */
  readonly callTimeoutMs?: number;
  /** TTL of the leases the entries hang on (default 30). */
  readonly leaseTtlSeconds?: number;
  /** Key prefix, e.g. `/services`. */
  readonly prefix: string;
  /** Value format (default `json`). */
  readonly format?: EtcdValueFormat;
  /** Read, compute and log, but write nothing and touch no lease. */
  readonly dryRun?: boolean;
  /** This cluster's id; part of every owner and of the lease bookkeeping. */
  readonly clusterId: string;
  /** Operations per transaction (default 128, etcd's default `--max-txn-ops`). */
  readonly maxTxnOps?: number;
  readonly logger?: RegistryLogger;
  /** Called whenever keeping the leases alive fails (for metrics). */
  readonly onKeepaliveFailure?: () => void;
  /** Refuses every write once closed (leadership lost). */
  readonly fence?: WriteFence;
  /** Milliseconds since the epoch (default Date.now); injected by tests. */
  readonly now?: () => number;
  /** Wraps the etcd client, e.g. to cut a link at an exact step in fault-injection tests. */
  readonly clientMiddleware?: (client: EtcdClient) => EtcdClient;
}

/** A failed etcd operation; `cause` holds the client error. */
export class EtcdRegistryError extends Error {
  override readonly name: string = 'EtcdRegistryError';
}

/** An entry key was written or deleted by someone else after it was read for the plan; nothing of it was written. */
export class EtcdEntryChangedError extends EtcdRegistryError {
  override readonly name = 'EtcdEntryChangedError';
}

/** Default deadline of an etcd call. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default lease TTL. */
export const DEFAULT_LEASE_TTL_SECONDS = 30;
/** etcd's default limit of operations in one transaction. */
export const DEFAULT_MAX_TXN_OPS = 128;

/** Bytes of keys and values per transaction: well under etcd's default request limit of 1.5 MiB. */
const MAX_TXN_BYTES = 1024 * 1024;

/** Slack on top of the TTL before entries of a lease nobody renewed count as gone (etcd checks expiry twice a second). */
const LAPSE_MARGIN_SECONDS = 2;

/** Attempts at settling a namespace's lease before giving up when other writers keep replacing it. */
const LEASE_ATTEMPTS = 3;

interface NamespaceState {
  readonly registryNamespace: string;
  /** The lease this namespace's keys hang on, once known. */
  lease: bigint | undefined;
  /** etcd said `lease` is gone; entries must be rewritten on a new one. */
  lost: boolean;
  recovering: boolean;
  /**
   * Every key on our lease with its value. Needed because after a lease is lost its keys are gone
   * from etcd, and they must be rewritten without waiting for every ServiceInstance to resync.
   */
  readonly owned: Map<string, string>;
  /** hostport owner-index keys seen in etcd, so a switch to another format can remove them. */
  readonly indexKeys: Set<string>;
  /**
   * Mod revision of each entry key as last read or written here: every write of an entry is
   * guarded by it, so a foreign write that lands between a plan's read and its write makes the
   * write fail instead of being overwritten or deleted.
   */
  readonly revisions: Map<string, string>;
  /** Serialises lease work and writes of this namespace. */
  tail: Promise<void>;
  /** Writes waiting for the transaction under way to finish; they go to etcd together. */
  pending: PendingWrites | undefined;
  /** A flush loop is running for this namespace. */
  flushing: boolean;
  /** Counts transactions that landed, so a read knows whether writes landed while it ran. */
  epoch: number;
  /** When etcd last confirmed the lease alive (granted, adopted or renewed), in ms since the epoch. */
  renewedAt: number;
  /** When a read or write last asked for this namespace, in ms since the epoch. */
  usedAt: number;
}

/** Writes of several applyChanges calls of one namespace, merged into as few transactions as fit. */
interface PendingWrites {
  readonly groups: EntryWrites[];
  readonly callers: Caller[];
}

/** One applyChanges call waiting for its writes. */
interface Caller {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
  /** Set when one of its entries changed in etcd since it was read; its other writes are dropped. */
  conflict?: EtcdEntryChangedError;
}

/** The writes of one entry: its key and, for hostport, its owner index. */
interface EntryWrites {
  readonly writes: readonly TxnWrite[];
  /** The entry key as the plan read it; the writes land only if it is unchanged. */
  readonly guard: TxnGuard;
  readonly caller?: Caller;
}

function leaseHex(id: bigint): string {
  return id.toString(16);
}

function parseLeaseHex(value: string | undefined): bigint | undefined {
  if (value === undefined || !/^[0-9a-f]{1,16}$/.test(value)) return undefined;
  return BigInt(`0x${value}`);
}

/** An entry at a key whose value no format decodes: someone else's, so owned by nobody known. */
function unknownEntry(scope: Scope, instanceId: string): RegistryEntry {
  return {
    registryNamespace: scope.registryNamespace,
    k8sNamespace: '',
    owner: UNKNOWN_OWNER,
    endpoint: { service: scope.service, instanceId, address: '', port: 0, weight: 0, tags: {}, metadata: {}, source: '' },
  };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Registry backend for etcd v3. See the module comment for the layout and lease handling. */
export class EtcdRegistry implements Registry {
  readonly #client: EtcdClient;
  readonly #keys: EtcdKeyLayout;
  readonly #format: EtcdValueFormat;
  readonly #ttl: number;
  readonly #dryRun: boolean;
  readonly #clusterId: string;
  readonly #maxOps: number;
  readonly #log: RegistryLogger;
  readonly #keepalive: LeaseKeepalive;
  readonly #namespaces = new Map<string, NamespaceState>();
  readonly #now: () => number;
  /** Nothing of this process renewed any lease before this moment. */
  readonly #createdAt: number;
  #closed = false;

  /** Validates the options and creates the client; connections open lazily on the first call. */
  constructor(options: EtcdRegistryOptions) {
    const ttl = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const timeout = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const format = options.format ?? 'json';
    const maxOps = options.maxTxnOps ?? DEFAULT_MAX_TXN_OPS;
    if (options.endpoints.length === 0) throw new RangeError('etcd registry needs at least one endpoint: set spec.etcd.endpoints');
    if (!Number.isInteger(ttl) || ttl < 2) throw new RangeError(`leaseTtlSeconds must be an integer of at least 2, got ${ttl}`);
    if (!(timeout > 0)) throw new RangeError(`callTimeoutMs must be positive, got ${timeout}`);
    if (!ETCD_VALUE_FORMATS.includes(format)) throw new RangeError(`unknown etcd value format ${JSON.stringify(format)}: use one of ${ETCD_VALUE_FORMATS.join(', ')}`);
    if (!Number.isInteger(maxOps) || maxOps < 3) throw new RangeError(`maxTxnOps must be an integer of at least 3, got ${maxOps}`);
    if (options.clusterId === '') throw new RangeError('clusterId must not be empty');

    this.#keys = new EtcdKeyLayout(options.prefix);
    this.#keys.leaseId(options.clusterId, 'x'); // validates the cluster id as a key segment
    this.#format = format;
    this.#ttl = ttl;
    this.#dryRun = options.dryRun ?? false;
    this.#clusterId = options.clusterId;
    this.#maxOps = maxOps;
    this.#log = options.logger ?? silentLogger;
    this.#now = options.now ?? Date.now;
    this.#createdAt = this.#now();
    const client = createEtcdClient({ endpoints: options.endpoints, callTimeoutMs: timeout, ...options.credentials, ...(options.fence ? { fence: options.fence } : {}) });
    this.#client = options.clientMiddleware ? options.clientMiddleware(client) : client;
    this.#keepalive = new LeaseKeepalive({
      source: this.#client,
      intervalMs: (ttl * 1000) / 3,
      logger: this.#log,
      onLost: (id) => this.#onLeaseLost(id),
      onRenewed: (id) => {
        for (const state of this.#namespaces.values()) if (state.lease === id) state.renewedAt = this.#now();
      },
      onTick: () => this.#retryLostLeases(),
      ...(options.onKeepaliveFailure ? { onFailure: options.onKeepaliveFailure } : {}),
    });
  }

  /**
   * Hex id (as `etcdctl lease list` prints it) of the lease the namespace's entries hang on, or
   * undefined when none is known yet or the lease was lost and not yet replaced.
   */
  leaseIdFor(registryNamespace: string): string | undefined {
    const state = this.#namespaces.get(registryNamespace);
    return state?.lease !== undefined && !state.lost ? leaseHex(state.lease) : undefined;
  }

  /**
   * True when no entry of this cluster in the registry namespace can still be in etcd: its lease
   * was reported gone, or nothing of this process has had it confirmed alive for longer than the
   * TTL (a predecessor stopped renewing before this backend was built).
   */
  livenessLapsed(registryNamespace: string): boolean {
    const state = this.#namespaces.get(registryNamespace);
    if (state?.lost === true) return true;
    return this.#now() - Math.max(this.#createdAt, state?.renewedAt ?? 0) > (this.#ttl + LAPSE_MARGIN_SECONDS) * 1000;
  }

  /**
   * Drops `owner`'s keys in the scope from the memory of owned keys, so that a lease recovery does
   * not write back the entries of a ServiceInstance that is gone while etcd could not be reached.
   */
  forget(scope: Scope, owner: Owner): void {
    const state = this.#namespaces.get(scope.registryNamespace);
    if (state === undefined) return;
    const valuePrefix = this.#keys.servicePrefix(scope.registryNamespace, scope.service);
    const indexPrefix = this.#keys.ownerIndexServicePrefix(scope.registryNamespace, scope.service);
    for (const [key, value] of [...state.owned]) {
      if (!key.startsWith(valuePrefix)) continue;
      const instanceId = key.slice(valuePrefix.length);
      const indexKey = `${indexPrefix}${instanceId}`;
      const decoded = decodeEntry(value, state.owned.get(indexKey), { registryNamespace: scope.registryNamespace, service: scope.service, instanceId });
      if (decoded === undefined || !sameOwner(decoded.entry.owner, owner)) continue;
      state.owned.delete(key);
      state.owned.delete(indexKey);
    }
  }

  /**
   * Every entry of this cluster under the prefix, in every registry namespace the credentials may
   * list (else in the namespaces this backend has used).
   */
  async ownedByCluster(): Promise<RegistryEntry[]> {
    this.#assertOpen();
    const root = `${this.#keys.prefix}/`;
    let namespaces: string[];
    try {
      const [keys = []] = await this.#client.rangePrefixes([root], { keysOnly: true });
      namespaces = [...new Set(keys.map((kv) => kv.key.slice(root.length).split('/')[0] ?? '').filter((ns) => ns !== '' && !ns.startsWith('_')))];
    } catch (err: unknown) {
      if (!(err instanceof EtcdPermissionDeniedError)) throw new EtcdRegistryError(`listing registry namespaces under ${root} failed: ${describe(err)}`, { cause: err });
      namespaces = [...this.#namespaces.keys()];
    }
    const out: RegistryEntry[] = [];
    for (const ns of namespaces) {
      let valuePrefix: string;
      let indexPrefix: string;
      try {
        valuePrefix = this.#keys.namespacePrefix(ns);
        indexPrefix = this.#keys.ownerIndexNamespacePrefix(ns);
      } catch {
        continue; // not a registry namespace this backend could have written
      }
      const [values = [], index = []] = await this.#client.rangePrefixes([valuePrefix, indexPrefix]);
      const indexByKey = new Map(index.map((kv) => [kv.key.slice(indexPrefix.length), kv.value]));
      for (const kv of values) {
        const [service, instanceId, ...rest] = kv.key.slice(valuePrefix.length).split('/');
        if (service === undefined || instanceId === undefined || rest.length > 0) continue;
        const decoded = decodeEntry(kv.value, indexByKey.get(`${service}/${instanceId}`), { registryNamespace: ns, service, instanceId });
        if (decoded !== undefined && decoded.entry.owner.clusterId === this.#clusterId) out.push(decoded.entry);
      }
    }
    return out;
  }

  /**
   * Lets go of every registry namespace outside `wanted` that holds no entry of this cluster and
   * has not been used for `idleMs`: stops keeping its lease alive, removes its lease id key (only
   * if it still names that lease, and no key of ours hangs on it), revokes the lease and frees what
   * the backend remembered of it. A later write to the namespace simply grants a new lease.
   * Resolves the namespaces released.
   */
  async retainNamespaces(wanted: ReadonlySet<string>, idleMs: number): Promise<string[]> {
    this.#assertOpen();
    if (this.#dryRun) return [];
    const released: string[] = [];
    for (const state of [...this.#namespaces.values()]) {
      if (wanted.has(state.registryNamespace) || this.#now() - state.usedAt < idleMs) continue;
      const done = await this.#serial(state, async () => {
        if (state.owned.size > 0 || state.pending !== undefined || state.flushing || this.#namespaces.get(state.registryNamespace) !== state) return false;
        const ns = state.registryNamespace;
        const idKey = this.#keys.leaseId(this.#clusterId, ns);
        const stored = await this.#client.get(idKey);
        const storedId = parseLeaseHex(stored?.value);
        if (stored !== undefined) {
          const [values = [], index = []] = await this.#client.rangePrefixes([this.#keys.namespacePrefix(ns), this.#keys.ownerIndexNamespacePrefix(ns)]);
          const onLease = storedId === undefined ? [] : [...values, ...index].filter((kv) => kv.lease === storedId.toString());
          if (onLease.length > 0) return false; // entries of ours still hang on it: not unused after all
          const result = await this.#client.txn([{ key: idKey, value: stored.value }], [{ kind: 'delete', key: idKey }]);
          if (!result.succeeded) return false;
        }
        if (state.lease !== undefined) this.#keepalive.delete(state.lease);
        for (const id of new Set([state.lease, storedId])) {
          if (id === undefined) continue;
          await this.#client.leaseRevoke(id).catch((err: unknown) => {
            this.#log.debug({ err, leaseId: leaseHex(id) }, 'could not revoke an unused etcd lease; it expires by itself');
          });
        }
        this.#namespaces.delete(ns);
        return true;
      });
      if (done) released.push(state.registryNamespace);
    }
    if (released.length > 0) this.#log.info({ registryNamespaces: released }, 'released etcd registry namespaces that nothing writes to any more');
    return released;
  }

  /** Leases this backend keeps alive right now (one per registry namespace in use). */
  keepalives(): number {
    return this.#keepalive.size;
  }

  /**
   * Adopts, and starts keeping alive, every live lease this cluster has stored under the prefix,
   * without waiting for a `records()` call in each namespace. Call it once at startup or on becoming
   * leader, so that entries of namespaces reconciled late do not expire meanwhile. Resolves the
   * registry namespaces whose lease was adopted; writes nothing.
   */
  async adoptLeases(): Promise<string[]> {
    this.#assertOpen();
    const prefix = this.#keys.leaseIdPrefix(this.#clusterId);
    let stored: StoredKeyValue[];
    try {
      [stored = []] = await this.#client.rangePrefixes([prefix]);
    } catch (err: unknown) {
      // Credentials limited to some registry namespaces (one etcd role per environment) may read
      // their own lease id keys but not list every namespace's: adopt each lease on first use.
      if (err instanceof EtcdPermissionDeniedError) {
        this.#log.info({ prefix }, 'the etcd credentials may not list every stored lease id; each namespace adopts its lease when first used');
        return [];
      }
      throw new EtcdRegistryError(`reading stored lease ids under ${prefix} failed: ${describe(err)}`, { cause: err });
    }
    const adopted: string[] = [];
    for (const kv of stored) {
      const ns = EtcdKeyLayout.childName(prefix, kv.key);
      if (ns === undefined || ns.startsWith('_')) continue;
      const state = this.#state(ns);
      try {
        if ((await this.#serial(state, () => this.#ensureLease(state, false))) !== undefined) adopted.push(ns);
      } catch (err: unknown) {
        throw new EtcdRegistryError(`adopting the lease of etcd namespace ${ns} failed: ${describe(err)}`, { cause: err });
      }
    }
    return adopted;
  }

  /**
   * Every entry under the scope, whoever owns it. This cluster's entries that are stored in another
   * format or are not attached to the namespace's live lease come back with `needsRewrite`.
   */
  async records(scope: Scope): Promise<RegistryEntry[]> {
    this.#assertOpen();
    const state = this.#state(scope.registryNamespace);
    try {
      // With the lease settled, reads need not wait for the namespace's writes and lease work.
      if (state.lease !== undefined && !state.lost) return await this.#readScope(state, scope, state.lease);
      return await this.#serial(state, async () => {
        const lease = await this.#ensureLease(state, false);
        return this.#readScope(state, scope, lease);
      });
    } catch (err: unknown) {
      throw new EtcdRegistryError(`reading ${scope.registryNamespace}/${scope.service} from etcd failed: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * Writes the changes namespace by namespace in transactions of at most `maxTxnOps` operations.
   * Each transaction lands whole or not at all; when one fails, earlier ones stay applied and the
   * error is thrown, and since every write is idempotent the caller simply retries.
   *
   * Calls for the same namespace that arrive while a transaction is under way are merged and go
   * to etcd together once it is done (group commit), so a thousand ServiceInstances reconciled at
   * once cost a few 128-operation transactions rather than a thousand one-key ones. Each call's
   * entries are turned into keys and values before they join the others, so one call's bad input
   * fails that call alone; a failure of etcd itself fails every call of the merged write.
   */
  async applyChanges(changes: Changes): Promise<void> {
    this.#assertOpen();
    if (changes.updateOld.length !== changes.updateNew.length) {
      throw new RangeError(`invalid changes: ${changes.updateOld.length} updateOld but ${changes.updateNew.length} updateNew entries`);
    }
    const byNamespace = new Map<string, { deletes: RegistryEntry[]; puts: RegistryEntry[] }>();
    const group = (ns: string) => {
      let g = byNamespace.get(ns);
      if (g === undefined) byNamespace.set(ns, (g = { deletes: [], puts: [] }));
      return g;
    };
    for (const entry of changes.delete) group(entry.registryNamespace).deletes.push(entry);
    changes.updateNew.forEach((next, i) => {
      const old = changes.updateOld[i] as RegistryEntry;
      if (this.#entryKey(old) !== this.#entryKey(next)) group(old.registryNamespace).deletes.push(old);
      group(next.registryNamespace).puts.push(next);
    });
    for (const entry of changes.create) group(entry.registryNamespace).puts.push(entry);

    for (const [ns, { deletes, puts }] of byNamespace) {
      const state = this.#state(ns);
      try {
        await this.#enqueueWrites(state, deletes, puts);
      } catch (err: unknown) {
        throw new EtcdRegistryError(`writing to etcd namespace ${ns} failed: ${describe(err)}`, { cause: err });
      }
    }
  }

  #enqueueWrites(state: NamespaceState, deletes: readonly RegistryEntry[], puts: readonly RegistryEntry[]): Promise<void> {
    // Throws for entries that cannot be written (a key segment or value etcd cannot hold) before
    // they can spoil a merged write.
    const groups = this.#writesFor(state, deletes, puts);
    return new Promise<void>((resolve, reject) => {
      const pending = (state.pending ??= { groups: [], callers: [] });
      const caller: Caller = { resolve, reject };
      for (const g of groups) pending.groups.push({ ...g, caller });
      pending.callers.push(caller);
      if (!state.flushing) void this.#flush(state);
    });
  }

  /** Writes what is pending, merged, until nothing is; never rejects (the callers get the errors). */
  async #flush(state: NamespaceState): Promise<void> {
    state.flushing = true;
    try {
      for (let group = state.pending; group !== undefined; group = state.pending) {
        state.pending = undefined;
        try {
          await this.#serial(state, () => this.#applyInNamespace(state, group.groups));
          for (const c of group.callers) {
            if (c.conflict) c.reject(c.conflict);
            else c.resolve();
          }
        } catch (err: unknown) {
          for (const c of group.callers) c.reject(err);
        }
      }
    } finally {
      state.flushing = false;
    }
  }

  /** Stops keepalives and closes the connections. Leases are not revoked: entries live out their TTL. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#keepalive.close();
    await Promise.all([...this.#namespaces.values()].map((s) => s.tail));
    this.#client.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new EtcdRegistryError('etcd registry is closed');
  }

  #state(registryNamespace: string): NamespaceState {
    let state = this.#namespaces.get(registryNamespace);
    if (state === undefined) {
      this.#keys.namespacePrefix(registryNamespace); // refuse bad names before any I/O
      state = { registryNamespace, lease: undefined, lost: false, recovering: false, owned: new Map(), indexKeys: new Set(), revisions: new Map(), tail: Promise.resolve(), pending: undefined, flushing: false, epoch: 0, renewedAt: 0, usedAt: 0 };
      this.#namespaces.set(registryNamespace, state);
    }
    state.usedAt = this.#now();
    return state;
  }

  #serial<T>(state: NamespaceState, work: () => Promise<T>): Promise<T> {
    const run = state.tail.then(work);
    state.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #entryKey(entry: RegistryEntry): string {
    return this.#keys.entry(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }

  #indexKey(entry: RegistryEntry): string {
    return this.#keys.ownerIndex(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }

  async #readScope(state: NamespaceState, scope: Scope, lease: bigint | undefined): Promise<RegistryEntry[]> {
    const valuePrefix = this.#keys.servicePrefix(scope.registryNamespace, scope.service);
    const indexPrefix = this.#keys.ownerIndexServicePrefix(scope.registryNamespace, scope.service);
    const epoch = state.epoch;
    const [values = [], index = []] = await this.#client.rangePrefixes([valuePrefix, indexPrefix]);
    const leaseDec = lease?.toString();
    // Writes that landed while the read ran are newer than what it saw: then the memory of owned
    // keys is left to those writes (it is kept current by every write that lands), so a stale read
    // neither forgets a key just written nor brings back one just deleted.
    const current = state.epoch === epoch;

    const indexByInstance = new Map<string, StoredKeyValue>();
    for (const kv of index) {
      const instanceId = EtcdKeyLayout.childName(indexPrefix, kv.key);
      if (instanceId !== undefined) indexByInstance.set(instanceId, kv);
    }
    if (current) {
      for (const key of state.indexKeys) if (key.startsWith(indexPrefix)) state.indexKeys.delete(key);
      for (const kv of index) state.indexKeys.add(kv.key);
      for (const key of state.revisions.keys()) if (key.startsWith(valuePrefix)) state.revisions.delete(key);
    }
    for (const kv of values) {
      // Revisions only grow: a read that raced a write of ours never takes the newer one back.
      const known = state.revisions.get(kv.key);
      if (known === undefined || BigInt(known) < BigInt(kv.modRevision)) state.revisions.set(kv.key, kv.modRevision);
    }
    if (leaseDec !== undefined && current) {
      // Remember exactly what etcd holds on our lease; keys deleted or re-put without the lease by
      // hand are forgotten here and repaired by the plan. Without a live lease, keep the memory:
      // it is what a lease recovery rewrites.
      for (const key of state.owned.keys()) {
        if (key.startsWith(valuePrefix) || key.startsWith(indexPrefix)) state.owned.delete(key);
      }
      for (const kv of [...values, ...index]) if (kv.lease === leaseDec) state.owned.set(kv.key, kv.value);
    }

    const entries: RegistryEntry[] = [];
    for (const kv of values) {
      const instanceId = EtcdKeyLayout.childName(valuePrefix, kv.key);
      if (instanceId === undefined) continue;
      const idx = indexByInstance.get(instanceId);
      const decoded = decodeEntry(kv.value, idx?.value, { registryNamespace: scope.registryNamespace, service: scope.service, instanceId });
      if (decoded === undefined) {
        // Not ours to judge: someone else's value at a key we might want. Reported as an entry of
        // nobody known, so the plan never overwrites or deletes it.
        this.#log.debug({ etcdKey: kv.key }, 'etcd key whose value is not an endpoint in any known format belongs to nobody known');
        entries.push(unknownEntry(scope, instanceId));
        continue;
      }
      const { entry, format } = decoded;
      if (entry.owner.clusterId !== this.#clusterId) {
        entries.push(entry);
        continue;
      }
      const attached = kv.lease === leaseDec && (format !== 'hostport' || idx?.lease === leaseDec);
      const strayIndex = this.#format !== 'hostport' && idx !== undefined;
      entries.push(format !== this.#format || !attached || strayIndex ? { ...entry, needsRewrite: true } : entry);
    }
    return entries;
  }

  /** The writes of each entry; puts carry lease 0 until a transaction sets the namespace's lease. */
  #writesFor(state: NamespaceState, deletes: readonly RegistryEntry[], puts: readonly RegistryEntry[]): EntryWrites[] {
    const lease = 0n;
    const out: EntryWrites[] = [];
    const guard = (key: string): TxnGuard => ({ key, modRevision: state.revisions.get(key) ?? '0' });
    for (const entry of deletes) {
      const key = this.#entryKey(entry);
      const writes: TxnWrite[] = [{ kind: 'delete', key }];
      const indexKey = this.#indexKey(entry);
      if (this.#format === 'hostport' || state.indexKeys.has(indexKey)) writes.push({ kind: 'delete', key: indexKey });
      out.push({ writes, guard: guard(key) });
    }
    for (const entry of puts) {
      const encoded = encodeEntry(this.#format, entry);
      const key = this.#entryKey(entry);
      const writes: TxnWrite[] = [{ kind: 'put', key, value: encoded.value, lease }];
      const indexKey = this.#indexKey(entry);
      if (encoded.ownerIndex !== undefined) writes.push({ kind: 'put', key: indexKey, value: encoded.ownerIndex, lease });
      else if (state.indexKeys.has(indexKey)) writes.push({ kind: 'delete', key: indexKey });
      out.push({ writes, guard: guard(key) });
    }
    return out;
  }

  /**
   * Packs per-entry writes into transactions without splitting an entry or repeating a key, and
   * keeps each under {@link MAX_TXN_BYTES} so that etcd's request size limit is never what fails.
   * `room` bounds both the operations and the guards (one per entry plus the lease guard).
   */
  #batches(groups: readonly EntryWrites[], room: number): EntryWrites[][] {
    const batches: EntryWrites[][] = [];
    let current: EntryWrites[] = [];
    let ops = 0;
    let keys = new Set<string>();
    let bytes = 0;
    const size = (w: TxnWrite): number => Buffer.byteLength(w.key) + (w.kind === 'put' ? Buffer.byteLength(w.value) : 0);
    for (const group of groups) {
      const { writes } = group;
      const clash = writes.some((w) => keys.has(w.key));
      const more = writes.reduce((n, w) => n + size(w), 0);
      if (current.length > 0 && (clash || ops + writes.length > room || current.length + 2 > room || bytes + more > MAX_TXN_BYTES)) {
        batches.push(current);
        current = [];
        ops = 0;
        keys = new Set();
        bytes = 0;
      }
      current.push(group);
      ops += writes.length;
      bytes += more;
      for (const w of writes) keys.add(w.key);
    }
    if (current.length > 0) batches.push(current);
    return batches;
  }

  async #applyInNamespace(state: NamespaceState, groups: readonly EntryWrites[]): Promise<void> {
    const ns = state.registryNamespace;
    if (this.#dryRun) {
      for (const { writes } of groups) {
        for (const w of writes) this.#log.info({ dryRun: true, op: w.kind, etcdKey: w.key, ...(w.kind === 'put' ? { value: w.value } : {}) }, 'dry run: etcd write skipped');
      }
      return;
    }
    let lease = await this.#requireLease(state);
    const batches = this.#batches(groups, this.#maxOps);
    for (const packed of batches) {
      let batch = packed;
      let attempt = 0;
      for (;;) {
        // A caller whose entry changed under it gives up all its writes, in this batch and later ones.
        batch = batch.filter((g) => g.caller?.conflict === undefined);
        if (batch.length === 0) break;
        const writes = batch.flatMap((g) => g.writes.map((w) => (w.kind === 'put' ? { ...w, lease } : w)));
        let result: TxnResult | undefined;
        try {
          result = await this.#client.txn([this.#leaseGuard(ns, lease), ...batch.map((g) => g.guard)], writes);
        } catch (err: unknown) {
          if (!(err instanceof EtcdLeaseInvalidError) || attempt > 0) throw err;
          // The lease died between our check and the write: move to a new one and try once more.
          this.#log.warn({ registryNamespace: ns, leaseId: leaseHex(lease) }, 'etcd lease vanished during a write; granting a new one');
          this.#markLost(state);
        }
        if (result?.succeeded === true) {
          this.#remember(state, writes, result.revision);
          break;
        }
        const changed = (result?.failedGuards ?? []).filter((i) => i > 0).map((i) => batch[i - 1] as EntryWrites);
        for (const g of changed) {
          const key = g.guard.key;
          this.#log.warn({ etcdKey: key }, 'etcd entry changed since it was read; not writing it');
          // Forget the revision: the caller's retry reads the key afresh and plans against what is there now.
          state.revisions.delete(key);
          const conflict = new EtcdEntryChangedError(`etcd key ${key} was changed by someone else after it was read; nothing of this change was written, and the next attempt reads it again`);
          if (g.caller) g.caller.conflict = conflict;
          else throw conflict;
        }
        if (changed.length > 0 && !(result?.failedGuards ?? []).includes(0)) continue;
        if (attempt++ > 0) throw new EtcdRegistryError(`the lease id key of namespace ${ns} keeps changing under this operator; is another operator with cluster id ${JSON.stringify(this.#clusterId)} writing here?`);
        // Someone moved the namespace to another lease (or ours died): re-read and settle first.
        if (!state.lost) state.lease = undefined;
        lease = await this.#requireLease(state);
      }
    }
    this.#log.debug({ registryNamespace: ns, entries: groups.length, transactions: batches.length }, 'etcd changes applied');
  }

  #leaseGuard(ns: string, lease: bigint): TxnGuard {
    return { key: this.#keys.leaseId(this.#clusterId, ns), value: leaseHex(lease) };
  }

  #remember(state: NamespaceState, writes: readonly TxnWrite[], revision: string): void {
    state.epoch++;
    for (const w of writes) {
      const isIndex = w.key.startsWith(this.#keys.ownerIndexNamespacePrefix(state.registryNamespace));
      if (w.kind === 'put') {
        if (w.lease !== 0n) state.owned.set(w.key, w.value);
        if (isIndex) state.indexKeys.add(w.key);
        else state.revisions.set(w.key, revision);
      } else {
        state.owned.delete(w.key);
        state.revisions.delete(w.key);
        if (isIndex) state.indexKeys.delete(w.key);
      }
    }
  }

  async #requireLease(state: NamespaceState): Promise<bigint> {
    const lease = await this.#ensureLease(state, true);
    if (lease === undefined) throw new EtcdRegistryError(`no lease for etcd namespace ${state.registryNamespace}`);
    return lease;
  }

  /**
   * Returns the namespace's live lease: the one in use, else the one whose id is stored in etcd
   * (adopted with the entries on it), else, when `grant` is set, a new one onto which every owned
   * entry is rewritten before its id is stored. A stored lease with another TTL than configured is
   * replaced the same way. Runs inside the namespace's serial queue.
   */
  async #ensureLease(state: NamespaceState, grant: boolean): Promise<bigint | undefined> {
    if (state.lease !== undefined && !state.lost) return state.lease;
    const ns = state.registryNamespace;
    const idKey = this.#keys.leaseId(this.#clusterId, ns);
    for (let attempt = 0; attempt < LEASE_ATTEMPTS; attempt++) {
      const stored = await this.#client.get(idKey);
      const storedId = parseLeaseHex(stored?.value);
      if (storedId !== undefined) {
        const info = await this.#timeToLive(storedId);
        if (info !== undefined && info.ttlSeconds > 0) {
          if (state.lease !== storedId) await this.#loadOwned(state, storedId);
          if (info.grantedTtlSeconds === this.#ttl || this.#dryRun) {
            this.#use(state, storedId);
            this.#log.info({ registryNamespace: ns, leaseId: leaseHex(storedId), entries: state.owned.size }, 'adopted etcd lease');
            return storedId;
          }
          this.#log.info({ registryNamespace: ns, leaseId: leaseHex(storedId), grantedTtl: info.grantedTtlSeconds, ttl: this.#ttl }, 'etcd lease has another TTL than configured; moving entries to a new lease');
        }
        // A dead stored lease leaves `owned` as it is: those are our entries, to be rewritten.
      }
      if (!grant || this.#dryRun) {
        // A lost lease stays marked lost so that recovery still rewrites what we remember.
        if (!state.lost) {
          if (state.lease !== undefined) this.#keepalive.delete(state.lease);
          state.lease = undefined;
        }
        return undefined;
      }
      const fresh = await this.#client.leaseGrant(this.#ttl);
      if (await this.#moveOwnedOnto(state, fresh, stored?.value)) {
        this.#log.info({ registryNamespace: ns, leaseId: leaseHex(fresh), ttl: this.#ttl, rewritten: state.owned.size }, 'granted etcd lease');
        this.#use(state, fresh);
        return fresh;
      }
      // Another process stored a different lease first; drop ours and adopt theirs.
      await this.#client.leaseRevoke(fresh).catch((err: unknown) => {
        this.#log.debug({ err, leaseId: leaseHex(fresh) }, 'could not revoke unused etcd lease; it will expire');
      });
    }
    throw new EtcdRegistryError(`could not settle on a lease for etcd namespace ${ns} after ${LEASE_ATTEMPTS} attempts: another process keeps replacing ${idKey}`);
  }

  async #timeToLive(id: bigint): Promise<{ ttlSeconds: number; grantedTtlSeconds: number } | undefined> {
    try {
      return await this.#client.leaseTimeToLive(id);
    } catch (err: unknown) {
      if (err instanceof EtcdLeaseInvalidError) return undefined;
      throw err;
    }
  }

  #use(state: NamespaceState, lease: bigint): void {
    if (state.lease !== undefined && state.lease !== lease) this.#keepalive.delete(state.lease);
    state.lease = lease;
    state.lost = false;
    state.renewedAt = this.#now();
    // A dry run must not keep alive what a real operator may have abandoned.
    if (!this.#dryRun) this.#keepalive.add(lease);
  }

  /**
   * Replaces the owned-key memory with the keys of this namespace attached to `lease`. While the
   * namespace is recovering a lost lease, what it remembers and etcd no longer holds on `lease`
   * (a move to it that broke off half-way, keys of a lease that expired) is put back onto `lease`
   * now, instead of waiting for each ServiceInstance's next resync.
   */
  async #loadOwned(state: NamespaceState, lease: bigint): Promise<void> {
    const ns = state.registryNamespace;
    const remembered = state.lost && !this.#dryRun ? new Map(state.owned) : undefined;
    const [values = [], index = []] = await this.#client.rangePrefixes([this.#keys.namespacePrefix(ns), this.#keys.ownerIndexNamespacePrefix(ns)]);
    const dec = lease.toString();
    state.owned.clear();
    for (const kv of [...values, ...index]) if (kv.lease === dec) state.owned.set(kv.key, kv.value);
    for (const kv of index) state.indexKeys.add(kv.key);
    if (remembered === undefined) return;
    const missing: TxnWrite[] = [...remembered].filter(([key]) => !state.owned.has(key)).map(([key, value]) => ({ kind: 'put', key, value, lease }));
    if (missing.length === 0) return;
    const idKey = this.#keys.leaseId(this.#clusterId, ns);
    for (let i = 0; i < missing.length; i += this.#maxOps) {
      const batch = missing.slice(i, i + this.#maxOps);
      const result = await this.#client.txn([{ key: idKey, value: leaseHex(lease) }], batch);
      if (!result.succeeded) throw new EtcdRegistryError(`lease id key ${idKey} changed while entries were being put back on lease ${leaseHex(lease)}`);
      this.#remember(state, batch, result.revision);
    }
    this.#log.info({ registryNamespace: ns, leaseId: leaseHex(lease), restored: missing.length }, 'put back entries that an interrupted lease move left behind');
  }

  /**
   * Rewrites every owned key onto `fresh` and stores its id, guarded so that it only happens if
   * the stored id is still `expected`. Resolves false when another process got there first. When
   * a later batch fails, the memory of owned keys stays whole, so the next attempt (which adopts
   * `fresh`) puts the rest back.
   */
  async #moveOwnedOnto(state: NamespaceState, fresh: bigint, expected: string | undefined): Promise<boolean> {
    const idKey = this.#keys.leaseId(this.#clusterId, state.registryNamespace);
    const puts: TxnWrite[] = [...state.owned].map(([key, value]) => ({ kind: 'put', key, value, lease: fresh }));
    const first = puts.slice(0, this.#maxOps - 1);
    const idWrite: TxnWrite = { kind: 'put', key: idKey, value: leaseHex(fresh), lease: 0n };
    const opened = await this.#client.txn([{ key: idKey, value: expected }], [idWrite, ...first]);
    if (!opened.succeeded) return false;
    this.#rememberRevisions(state, first, opened.revision);
    for (let i = first.length; i < puts.length; i += this.#maxOps) {
      const batch = puts.slice(i, i + this.#maxOps);
      const result = await this.#client.txn([{ key: idKey, value: leaseHex(fresh) }], batch);
      if (!result.succeeded) throw new EtcdRegistryError(`lease id key ${idKey} changed while entries were being moved to lease ${leaseHex(fresh)}`);
      this.#rememberRevisions(state, batch, result.revision);
    }
    return true;
  }

  /** Records the revision of moved keys without touching the owned memory (still the old lease's). */
  #rememberRevisions(state: NamespaceState, puts: readonly TxnWrite[], revision: string): void {
    for (const w of puts) if (!w.key.startsWith(this.#keys.ownerIndexNamespacePrefix(state.registryNamespace))) state.revisions.set(w.key, revision);
  }

  #markLost(state: NamespaceState): void {
    if (state.lease !== undefined) this.#keepalive.delete(state.lease);
    state.lost = true;
  }

  #onLeaseLost(id: bigint): void {
    for (const state of this.#namespaces.values()) {
      if (state.lease !== id) continue;
      this.#log.warn({ registryNamespace: state.registryNamespace, leaseId: leaseHex(id), entries: state.owned.size }, 'etcd lease lost; rewriting entries on a new lease');
      this.#markLost(state);
      void this.#recover(state);
    }
  }

  #retryLostLeases(): void {
    for (const state of this.#namespaces.values()) if (state.lost) void this.#recover(state);
  }

  /** Never rejects: a failed recovery is logged and retried on the next keepalive interval. */
  async #recover(state: NamespaceState): Promise<void> {
    if (state.recovering || this.#closed) return;
    state.recovering = true;
    try {
      await this.#serial(state, async () => {
        if (!state.lost || this.#closed) return;
        if (state.owned.size === 0) {
          // Nothing to keep alive; the next write grants a lease when it needs one.
          state.lease = undefined;
          state.lost = false;
          return;
        }
        await this.#ensureLease(state, true);
      });
    } catch (err: unknown) {
      this.#log.error({ err, registryNamespace: state.registryNamespace }, 'could not replace lost etcd lease; retrying on the next keepalive interval');
    } finally {
      state.recovering = false;
    }
  }
}

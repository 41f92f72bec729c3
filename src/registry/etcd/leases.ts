/**
 * Lease keeping of the etcd backend: one lease per (registry namespace, cluster), found, adopted,
 * granted, moved onto, recovered when lost, kept alive, and let go of when the namespace is idle.
 *
 * The lease id lives in etcd, not in memory, so a restarted operator or a new leader adopts the
 * lease (and thereby every entry on it) instead of granting a new one and rewriting everything.
 * Every transaction is guarded by that id key (see {@link EtcdLeases.guard}).
 */
import { EtcdLeaseInvalidError, EtcdPermissionDeniedError } from 'etcd3';

import type { StoredKeyValue, TxnGuard, TxnWrite } from './client.ts';
import type { EtcdBackendContext } from './context.ts';
import { describe, EtcdRegistryError } from './errors.ts';
import { LeaseKeepalive } from './keepalive.ts';
import { EtcdKeyLayout } from './keys.ts';
import type { NamespaceState } from './namespace-state.ts';

/** Slack on top of the TTL before entries of a lease nobody renewed count as gone (etcd checks expiry twice a second). */
const LAPSE_MARGIN_SECONDS = 2;

/** Attempts at settling a namespace's lease before giving up when other writers keep replacing it. */
const LEASE_ATTEMPTS = 3;

/** A lease id as `etcdctl lease list` prints it, and as it is stored in the lease id key. */
export function leaseHex(id: bigint): string {
  return id.toString(16);
}

function parseLeaseHex(value: string | undefined): bigint | undefined {
  if (value === undefined || !/^[0-9a-f]{1,16}$/.test(value)) return undefined;
  return BigInt(`0x${value}`);
}

/** Owns the lease of every registry namespace and the keepalive that renews them. */
export class EtcdLeases {
  readonly #ctx: EtcdBackendContext;
  readonly #keepalive: LeaseKeepalive;
  /** Nothing of this process renewed any lease before this moment. */
  readonly #createdAt: number;
  #closed = false;

  /**
   * Creates the keepalive; nothing is sent before the first lease is adopted or granted.
   * `onKeepaliveFailure` is called whenever keeping the leases alive fails (for metrics).
   */
  constructor(ctx: EtcdBackendContext, onKeepaliveFailure?: () => void) {
    this.#ctx = ctx;
    this.#createdAt = ctx.now();
    this.#keepalive = new LeaseKeepalive({
      source: ctx.client,
      intervalMs: (ctx.ttlSeconds * 1000) / 3,
      logger: ctx.logger,
      onLost: (id) => this.#onLeaseLost(id),
      onRenewed: (id) => {
        for (const state of ctx.namespaces.values()) if (state.lease === id) state.renewedAt = ctx.now();
      },
      onTick: () => this.#retryLostLeases(),
      ...(onKeepaliveFailure ? { onFailure: onKeepaliveFailure } : {}),
    });
  }

  /** Hex id of the namespace's lease, or undefined when none is known yet or it was lost and not yet replaced. */
  leaseIdFor(registryNamespace: string): string | undefined {
    const state = this.#ctx.namespaces.get(registryNamespace);
    return state?.lease !== undefined && !state.lost ? leaseHex(state.lease) : undefined;
  }

  /** True when the namespace's lease was reported gone, or nothing of this process has had it confirmed alive for longer than the TTL. */
  livenessLapsed(registryNamespace: string): boolean {
    const state = this.#ctx.namespaces.get(registryNamespace);
    if (state?.lost === true) return true;
    return this.#ctx.now() - Math.max(this.#createdAt, state?.renewedAt ?? 0) > (this.#ctx.ttlSeconds + LAPSE_MARGIN_SECONDS) * 1000;
  }

  /** Leases kept alive right now. */
  get size(): number {
    return this.#keepalive.size;
  }

  /** Adopts every live lease whose id this cluster has stored under the prefix; resolves their namespaces. */
  async adoptStored(): Promise<string[]> {
    const { client, keys, clusterId, logger } = this.#ctx;
    const prefix = keys.leaseIdPrefix(clusterId);
    let stored: StoredKeyValue[];
    try {
      [stored = []] = await client.rangePrefixes([prefix]);
    } catch (err: unknown) {
      // Credentials limited to some registry namespaces (one etcd role per environment) may read
      // their own lease id keys but not list every namespace's: adopt each lease on first use.
      if (err instanceof EtcdPermissionDeniedError) {
        logger.info({ prefix }, 'the etcd credentials may not list every stored lease id; each namespace adopts its lease when first used');
        return [];
      }
      throw new EtcdRegistryError(`reading stored lease ids under ${prefix} failed: ${describe(err)}`, { cause: err });
    }
    const adopted: string[] = [];
    for (const kv of stored) {
      const ns = EtcdKeyLayout.childName(prefix, kv.key);
      if (ns === undefined || ns.startsWith('_')) continue;
      const state = this.#ctx.namespaces.use(ns);
      try {
        if ((await state.serial(() => this.ensure(state, false))) !== undefined) adopted.push(ns);
      } catch (err: unknown) {
        throw new EtcdRegistryError(`adopting the lease of etcd namespace ${ns} failed: ${describe(err)}`, { cause: err });
      }
    }
    return adopted;
  }

  /**
   * Lets go of every namespace outside `wanted` that holds no entry of this cluster, has no write
   * pending and has not been used for `idleMs`: stops keeping its lease alive, removes its lease id
   * key (only if it still names that lease, and no key of ours hangs on it), revokes the lease and
   * frees what is remembered of it. Resolves the namespaces released. Does nothing in a dry run.
   */
  async release(wanted: ReadonlySet<string>, idleMs: number): Promise<string[]> {
    const { client, keys, clusterId, logger, namespaces } = this.#ctx;
    if (this.#ctx.dryRun) return [];
    const released: string[] = [];
    for (const state of [...namespaces.values()]) {
      if (wanted.has(state.registryNamespace) || this.#ctx.now() - state.usedAt < idleMs) continue;
      const done = await state.serial(async () => {
        if (state.owned.size > 0 || state.pending !== undefined || state.flushing || namespaces.get(state.registryNamespace) !== state)
          return false;
        const ns = state.registryNamespace;
        const idKey = keys.leaseId(clusterId, ns);
        const stored = await client.get(idKey);
        const storedId = parseLeaseHex(stored?.value);
        if (stored !== undefined) {
          const [values = [], index = []] = await client.rangePrefixes([keys.namespacePrefix(ns), keys.ownerIndexNamespacePrefix(ns)]);
          const onLease = storedId === undefined ? [] : [...values, ...index].filter((kv) => kv.lease === storedId.toString());
          if (onLease.length > 0) return false; // entries of ours still hang on it: not unused after all
          const result = await client.txn([{ key: idKey, value: stored.value }], [{ kind: 'delete', key: idKey }]);
          if (!result.succeeded) return false;
        }
        if (state.lease !== undefined) this.#keepalive.delete(state.lease);
        for (const id of new Set([state.lease, storedId])) {
          if (id === undefined) continue;
          await client.leaseRevoke(id).catch((err: unknown) => {
            logger.debug({ err, leaseId: leaseHex(id) }, 'could not revoke an unused etcd lease; it expires by itself');
          });
        }
        namespaces.delete(ns);
        return true;
      });
      if (done) released.push(state.registryNamespace);
    }
    if (released.length > 0)
      logger.info({ registryNamespaces: released }, 'released etcd registry namespaces that nothing writes to any more');
    return released;
  }

  /** The guard every transaction of the namespace carries: its lease id key still names `lease`. */
  guard(registryNamespace: string, lease: bigint): TxnGuard {
    return { key: this.#ctx.keys.leaseId(this.#ctx.clusterId, registryNamespace), value: leaseHex(lease) };
  }

  /** {@link EtcdLeases.ensure} with `grant` set; throws when there is still no lease. */
  async require(state: NamespaceState): Promise<bigint> {
    const lease = await this.ensure(state, true);
    if (lease === undefined) throw new EtcdRegistryError(`no lease for etcd namespace ${state.registryNamespace}`);
    return lease;
  }

  /**
   * Returns the namespace's live lease: the one in use, else the one whose id is stored in etcd
   * (adopted with the entries on it), else, when `grant` is set, a new one onto which every owned
   * entry is rewritten before its id is stored. A stored lease with another TTL than configured is
   * replaced the same way. Runs inside the namespace's serial queue.
   */
  async ensure(state: NamespaceState, grant: boolean): Promise<bigint | undefined> {
    if (state.lease !== undefined && !state.lost) return state.lease;
    const { client, keys, clusterId, ttlSeconds: ttl, dryRun, logger } = this.#ctx;
    const ns = state.registryNamespace;
    const idKey = keys.leaseId(clusterId, ns);
    for (let attempt = 0; attempt < LEASE_ATTEMPTS; attempt++) {
      const stored = await client.get(idKey);
      const storedId = parseLeaseHex(stored?.value);
      if (storedId !== undefined) {
        const info = await this.#timeToLive(storedId);
        if (info !== undefined && info.ttlSeconds > 0) {
          if (state.lease !== storedId) await this.#loadOwned(state, storedId);
          if (info.grantedTtlSeconds === ttl || dryRun) {
            this.#use(state, storedId);
            logger.info({ registryNamespace: ns, leaseId: leaseHex(storedId), entries: state.owned.size }, 'adopted etcd lease');
            return storedId;
          }
          logger.info(
            { registryNamespace: ns, leaseId: leaseHex(storedId), grantedTtl: info.grantedTtlSeconds, ttl },
            'etcd lease has another TTL than configured; moving entries to a new lease',
          );
        }
        // A dead stored lease leaves `owned` as it is: those are our entries, to be rewritten.
      }
      if (!grant || dryRun) {
        // A lost lease stays marked lost so that recovery still rewrites what we remember.
        if (!state.lost) {
          if (state.lease !== undefined) this.#keepalive.delete(state.lease);
          state.lease = undefined;
          state.leaselessAt = this.#ctx.now();
        }
        return undefined;
      }
      const fresh = await client.leaseGrant(ttl);
      if (await this.#moveOwnedOnto(state, fresh, stored?.value)) {
        logger.info({ registryNamespace: ns, leaseId: leaseHex(fresh), ttl, rewritten: state.owned.size }, 'granted etcd lease');
        this.#use(state, fresh);
        return fresh;
      }
      // Another process stored a different lease first; drop ours and adopt theirs.
      await client.leaseRevoke(fresh).catch((err: unknown) => {
        logger.debug({ err, leaseId: leaseHex(fresh) }, 'could not revoke unused etcd lease; it will expire');
      });
    }
    throw new EtcdRegistryError(
      `could not settle on a lease for etcd namespace ${ns} after ${LEASE_ATTEMPTS} attempts: another process keeps replacing ${idKey}`,
    );
  }

  /** Stops keeping the namespace's lease alive and marks it lost, so its entries are rewritten on a new one. */
  markLost(state: NamespaceState): void {
    if (state.lease !== undefined) this.#keepalive.delete(state.lease);
    state.lost = true;
    state.view = undefined;
  }

  /** Stops the keepalive and every recovery not yet started. Leases are not revoked. */
  close(): void {
    this.#closed = true;
    this.#keepalive.close();
  }

  async #timeToLive(id: bigint): Promise<{ ttlSeconds: number; grantedTtlSeconds: number } | undefined> {
    try {
      return await this.#ctx.client.leaseTimeToLive(id);
    } catch (err: unknown) {
      if (err instanceof EtcdLeaseInvalidError) return undefined;
      throw err;
    }
  }

  #use(state: NamespaceState, lease: bigint): void {
    if (state.lease !== undefined && state.lease !== lease) {
      this.#keepalive.delete(state.lease);
      // Keys of the old lease may be gone with it: the next read looks at etcd again.
      state.view = undefined;
    }
    state.lease = lease;
    state.lost = false;
    state.leaselessAt = undefined;
    state.renewedAt = this.#ctx.now();
    // A dry run must not keep alive what a real operator may have abandoned.
    if (!this.#ctx.dryRun) this.#keepalive.add(lease);
  }

  /**
   * Replaces the owned-key memory with the keys of this namespace attached to `lease`. While the
   * namespace is recovering a lost lease, what it remembers and etcd no longer holds on `lease`
   * (a move to it that broke off half-way, keys of a lease that expired) is put back onto `lease`
   * now, instead of waiting for each ServiceInstance's next resync.
   */
  async #loadOwned(state: NamespaceState, lease: bigint): Promise<void> {
    const { client, keys, clusterId, maxTxnOps, logger } = this.#ctx;
    const ns = state.registryNamespace;
    const remembered = state.lost && !this.#ctx.dryRun ? new Map(state.owned) : undefined;
    const [values = [], index = []] = await client.rangePrefixes([keys.namespacePrefix(ns), keys.ownerIndexNamespacePrefix(ns)]);
    state.replaceOwned(values, index, lease);
    if (remembered === undefined) return;
    const missing: TxnWrite[] = [...remembered]
      .filter(([key]) => !state.owned.has(key))
      .map(([key, value]) => ({ kind: 'put', key, value, lease }));
    if (missing.length === 0) return;
    const idKey = keys.leaseId(clusterId, ns);
    for (let i = 0; i < missing.length; i += maxTxnOps) {
      const batch = missing.slice(i, i + maxTxnOps);
      const result = await client.txn([{ key: idKey, value: leaseHex(lease) }], batch);
      if (!result.succeeded)
        throw new EtcdRegistryError(`lease id key ${idKey} changed while entries were being put back on lease ${leaseHex(lease)}`);
      state.remember(batch, result.revision);
    }
    logger.info(
      { registryNamespace: ns, leaseId: leaseHex(lease), restored: missing.length },
      'put back entries that an interrupted lease move left behind',
    );
  }

  /**
   * Rewrites every owned key onto `fresh` and stores its id, guarded so that it only happens if
   * the stored id is still `expected`. Resolves false when another process got there first. When
   * a later batch fails, the memory of owned keys stays whole, so the next attempt (which adopts
   * `fresh`) puts the rest back.
   */
  async #moveOwnedOnto(state: NamespaceState, fresh: bigint, expected: string | undefined): Promise<boolean> {
    const { client, keys, clusterId, maxTxnOps } = this.#ctx;
    const idKey = keys.leaseId(clusterId, state.registryNamespace);
    const puts: TxnWrite[] = [...state.owned].map(([key, value]) => ({ kind: 'put', key, value, lease: fresh }));
    const first = puts.slice(0, maxTxnOps - 1);
    const idWrite: TxnWrite = { kind: 'put', key: idKey, value: leaseHex(fresh), lease: 0n };
    const opened = await client.txn([{ key: idKey, value: expected }], [idWrite, ...first]);
    if (!opened.succeeded) return false;
    state.rememberRevisions(first, opened.revision);
    for (let i = first.length; i < puts.length; i += maxTxnOps) {
      const batch = puts.slice(i, i + maxTxnOps);
      const result = await client.txn([{ key: idKey, value: leaseHex(fresh) }], batch);
      if (!result.succeeded)
        throw new EtcdRegistryError(`lease id key ${idKey} changed while entries were being moved to lease ${leaseHex(fresh)}`);
      state.rememberRevisions(batch, result.revision);
    }
    return true;
  }

  #onLeaseLost(id: bigint): void {
    for (const state of this.#ctx.namespaces.values()) {
      if (state.lease !== id) continue;
      this.#ctx.logger.warn(
        { registryNamespace: state.registryNamespace, leaseId: leaseHex(id), entries: state.owned.size },
        'etcd lease lost; rewriting entries on a new lease',
      );
      this.markLost(state);
      void this.#recover(state);
    }
  }

  #retryLostLeases(): void {
    for (const state of this.#ctx.namespaces.values()) if (state.lost) void this.#recover(state);
  }

  /** Never rejects: a failed recovery is logged and retried on the next keepalive interval. */
  async #recover(state: NamespaceState): Promise<void> {
    if (state.recovering || this.#closed) return;
    state.recovering = true;
    try {
      await state.serial(async () => {
        if (!state.lost || this.#closed) return;
        if (state.owned.size === 0) {
          // Nothing to keep alive; the next write grants a lease when it needs one.
          state.lease = undefined;
          state.lost = false;
          return;
        }
        await this.ensure(state, true);
      });
    } catch (err: unknown) {
      this.#ctx.logger.error(
        { err, registryNamespace: state.registryNamespace },
        'could not replace lost etcd lease; retrying on the next keepalive interval',
      );
    } finally {
      state.recovering = false;
    }
  }
}

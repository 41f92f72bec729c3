/**
 * Writes of the etcd backend: group commit of the changes of several callers into transactions of
 * at most `maxTxnOps` operations and {@link MAX_TXN_BYTES} bytes, each guarded by the namespace's
 * lease id key and by the mod revision of every entry key as the plan read it.
 *
 * Calls for the same namespace that arrive while a transaction is under way are merged and go to
 * etcd together once it is done, so a thousand ServiceInstances reconciled at once cost a few
 * 128-operation transactions rather than a thousand one-key ones.
 */
import { EtcdLeaseInvalidError } from 'etcd3';

import type { Changes, RegistryEntry } from '../types.ts';
import type { TxnGuard, TxnResult, TxnWrite } from './client.ts';
import { encodeEntry, usesOwnerIndex } from './codec.ts';
import type { EtcdBackendContext } from './context.ts';
import { describe, EtcdEntryChangedError, EtcdRegistryError } from './errors.ts';
import { leaseHex } from './leases.ts';
import type { EtcdLeases } from './leases.ts';
import type { NamespaceState } from './namespace-state.ts';

/** Bytes of keys and values per transaction: well under etcd's default request limit of 1.5 MiB. */
const MAX_TXN_BYTES = 1024 * 1024;

/** Writes of several applyChanges calls of one namespace, merged into as few transactions as fit. */
export interface PendingWrites {
  readonly groups: EntryWrites[];
  readonly callers: Caller[];
}

/** One applyChanges call waiting for its writes. */
export interface Caller {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
  /** Set when one of its entries changed in etcd since it was read; its other writes are dropped. */
  conflict?: EtcdEntryChangedError;
}

/** The writes of one entry: its key and, for grpc and hostport, its owner index. */
export interface EntryWrites {
  readonly writes: readonly TxnWrite[];
  /** The entry key as the plan read it; the writes land only if it is unchanged. */
  readonly guard: TxnGuard;
  readonly caller?: Caller;
}

/**
 * How many entries of `writesPerEntry` writes each fill one transaction of `room` operations, as
 * {@link packBatches} packs them: the writes take one operation each, and the guards (one per
 * entry plus the lease guard) must fit too.
 */
export function entriesPerTxn(room: number, writesPerEntry: number): number {
  return Math.min(Math.floor(room / writesPerEntry), room - 1);
}

/**
 * Packs per-entry writes into transactions without splitting an entry or repeating a key, and
 * keeps each under {@link MAX_TXN_BYTES} so that etcd's request size limit is never what fails.
 * `room` bounds both the operations and the guards (one per entry plus the lease guard).
 */
export function packBatches(groups: readonly EntryWrites[], room: number): EntryWrites[][] {
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

/** Applies changes to etcd, merging the writes of concurrent callers per namespace. */
export class EtcdWrites {
  readonly #ctx: EtcdBackendContext;
  readonly #leases: EtcdLeases;

  /** Writes go onto the leases `leases` settles. */
  constructor(ctx: EtcdBackendContext, leases: EtcdLeases) {
    this.#ctx = ctx;
    this.#leases = leases;
  }

  /**
   * Writes the changes namespace by namespace. Each call's entries are turned into keys and values
   * before they join the writes of other calls, so one call's bad input fails that call alone; a
   * failure of etcd itself fails every call of the merged write.
   */
  async apply(changes: Changes): Promise<void> {
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
      const state = this.#ctx.namespaces.use(ns);
      try {
        await this.#enqueue(state, deletes, puts);
      } catch (err: unknown) {
        throw new EtcdRegistryError(`writing to etcd namespace ${ns} failed: ${describe(err)}`, { cause: err });
      }
    }
  }

  #enqueue(state: NamespaceState, deletes: readonly RegistryEntry[], puts: readonly RegistryEntry[]): Promise<void> {
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
          const carried = await state.serial(() => this.#applyInNamespace(state, group.groups));
          // Callers with writes carried over wait for the round that writes them.
          const waiting = new Set(carried.map((g) => g.caller));
          if (carried.length > 0) {
            const next = (state.pending ??= { groups: [], callers: [] });
            next.groups.unshift(...carried);
            next.callers.unshift(...group.callers.filter((c) => waiting.has(c)));
          }
          for (const c of group.callers) {
            if (waiting.has(c)) continue;
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

  /** The writes of each entry; puts carry lease 0 until a transaction sets the namespace's lease. */
  #writesFor(state: NamespaceState, deletes: readonly RegistryEntry[], puts: readonly RegistryEntry[]): EntryWrites[] {
    const lease = 0n;
    const format = this.#ctx.format;
    const out: EntryWrites[] = [];
    for (const entry of deletes) {
      const key = this.#entryKey(entry);
      const writes: TxnWrite[] = [{ kind: 'delete', key }];
      const indexKey = this.#indexKey(entry);
      if (usesOwnerIndex(format) || state.indexKeys.has(indexKey)) writes.push({ kind: 'delete', key: indexKey });
      out.push({ writes, guard: state.revisionGuard(key) });
    }
    for (const entry of puts) {
      const encoded = encodeEntry(format, entry);
      const key = this.#entryKey(entry);
      const writes: TxnWrite[] = [{ kind: 'put', key, value: encoded.value, lease }];
      if (encoded.ownerIndex !== undefined) writes.push({ kind: 'put', key: this.#indexKey(entry), value: encoded.ownerIndex, lease });
      else if (state.indexKeys.size > 0) {
        const indexKey = this.#indexKey(entry);
        if (state.indexKeys.has(indexKey)) writes.push({ kind: 'delete', key: indexKey });
      }
      out.push({ writes, guard: state.revisionGuard(key) });
    }
    return out;
  }

  /**
   * Writes `groups` in as few transactions as fit. When writes arrived meanwhile and at least one
   * transaction landed, the last, partly filled one is not sent: its groups are returned, to go
   * first in the next round together with what arrived (so a stream of calls costs full
   * transactions, and each group waits at most one round).
   */
  async #applyInNamespace(state: NamespaceState, groups: readonly EntryWrites[]): Promise<readonly EntryWrites[]> {
    const { client, clusterId, logger } = this.#ctx;
    const ns = state.registryNamespace;
    if (this.#ctx.dryRun) {
      for (const { writes } of groups) {
        for (const w of writes)
          logger.info(
            { dryRun: true, op: w.kind, etcdKey: w.key, ...(w.kind === 'put' ? { value: w.value } : {}) },
            'dry run: etcd write skipped',
          );
      }
      return [];
    }
    let lease = await this.#leases.require(state);
    const batches = packBatches(groups, this.#ctx.maxTxnOps);
    for (const [i, packed] of batches.entries()) {
      if (i > 0 && i === batches.length - 1 && state.pending !== undefined) return packed.filter((g) => g.caller?.conflict === undefined);
      let batch = packed;
      let attempt = 0;
      for (;;) {
        // A caller whose entry changed under it gives up all its writes, in this batch and later ones.
        batch = batch.filter((g) => g.caller?.conflict === undefined);
        if (batch.length === 0) break;
        const writes = batch.flatMap((g) => g.writes.map((w) => (w.kind === 'put' ? { ...w, lease } : w)));
        let result: TxnResult | undefined;
        try {
          result = await client.txn([this.#leases.guard(ns, lease), ...batch.map((g) => g.guard)], writes);
        } catch (err: unknown) {
          if (!(err instanceof EtcdLeaseInvalidError) || attempt > 0) throw err;
          // The lease died between our check and the write: move to a new one and try once more.
          logger.warn({ registryNamespace: ns, leaseId: leaseHex(lease) }, 'etcd lease vanished during a write; granting a new one');
          this.#leases.markLost(state);
        }
        if (result?.succeeded === true) {
          state.remember(writes, result.revision);
          break;
        }
        const changed = (result?.failedGuards ?? []).filter((i) => i > 0).map((i) => batch[i - 1] as EntryWrites);
        // Someone else wrote here since the namespace was read: the retries read it afresh.
        if (changed.length > 0) state.view = undefined;
        for (const g of changed) {
          const key = g.guard.key;
          logger.warn({ etcdKey: key }, 'etcd entry changed since it was read; not writing it');
          // Forget the revision: the caller's retry reads the key afresh and plans against what is there now.
          state.revisions.delete(key);
          const conflict = new EtcdEntryChangedError(
            `etcd key ${key} was changed by someone else after it was read; nothing of this change was written, and the next attempt reads it again`,
          );
          if (g.caller) g.caller.conflict = conflict;
          else throw conflict;
        }
        if (changed.length > 0 && !(result?.failedGuards ?? []).includes(0)) continue;
        if (attempt++ > 0)
          throw new EtcdRegistryError(
            `the lease id key of namespace ${ns} keeps changing under this operator; is another operator with cluster id ${JSON.stringify(clusterId)} writing here?`,
          );
        // Someone moved the namespace to another lease (or ours died): re-read and settle first.
        if (!state.lost) state.lease = undefined;
        lease = await this.#leases.require(state);
      }
    }
    logger.debug({ registryNamespace: ns, entries: groups.length, transactions: batches.length }, 'etcd changes applied');
    return [];
  }

  #entryKey(entry: RegistryEntry): string {
    return this.#ctx.keys.entry(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }

  #indexKey(entry: RegistryEntry): string {
    return this.#ctx.keys.ownerIndex(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }
}

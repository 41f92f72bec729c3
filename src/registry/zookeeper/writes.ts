/**
 * Writes of the ZooKeeper backend: group commit of the changes of several callers into `multi`
 * transactions of at most {@link MAX_MULTI_OPS} operations and {@link MAX_MULTI_BYTES} bytes
 * (the server drops a connection whose request exceeds jute.maxbuffer, 1 MiB by default).
 *
 * Every operation is compared against the node as the plan read it: an update is a setData at
 * the version read, a create fails if anything appeared meanwhile, a delete removes only the
 * version read. A node of this cluster that is not an ephemeral of the backend's session (written
 * by hand, or left by a session that ended) is replaced by remove-then-create in the same
 * transaction, so it becomes ephemeral again. When one operation fails, its entry's caller gets
 * the error and the rest of the transaction is sent again without it.
 */
import { dirname } from 'node:path/posix';

import { describe } from '../../errors.ts';
import type { Changes, RegistryEntry } from '../types.ts';
import { SERVICE_NODE_MARKER, ZooKeeperEntryChangedError, ZooKeeperRegistryError, type ZooKeeperBackendContext } from './backend-state.ts';
import type { ZooKeeperSession } from './client.ts';
import { encodeZooKeeperEntry, zooKeeperUsesOwnerIndex } from './codec.ts';
import { hasZooKeeperCode, ZooKeeperMultiError, type ZooKeeperCodeName } from './errors.ts';
import { ensurePath } from './session-keeper.ts';
import { ZooKeeperLayout } from './paths.ts';
import type { ZooKeeperOp, ZooKeeperOpResult } from './transaction.ts';

/** Operations per transaction: far below anything a server refuses, and cheap to retry. */
export const MAX_MULTI_OPS = 1000;
/** Bytes of paths and data per transaction: half of ZooKeeper's default jute.maxbuffer. */
export const MAX_MULTI_BYTES = 512 * 1024;

/** One applyChanges call waiting for its writes. */
interface Caller {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
  /** Set when one of its entries could not be written; its other writes are dropped. */
  failed?: Error;
}

/** The writes of one entry. */
interface EntryWrite {
  readonly kind: 'put' | 'delete';
  readonly entry: RegistryEntry;
  readonly path: string;
  readonly indexPath: string;
  /** Node data (puts). */
  readonly value?: string;
  /** Owner index data (puts in the hostport format). */
  readonly indexValue?: string;
  readonly caller: Caller | undefined;
}

/** Applies changes to ZooKeeper, merging the writes of concurrent callers. */
export class ZooKeeperWrites {
  readonly #ctx: ZooKeeperBackendContext;
  #pending: { writes: EntryWrite[]; callers: Caller[] } | undefined;
  #flushing: Promise<void> | undefined;

  constructor(ctx: ZooKeeperBackendContext) {
    this.#ctx = ctx;
  }

  /** Resolves once every write queued so far has been sent or has failed. */
  async idle(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
  }

  /**
   * Writes the changes. Each call's entries are encoded before they join the writes of other
   * calls, so one call's bad input fails that call alone; a failure of ZooKeeper itself fails
   * every call of the merged write.
   */
  apply(changes: Changes): Promise<void> {
    if (changes.updateOld.length !== changes.updateNew.length) {
      throw new RangeError(`invalid changes: ${changes.updateOld.length} updateOld but ${changes.updateNew.length} updateNew entries`);
    }
    const deletes: RegistryEntry[] = [...changes.delete];
    const puts: RegistryEntry[] = [...changes.create];
    changes.updateNew.forEach((next, i) => {
      const old = changes.updateOld[i] as RegistryEntry;
      if (this.#path(old) !== this.#path(next)) deletes.push(old);
      puts.push(next);
    });
    return this.#enqueue(deletes, puts);
  }

  /** Writes `entries` again as they are held (after a session expiry). */
  rewrite(entries: readonly RegistryEntry[]): Promise<void> {
    return this.#enqueue([], entries);
  }

  #enqueue(deletes: readonly RegistryEntry[], puts: readonly RegistryEntry[]): Promise<void> {
    // Throws for entries ZooKeeper cannot hold before they can spoil a merged write.
    const writes = [...deletes.map((e) => this.#write('delete', e)), ...puts.map((e) => this.#write('put', e))];
    if (writes.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const pending = (this.#pending ??= { writes: [], callers: [] });
      const caller: Caller = { resolve, reject };
      for (const w of writes) pending.writes.push({ ...w, caller });
      pending.callers.push(caller);
      this.#flushing ??= this.#flush().finally(() => {
        this.#flushing = undefined;
      });
    });
  }

  #write(kind: 'put' | 'delete', entry: RegistryEntry): EntryWrite {
    const { layout, format, state, now } = this.#ctx;
    const path = this.#path(entry);
    const indexPath = layout.ownerIndex(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
    if (kind === 'delete') return { kind, entry, path, indexPath, caller: undefined };
    const encoded = encodeZooKeeperEntry(format, entry, state.registeredAt.get(path) ?? now());
    return {
      kind,
      entry,
      path,
      indexPath,
      value: encoded.value,
      ...(encoded.ownerIndex !== undefined ? { indexValue: encoded.ownerIndex } : {}),
      caller: undefined,
    };
  }

  #path(entry: RegistryEntry): string {
    return this.#ctx.layout.entry(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }

  /** Writes what is pending, merged, until nothing is; never rejects (the callers get the errors). */
  async #flush(): Promise<void> {
    for (let group = this.#pending; group !== undefined; group = this.#pending) {
      this.#pending = undefined;
      try {
        await this.#send(group.writes);
        for (const c of group.callers) {
          if (c.failed) c.reject(c.failed);
          else c.resolve();
        }
      } catch (err: unknown) {
        const wrapped = new ZooKeeperRegistryError(`writing to ZooKeeper failed: ${describe(err)}`, { cause: err });
        for (const c of group.callers) c.reject(wrapped);
      }
    }
  }

  async #send(writes: readonly EntryWrite[]): Promise<void> {
    const { keeper, logger, dryRun } = this.#ctx;
    if (dryRun) {
      for (const w of writes)
        logger.info(
          { dryRun: true, op: w.kind, zookeeperPath: w.path, ...(w.value !== undefined ? { value: w.value } : {}) },
          'dry run: ZooKeeper write skipped',
        );
      return;
    }
    const session = await keeper.current();
    await this.#ensureAncestors(session, servicesOf(writes));
    const batches = pack(writes);
    for (const packed of batches) {
      let batch = packed;
      for (let attempt = 0; ; attempt++) {
        batch = batch.filter((w) => w.caller?.failed === undefined);
        const entries: Planned[] = batch.map((w) => ({ w, ops: this.#opsFor(w, session.sessionId) }));
        if (entries.every((p) => p.ops.length === 0)) break;
        // Service nodes not known to exist are created in the same transaction as their entries.
        const parents: Planned[] = servicesOf(batch)
          .filter((service) => !this.#ctx.state.parents.has(service))
          .map((service) => ({
            ops: [{ op: 'create', path: service, data: SERVICE_NODE_MARKER, mode: 'persistent', acl: keeper.aclFor(service) }],
          }));
        const planned = [...parents, ...entries];
        const ops = planned.flatMap((p) => p.ops);
        try {
          const results = await session.multi(ops);
          this.#landed(session.sessionId, planned, results);
          break;
        } catch (err: unknown) {
          if (!(err instanceof ZooKeeperMultiError) || attempt >= 2 * batch.length + 3) throw err;
          await this.#failedOp(session, err, ops, planned);
        }
      }
    }
    await this.#removeEmptyServices(session, writes);
    logger.debug({ entries: writes.length, transactions: batches.length }, 'ZooKeeper changes applied');
  }

  /** The operations of one entry, against the nodes as last read or written here. */
  #opsFor(w: EntryWrite, sessionId: string): ZooKeeperOp[] {
    const { state, keeper, format } = this.#ctx;
    const ops: ZooKeeperOp[] = [];
    const put = (path: string, value: string): void => {
      const data = Buffer.from(value);
      const known = state.nodes.get(path);
      const acl = keeper.aclFor(path);
      if (known === undefined) ops.push({ op: 'create', path, data, mode: 'ephemeral', acl });
      else if (known.owner === sessionId) ops.push({ op: 'setData', path, data, version: known.version });
      else {
        // Not an ephemeral of this session: replaced in the same transaction, so it is one again.
        ops.push({ op: 'remove', path, version: known.version }, { op: 'create', path, data, mode: 'ephemeral', acl });
      }
    };
    const remove = (path: string): void => {
      const known = state.nodes.get(path);
      if (known !== undefined) ops.push({ op: 'remove', path, version: known.version });
    };
    if (w.kind === 'delete') {
      remove(w.path);
      remove(w.indexPath);
      return ops;
    }
    put(w.path, w.value ?? '');
    if (w.indexValue !== undefined) put(w.indexPath, w.indexValue);
    else if (!zooKeeperUsesOwnerIndex(format)) remove(w.indexPath);
    return ops;
  }

  /** Takes in a transaction that landed. */
  #landed(sessionId: string, planned: readonly Planned[], results: readonly ZooKeeperOpResult[]): void {
    const { state } = this.#ctx;
    state.epoch++;
    let i = 0;
    for (const { w, ops } of planned) {
      if (w === undefined) {
        for (const op of ops) state.parents.add(op.path);
        i += ops.length;
        continue;
      }
      for (const op of ops) {
        const result = results[i++];
        if (op.op === 'create') state.nodes.set(op.path, { version: 0, owner: sessionId });
        else if (op.op === 'remove') state.nodes.delete(op.path);
        else if (op.op === 'setData' && result?.op === 'setData')
          state.nodes.set(op.path, { version: result.stat.version, owner: sessionId });
      }
      if (w.kind === 'put') state.held.set(w.path, { entry: w.entry });
      else {
        state.held.delete(w.path);
        state.registeredAt.delete(w.path);
      }
    }
  }

  /** Works out what the failed operation means; its entry's caller fails, or the memory is corrected for another try. */
  async #failedOp(
    session: ZooKeeperSession,
    err: ZooKeeperMultiError,
    ops: readonly ZooKeeperOp[],
    planned: readonly Planned[],
  ): Promise<void> {
    const { state, logger } = this.#ctx;
    const op = ops[err.failedIndex];
    let at = 0;
    const item = planned.find((p) => (at += p.ops.length) > err.failedIndex);
    if (op === undefined || item === undefined) throw err;
    const owner = item.w;
    if (owner === undefined) {
      // A service node: someone else made it meanwhile (fine), or its namespace node is gone.
      if (err.codeName === 'NODE_EXISTS') state.parents.add(op.path);
      else if (err.codeName === 'NO_NODE') {
        for (const ancestor of ZooKeeperLayout.ancestors(op.path)) state.parents.delete(ancestor);
        await this.#ensureAncestors(session, [op.path]);
      } else throw err;
      return;
    }
    const fail = (error: Error): void => {
      if (owner.caller !== undefined) owner.caller.failed ??= error;
      else throw error;
    };
    switch (err.codeName) {
      case 'NO_NODE':
        // A parent was removed (by hand, or as an empty service by another writer): the next try
        // creates it again. A node that is gone already: a delete is done, a put creates it.
        if (op.op === 'create') state.parents.delete(dirname(op.path));
        else state.nodes.delete(op.path);
        return;
      case 'NODE_EXISTS':
      case 'BAD_VERSION':
        logger.warn({ zookeeperPath: op.path }, 'ZooKeeper node changed since it was read; not writing it');
        state.nodes.delete(op.path);
        fail(
          new ZooKeeperEntryChangedError(
            `ZooKeeper node ${op.path} was changed by someone else after it was read; nothing of this change was written, and the next attempt reads it again`,
            { cause: err },
          ),
        );
        return;
      case 'NO_AUTH':
        fail(
          new ZooKeeperRegistryError(
            `ZooKeeper refused to write ${op.path}: the Registry's digest credentials lack permission there (check the ACL of the path and the credentials Secret)`,
            { cause: err },
          ),
        );
        return;
      default:
        throw err;
    }
  }

  /** Creates the ancestors of `services` (namespace, base path, …) that are not known to exist, once each. */
  async #ensureAncestors(session: ZooKeeperSession, services: readonly string[]): Promise<void> {
    const { state, keeper } = this.#ctx;
    for (const service of services) {
      const missing = ZooKeeperLayout.ancestors(service).filter((p) => !state.parents.has(p));
      if (missing.length === 0) continue;
      await ensurePath(session, missing, (p) => keeper.aclFor(p));
      for (const p of missing) state.parents.add(p);
    }
  }

  /**
   * Removes the service nodes this backend created that deletes left empty. A node is removed
   * only if its data is still our marker and it has no children, at the version just read, so a
   * node someone else created or wrote to, or one that got a child meanwhile, stays.
   */
  async #removeEmptyServices(session: ZooKeeperSession, writes: readonly EntryWrite[]): Promise<void> {
    const { state } = this.#ctx;
    const services = new Set<string>();
    for (const w of writes) if (w.kind === 'delete') services.add(dirname(w.path)).add(dirname(w.indexPath));
    for (const service of services) {
      if (state.held.hasChildren(service)) continue;
      try {
        const node = await session.getData(service);
        if (node.stat.numChildren !== 0 || !node.data.equals(SERVICE_NODE_MARKER)) continue;
        await session.remove(service, node.stat.version);
        state.parents.delete(service);
      } catch (err: unknown) {
        if (!LEFT_ALONE.some((code) => hasZooKeeperCode(err, code))) throw err;
      }
    }
  }
}

/** The operations of one entry, or (without `w`) the creation of a service node its entries need. */
interface Planned {
  readonly w?: EntryWrite;
  readonly ops: ZooKeeperOp[];
}

/** The service nodes (entry parents and, for hostport, owner-index parents) the puts of `writes` need. */
function servicesOf(writes: readonly EntryWrite[]): string[] {
  const services = new Set<string>();
  for (const w of writes) {
    if (w.kind !== 'put') continue;
    services.add(dirname(w.path));
    if (w.indexValue !== undefined) services.add(dirname(w.indexPath));
  }
  return [...services];
}

/** Why an empty service node may not be removable: gone, filled, changed, or not ours to delete. */
const LEFT_ALONE: readonly ZooKeeperCodeName[] = ['NO_NODE', 'NOT_EMPTY', 'BAD_VERSION', 'NO_AUTH'];

/** Bytes an operation adds to a request. */
function opBytes(w: EntryWrite): number {
  return (
    Buffer.byteLength(w.path) * 2 +
    Buffer.byteLength(w.indexPath) * 2 +
    Buffer.byteLength(w.value ?? '') +
    Buffer.byteLength(w.indexValue ?? '') +
    256
  );
}

/** Packs entry writes into transactions without splitting an entry or repeating a path. */
function pack(writes: readonly EntryWrite[]): EntryWrite[][] {
  const batches: EntryWrite[][] = [];
  let current: EntryWrite[] = [];
  let paths = new Set<string>();
  let bytes = 0;
  for (const w of writes) {
    const more = opBytes(w);
    // At most six operations per entry: remove and create of the node and of its owner index, and
    // the creation of both their service nodes.
    if (current.length > 0 && (paths.has(w.path) || (current.length + 1) * 6 > MAX_MULTI_OPS || bytes + more > MAX_MULTI_BYTES)) {
      batches.push(current);
      current = [];
      paths = new Set();
      bytes = 0;
    }
    current.push(w);
    paths.add(w.path);
    bytes += more;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

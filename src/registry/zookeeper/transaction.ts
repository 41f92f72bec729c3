/**
 * `multi` transactions over the library's Transaction builder. Two corrections: the builder turns
 * version 0 into -1 (`version = version || -1` in check, setData and remove), which would make a
 * compare-and-set against a freshly created node unconditional, so the adapter writes the version
 * back into the op after the builder pushed it; and a failed transaction is reported with the index
 * of the op that failed, which the library does not say.
 */
import zookeeper from 'node-zookeeper-client';
import { toLibraryAcls, OPEN_ACL, type ZooKeeperAcl } from './acl.ts';
import { ZooKeeperMultiError } from './errors.ts';
import type { TransactionWithOps } from './internals.ts';
import { toZooKeeperStat, type ZooKeeperStat } from './stat.ts';

/** How a node is created. Sequential modes append a 10-digit counter to the name. */
export type ZooKeeperCreateMode = 'persistent' | 'ephemeral' | 'persistentSequential' | 'ephemeralSequential';

/** The library's number for a create mode. */
export function createModeFlag(mode: ZooKeeperCreateMode): number {
  switch (mode) {
    case 'persistent':
      return zookeeper.CreateMode.PERSISTENT;
    case 'ephemeral':
      return zookeeper.CreateMode.EPHEMERAL;
    case 'persistentSequential':
      return zookeeper.CreateMode.PERSISTENT_SEQUENTIAL;
    case 'ephemeralSequential':
      return zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL;
  }
}

/**
 * One operation of a transaction. `version` is the node's data version the operation requires
 * (from its Stat), or -1 for any version.
 */
export type ZooKeeperOp =
  | {
      readonly op: 'create';
      readonly path: string;
      readonly data?: Buffer;
      /** Default `persistent`. */
      readonly mode?: ZooKeeperCreateMode;
      /** Default {@link OPEN_ACL}. */
      readonly acl?: readonly ZooKeeperAcl[];
    }
  | { readonly op: 'setData'; readonly path: string; readonly data: Buffer; readonly version: number }
  | { readonly op: 'remove'; readonly path: string; readonly version: number }
  | { readonly op: 'check'; readonly path: string; readonly version: number };

/** What one operation of a committed transaction did, in the order of the ops. */
export type ZooKeeperOpResult =
  | { readonly op: 'create'; /** The created path (with its counter for sequential modes). */ readonly path: string }
  | { readonly op: 'setData'; readonly stat: ZooKeeperStat }
  | { readonly op: 'remove' }
  | { readonly op: 'check' };

/** Adds `ops` to the library's transaction builder, with their versions exactly as given. */
export function addOps(tx: TransactionWithOps, ops: readonly ZooKeeperOp[]): void {
  for (const op of ops) {
    switch (op.op) {
      case 'create':
        tx.create(op.path, op.data ?? Buffer.alloc(0), toLibraryAcls(op.acl ?? OPEN_ACL), createModeFlag(op.mode ?? 'persistent'));
        continue;
      case 'setData':
        tx.setData(op.path, op.data, op.version);
        break;
      case 'remove':
        tx.remove(op.path, op.version);
        break;
      case 'check':
        tx.check(op.path, op.version);
        break;
    }
    const pushed = tx.ops[tx.ops.length - 1];
    if (pushed !== undefined) pushed.version = op.version;
  }
}

/** A result as the library decodes it (`lib/jute` TransactionResponse). */
export interface LibraryOpResult {
  readonly type: number;
  readonly path?: string;
  readonly stat?: zookeeper.Stat;
  readonly err?: number;
}

const ERROR_RESULT_TYPE = -1;

/**
 * The results of a transaction, or throws {@link ZooKeeperMultiError} naming the op that failed:
 * the server answers a failed transaction with one error result per op, 0 for those before the
 * failing one, its code for it, and RUNTIME_INCONSISTENCY for those after.
 */
export function readResults(ops: readonly ZooKeeperOp[], results: readonly LibraryOpResult[]): ZooKeeperOpResult[] {
  const failedIndex = results.findIndex((r) => r.type === ERROR_RESULT_TYPE && r.err !== 0);
  if (failedIndex >= 0) {
    throw new ZooKeeperMultiError(failedIndex, ops[failedIndex]?.path, results[failedIndex]?.err ?? -1);
  }
  return ops.map((op, i): ZooKeeperOpResult => {
    const result = results[i];
    switch (op.op) {
      case 'create':
        return { op: 'create', path: result?.path ?? op.path };
      case 'setData':
        if (result?.stat === undefined) throw new ZooKeeperMultiError(i, op.path, -1);
        return { op: 'setData', stat: toZooKeeperStat(result.stat) };
      case 'remove':
        return { op: 'remove' };
      case 'check':
        return { op: 'check' };
    }
  });
}

/**
 * A node's Stat in plain types. The library hands ZooKeeper's 64-bit fields over as 8-byte Buffers;
 * session ids and zxids become fixed-width hex strings (the way ZooKeeper's own logs print them,
 * without `0x`), times become epoch milliseconds.
 */
import type zookeeper from 'node-zookeeper-client';

/** What ZooKeeper keeps about a node. */
export interface ZooKeeperStat {
  /** Data version: what `setData`, `remove` and `check` compare; 0 right after create. */
  readonly version: number;
  /** Children version. */
  readonly cversion: number;
  /** ACL version. */
  readonly aversion: number;
  /**
   * 16 hex digits: the session that owns an ephemeral node, all zeros for a persistent one.
   * Compare with {@link ZooKeeperSession.sessionId}.
   */
  readonly ephemeralOwner: string;
  readonly dataLength: number;
  readonly numChildren: number;
  /** 16 hex digits: transaction that created the node. */
  readonly czxid: string;
  /** 16 hex digits: transaction that last changed its data. */
  readonly mzxid: string;
  /** 16 hex digits: transaction that last changed its children. */
  readonly pzxid: string;
  /** Creation time, epoch milliseconds. */
  readonly ctime: number;
  /** Last data change, epoch milliseconds. */
  readonly mtime: number;
}

/** The ephemeralOwner of a persistent node. */
export const NO_OWNER = '0000000000000000';

/** A 64-bit value as 16 hex digits. */
export function longToHex(value: Buffer): string {
  return value.toString('hex').padStart(16, '0');
}

function longToNumber(value: Buffer): number {
  return Number(value.readBigInt64BE(0));
}

/** Converts the library's Stat. */
export function toZooKeeperStat(stat: zookeeper.Stat): ZooKeeperStat {
  return {
    version: stat.version,
    cversion: stat.cversion,
    aversion: stat.aversion,
    ephemeralOwner: longToHex(stat.ephemeralOwner),
    dataLength: stat.dataLength,
    numChildren: stat.numChildren,
    czxid: longToHex(stat.czxid),
    mzxid: longToHex(stat.mzxid),
    pzxid: longToHex(stat.pzxid),
    ctime: longToNumber(stat.ctime),
    mtime: longToNumber(stat.mtime),
  };
}

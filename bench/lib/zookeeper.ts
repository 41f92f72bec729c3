/**
 * The registry ZooKeeper from the harness's side: the server's own counters (four-letter words,
 * which cost no session and no watch), the raw `multi` write limit with the operator's own node
 * data, and snapshots of the entry nodes' Stats, whose zxids and owner say whether anything was
 * deleted, re-created or rewritten between two snapshots, and whose ctime is the server's commit
 * clock for "visible in ZooKeeper".
 */
import { fourLetterWord } from '../../testbed/zookeeper.ts';
import { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import type { ZooKeeperStat } from '../../src/registry/zookeeper/stat.ts';
import type { ZooKeeperOp } from '../../src/registry/zookeeper/transaction.ts';
import { mapBounded } from './stats.ts';

/** Server-wide figures at one moment, from `mntr` and `srvr`. */
export interface ZooKeeperCounters {
  /** Packets the server read from clients: every request, ping and auth packet (and every four-letter word). */
  readonly packetsReceived: number;
  /** Open client connections, including the one this reading was made over. */
  readonly connections: number;
  readonly ephemerals: number;
  readonly znodes: number;
  /** Last transaction id: it moves with every write (node or session), never with a read or a ping. */
  readonly zxid: number;
}

/** Four-letter words one {@link zooKeeperCounters} reading sends (each counts as a received packet). */
export const WORDS_PER_READING = 2;

/** `mntr` as a map of its numeric values. */
export async function mntr(port: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await fourLetterWord('127.0.0.1', port, 'mntr')).split('\n')) {
    const [k, v] = line.split('\t');
    if (k !== undefined && v !== undefined && v.trim() !== '' && Number.isFinite(Number(v))) out.set(k, Number(v));
  }
  return out;
}

/** Reads `mntr`, then `srvr` (for the zxid, which `mntr` of a standalone server does not give). */
export async function zooKeeperCounters(port: number): Promise<ZooKeeperCounters> {
  const m = await mntr(port);
  const srvr = await fourLetterWord('127.0.0.1', port, 'srvr');
  const zxid = /Zxid: (0x[0-9a-f]+)/i.exec(srvr)?.[1];
  const get = (k: string): number => m.get(k) ?? Number.NaN;
  return {
    packetsReceived: get('zk_packets_received'),
    connections: get('zk_num_alive_connections'),
    ephemerals: get('zk_ephemerals_count'),
    znodes: get('zk_znode_count'),
    zxid: zxid === undefined ? Number.NaN : Number(BigInt(zxid)),
  };
}

/** Opens a session of the harness (open ACLs, no credentials: the bench Registry has none). */
export function harnessSession(connectString: string): Promise<ZooKeeperSession> {
  return ZooKeeperSession.connect({ connectString, sessionTimeoutMs: 30_000, callTimeoutMs: 60_000 });
}

/** A node the raw write creates. */
export interface RawNode {
  readonly path: string;
  readonly data: Buffer;
  readonly mode: 'persistent' | 'ephemeral';
}

/** Result of {@link rawZooKeeperWrite}. */
export interface RawZooKeeperResult {
  readonly nodes: number;
  readonly transactions: number;
  readonly seconds: number;
}

/**
 * The raw limit: creates `nodes` (parents before children) in `multi` transactions of `opsPerTxn`
 * creates, one transaction in flight, as fast as the server answers.
 */
export async function rawZooKeeperWrite(
  session: ZooKeeperSession,
  nodes: readonly RawNode[],
  opsPerTxn = 1000,
): Promise<RawZooKeeperResult> {
  let transactions = 0;
  const started = performance.now();
  for (let i = 0; i < nodes.length; i += opsPerTxn) {
    const ops: ZooKeeperOp[] = nodes.slice(i, i + opsPerTxn).map((n) => ({ op: 'create', path: n.path, data: n.data, mode: n.mode }));
    await session.multi(ops);
    transactions++;
  }
  return { nodes: nodes.length, transactions, seconds: (performance.now() - started) / 1000 };
}

/** Removes `paths` (children before parents), `opsPerTxn` at a time. */
export async function removeNodes(session: ZooKeeperSession, paths: readonly string[], opsPerTxn = 1000): Promise<void> {
  for (let i = 0; i < paths.length; i += opsPerTxn) {
    await session.multi(paths.slice(i, i + opsPerTxn).map((path): ZooKeeperOp => ({ op: 'remove', path, version: -1 })));
  }
}

/** Stats of nodes by path; a node that does not exist is absent. */
export type NodeSnapshot = ReadonlyMap<string, ZooKeeperStat>;

/** Reads the Stat of every path, many in flight (the client pipelines them on its connection). */
export async function snapshotNodes(session: ZooKeeperSession, paths: readonly string[]): Promise<NodeSnapshot> {
  const out = new Map<string, ZooKeeperStat>();
  await mapBounded(paths, 256, async (p) => {
    const stat = await session.exists(p);
    if (stat !== undefined) out.set(p, stat);
  });
  return out;
}

/** What happened to the nodes between two snapshots. */
export interface NodeChanges {
  /** In the first snapshot, not in the second. */
  readonly deleted: number;
  /** In both, but created again in between (another czxid), or only in the second. */
  readonly created: number;
  /** Same node, data written in between (another mzxid). */
  readonly rewritten: number;
  /** Nodes whose ephemeralOwner differs (a new session holds them). */
  readonly ownerChanged: number;
  /** Distinct ephemeral owners in the second snapshot. */
  readonly sessionsAfter: number;
}

/** Compares two snapshots of the same paths. */
export function compareSnapshots(before: NodeSnapshot, after: NodeSnapshot): NodeChanges {
  let deleted = 0;
  let created = 0;
  let rewritten = 0;
  let ownerChanged = 0;
  for (const [path, a] of before) {
    const b = after.get(path);
    if (b === undefined) {
      deleted++;
      continue;
    }
    if (b.czxid !== a.czxid) created++;
    else if (b.mzxid !== a.mzxid) rewritten++;
    if (b.ephemeralOwner !== a.ephemeralOwner) ownerChanged++;
  }
  for (const path of after.keys()) if (!before.has(path)) created++;
  return { deleted, created, rewritten, ownerChanged, sessionsAfter: new Set([...after.values()].map((s) => s.ephemeralOwner)).size };
}

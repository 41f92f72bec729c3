/**
 * The registry etcd from the harness's side: a prefix watch that timestamps every put and delete
 * as it arrives (the benchmarks' clock for "visible in etcd"), the server's own counters from
 * /metrics, and the raw write limit: the same keys written straight through etcd3 in
 * 128-operation transactions on one lease.
 */
import type { Etcd3, IRequestOp } from 'etcd3';

/** A put or delete seen by the watch. */
export interface EtcdEvent {
  readonly kind: 'put' | 'delete';
  readonly key: string;
  readonly value: string;
  /** performance.now() on arrival. */
  readonly at: number;
}

/** Watches a prefix and keeps every event; `onEvent` sees them as they come. */
export class EtcdPrefixWatch {
  readonly events: EtcdEvent[] = [];
  onEvent: ((e: EtcdEvent) => void) | undefined;
  readonly #stop: () => Promise<void>;

  private constructor(stop: () => Promise<void>) {
    this.#stop = stop;
  }

  /** Starts watching `prefix` from now. */
  static async start(client: Etcd3, prefix: string): Promise<EtcdPrefixWatch> {
    const watcher = await client.watch().prefix(prefix).create();
    const w = new EtcdPrefixWatch(() => watcher.cancel());
    watcher.on('put', (kv) => w.#push({ kind: 'put', key: kv.key.toString(), value: kv.value.toString(), at: performance.now() }));
    watcher.on('delete', (kv) => w.#push({ kind: 'delete', key: kv.key.toString(), value: '', at: performance.now() }));
    return w;
  }

  #push(e: EtcdEvent): void {
    this.events.push(e);
    this.onEvent?.(e);
  }

  /** Events at or after `since` (performance.now()). */
  since(since: number): EtcdEvent[] {
    return this.events.filter((e) => e.at >= since);
  }

  /** Cancels the watch. */
  async stop(): Promise<void> {
    await this.#stop();
  }
}

/** etcd server counters the benchmarks read (from its Prometheus endpoint). */
export interface EtcdCounters {
  /** Lease keepalive messages received over gRPC. */
  readonly keepalives: number;
  /** Txn calls (the operator also reads through Txn: several prefixes at one revision). */
  readonly txns: number;
  /** Range calls. */
  readonly ranges: number;
  /** Keys put and deleted by the MVCC store (writes that change data). */
  readonly puts: number;
  readonly deletes: number;
}

/** Reads the counters from `<clientUrl>/metrics`. */
export async function etcdCounters(clientUrl: string): Promise<EtcdCounters> {
  const text = await (await fetch(`${clientUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  let keepalives = 0;
  let txns = 0;
  let ranges = 0;
  let puts = 0;
  let deletes = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.startsWith('grpc_server_msg_received_total{') && line.includes('grpc_method="LeaseKeepAlive"')) keepalives += value;
    else if (line.startsWith('grpc_server_handled_total{') && line.includes('grpc_method="Txn"')) txns += value;
    else if (line.startsWith('grpc_server_handled_total{') && line.includes('grpc_method="Range"')) ranges += value;
    else if (line.startsWith('etcd_mvcc_put_total ')) puts += value;
    else if (line.startsWith('etcd_mvcc_delete_total ')) deletes += value;
  }
  return { keepalives, txns, ranges, puts, deletes };
}

/** Difference of two counter readings. */
export function counterDelta(a: EtcdCounters, b: EtcdCounters): EtcdCounters {
  return {
    keepalives: b.keepalives - a.keepalives,
    txns: b.txns - a.txns,
    ranges: b.ranges - a.ranges,
    puts: b.puts - a.puts,
    deletes: b.deletes - a.deletes,
  };
}

/** Result of {@link rawEtcdWrite}. */
export interface RawWriteResult {
  readonly keys: number;
  readonly transactions: number;
  readonly seconds: number;
  readonly keysPerSecond: number;
}

/**
 * The raw limit: grants one lease and writes `entries` in transactions of `opsPerTxn` puts, one
 * transaction in flight, as fast as etcd answers; then revokes the lease, which removes the keys
 * again so the operator's run starts from the same state.
 */
export async function rawEtcdWrite(
  client: Etcd3,
  entries: readonly { key: string; value: string }[],
  ttlSeconds: number,
  opsPerTxn = 128,
): Promise<RawWriteResult> {
  const grant = await client.leaseClient.leaseGrant({ TTL: ttlSeconds });
  const lease = grant.ID;
  let transactions = 0;
  const started = performance.now();
  for (let i = 0; i < entries.length; i += opsPerTxn) {
    const success: IRequestOp[] = entries
      .slice(i, i + opsPerTxn)
      .map((e) => ({ request_put: { key: Buffer.from(e.key), value: Buffer.from(e.value), lease } }));
    await client.kv.txn({ success });
    transactions++;
  }
  const seconds = (performance.now() - started) / 1000;
  await client.leaseClient.leaseRevoke({ ID: lease });
  return { keys: entries.length, transactions, seconds, keysPerSecond: entries.length / seconds };
}

/** What lives under a prefix: its keys and the leases they are attached to. */
export interface PrefixContents {
  readonly keys: readonly string[];
  /** Lease ids (decimal strings, as etcd3 gives them); keys without a lease are not in it. */
  readonly leases: ReadonlySet<string>;
}

/** Reads every key under `prefix` and the leases they hang on. */
export async function prefixContents(client: Etcd3, prefix: string): Promise<PrefixContents> {
  const res = await client.getAll().prefix(prefix).exec();
  const leases = new Set(res.kvs.map((kv) => kv.lease).filter((l) => l !== '0'));
  return { keys: res.kvs.map((kv) => kv.key.toString()), leases };
}

/** Result of {@link waitUntilExpired}. */
export interface ExpiryResult {
  /** Whether the entries and the leases went within the time allowed. */
  readonly expired: boolean;
  /** Keys under the prefix at the last look, bookkeeping keys left out. */
  readonly keysLeft: number;
  /** Of the given leases, how many etcd still listed at the last look. */
  readonly leasesLeft: number;
  /** Bookkeeping keys at the last look (stored without a lease, so they outlive an outage). */
  readonly bookkeepingKeys: number;
  /** Of those, how many hang on a lease (0 unless the bookkeeping is not what it says). */
  readonly bookkeepingKeysOnALease: number;
  /** performance.now() of the look that found entries and leases at zero; NaN if none did. */
  readonly at: number;
}

/**
 * Waits until no key is left under `prefix` but the bookkeeping under `bookkeeping` (which the
 * operator stores without a lease: the ids of its leases, so a successor can find them) and none
 * of `leases` is listed by etcd any more: the state after an outage longer than the TTL, when
 * every lease expired and took its keys with it.
 */
export async function waitUntilExpired(
  client: Etcd3,
  prefix: string,
  bookkeeping: string,
  leases: ReadonlySet<string>,
  timeoutMs: number,
): Promise<ExpiryResult> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const res = await client.getAll().prefix(prefix).exec();
    const kept = res.kvs.filter((kv) => kv.key.toString().startsWith(bookkeeping));
    const keysLeft = res.kvs.length - kept.length;
    const listed = (await client.leaseClient.leaseLeases()).leases;
    const leasesLeft = listed.filter((l) => leases.has(String(l.ID))).length;
    const at = performance.now();
    const state = {
      keysLeft,
      leasesLeft,
      bookkeepingKeys: kept.length,
      bookkeepingKeysOnALease: kept.filter((kv) => kv.lease !== '0').length,
    };
    if (keysLeft === 0 && leasesLeft === 0) return { expired: true, ...state, at };
    if (at > deadline) return { expired: false, ...state, at: Number.NaN };
    await new Promise((r) => setTimeout(r, 250));
  }
}

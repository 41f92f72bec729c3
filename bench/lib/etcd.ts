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

/**
 * The small slice of etcd the backend needs, behind a private interface so the registry logic reads
 * in terms of prefixes, transactions and leases rather than gRPC messages. Every unary call carries
 * a deadline; the keepalive stream is the only call without one and is watched by its owner.
 */
import { handleWhen, retry } from 'cockatiel';
import { castGrpcError, Etcd3, EtcdInvalidAuthTokenError, isRecoverableError } from 'etcd3';
import type { ICompare, IDuplexStream, IKeyValue, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IRequestOp } from 'etcd3';
import type { WriteFence } from '../fence.ts';
import { intern } from '../../intern.ts';
import { decodeTxnResponse, encodeTxnRequest, TXN_METHOD } from './txn-wire.ts';
import type { TxnOutcome } from './txn-wire.ts';

/** How to reach and authenticate to etcd; the controller fills it from the Registry and its Secret. */
export interface EtcdConnectionOptions {
  /** Client URLs, all `http://` or all `https://`. */
  readonly endpoints: readonly string[];
  readonly username?: string;
  readonly password?: string;
  /** PEM CA bundle that signed the servers' certificates (Secret key `ca.crt`). */
  readonly ca?: Buffer | string;
  /** PEM client certificate (Secret key `tls.crt`), for mutual TLS. */
  readonly cert?: Buffer | string;
  /** PEM client key (Secret key `tls.key`), for mutual TLS. */
  readonly key?: Buffer | string;
  /** Deadline of every unary call, in milliseconds. */
  readonly callTimeoutMs: number;
  /** Refuses every write once closed (leadership lost). */
  readonly fence?: WriteFence;
}

/** A key as read from etcd. */
export interface StoredKeyValue {
  readonly key: string;
  readonly value: string;
  /** Decimal lease id; '0' when the key is not attached to a lease. */
  readonly lease: string;
  /** Revision of the key's last change. */
  readonly modRevision: string;
}

/** A copy of `key` at `modRevision` that the caller holds, if it holds one. */
export type KnownKeys = (key: string, modRevision: string) => StoredKeyValue | undefined;

/** One write in a transaction. */
export type TxnWrite =
  | { readonly kind: 'put'; readonly key: string; readonly value: string; readonly lease: bigint }
  | { readonly kind: 'delete'; readonly key: string };

/**
 * A transaction guard: the key holds exactly `value`, or (value undefined) does not exist; or the
 * key was last changed at `modRevision` ('0': it does not exist), i.e. nobody wrote it since it
 * was read.
 */
export type TxnGuard =
  { readonly key: string; readonly value: string | undefined } | { readonly key: string; readonly modRevision: string };

/** What a transaction did. */
export interface TxnResult {
  readonly succeeded: boolean;
  /** Revision of the store after the transaction: the mod revision of every key it put. */
  readonly revision: string;
  /** When not succeeded: the indexes of the guards that did not hold. */
  readonly failedGuards: readonly number[];
}

/** Lease state as etcd reports it; `ttlSeconds` <= 0 means the lease no longer exists. */
export interface LeaseInfo {
  readonly ttlSeconds: number;
  readonly grantedTtlSeconds: number;
}

/** The bidirectional keepalive stream: write lease ids, receive their renewed TTLs. */
export type KeepaliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** What the etcd backend needs from etcd. */
export interface EtcdClient {
  /**
   * Reads several key prefixes at one revision. `known` hands back a copy the caller already holds
   * of a key at the revision read (so the same value and lease), which is returned instead of a
   * new one: a reread of an unchanged namespace then decodes keys but no values.
   */
  rangePrefixes(prefixes: readonly string[], known?: KnownKeys): Promise<StoredKeyValue[][]>;
  /** Reads one key. */
  get(key: string): Promise<StoredKeyValue | undefined>;
  /** Runs `writes` if every guard holds; says whether it did and which guards failed. Throws on transport errors. */
  txn(guards: readonly TxnGuard[], writes: readonly TxnWrite[]): Promise<TxnResult>;
  leaseGrant(ttlSeconds: number): Promise<bigint>;
  leaseTimeToLive(id: bigint): Promise<LeaseInfo>;
  leaseRevoke(id: bigint): Promise<void>;
  openKeepaliveStream(): Promise<KeepaliveStream>;
  /** Closes every connection; later calls fail. */
  close(): void;
}

function prefixEnd(prefix: Buffer): Buffer {
  // etcd's convention: the range [prefix, prefix with its last non-0xff byte incremented).
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    const byte = end[i] as number;
    if (byte < 0xff) {
      end[i] = byte + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** Keys per range response: about 0.5 MB of entries, far below gRPC's 4 MiB message limit. */
export const RANGE_PAGE = 1000;

/**
 * A paged read's later pages are read at the first page's revision; when etcd compacted it
 * meanwhile, the read starts over (up to twice more), at once: a compaction is not a load problem.
 */
const overCompaction = retry(
  handleWhen((err) => /required revision has been compacted/.test(String((err as Error).message))),
  { maxAttempts: 2 },
);

/**
 * Reads every key under each prefix at one revision, {@link RANGE_PAGE} keys per response: the
 * first page of every prefix in one transaction, the rest continued from the last key read, at that
 * transaction's revision. A whole registry namespace in one response would pass gRPC's 4 MiB
 * receive limit at some 10,000 entries (the read then fails), and a large response outlives the
 * young generation while it is received and decoded, so every refresh of a view left its size in
 * old-generation garbage; a page is decoded and converted before the next is asked for.
 */
async function rangePaged(etcd: Etcd3, prefixes: readonly string[], known: KnownKeys | undefined): Promise<StoredKeyValue[][]> {
  const stored = (kv: IKeyValue): StoredKeyValue => {
    if (known === undefined) return toStored(kv);
    const key = kv.key.toString('utf8');
    return known(key, kv.mod_revision) ?? toStored(kv, key);
  };
  const ranges = prefixes.map((prefix) => {
    const start = Buffer.from(prefix);
    return { start, end: prefixEnd(start) };
  });
  const first = await etcd.kv.txn({
    success: ranges.map(({ start, end }): IRequestOp => ({ request_range: { key: start, range_end: end, limit: RANGE_PAGE } })),
  });
  const revision = first.header.revision;
  const out: StoredKeyValue[][] = [];
  for (const [i, { end }] of ranges.entries()) {
    let page: { kvs: IKeyValue[]; more: boolean } = first.responses[i]?.response_range ?? { kvs: [], more: false };
    const kept = page.kvs.map(stored);
    for (let last = page.kvs.at(-1); page.more && last !== undefined; last = page.kvs.at(-1)) {
      // The smallest key after the last one read.
      page = await etcd.kv.range({ key: Buffer.concat([last.key, ZERO_BYTE]), range_end: end, limit: RANGE_PAGE, revision });
      for (const kv of page.kvs) kept.push(stored(kv));
    }
    out.push(kept);
  }
  return out;
}

const ZERO_BYTE = Buffer.from([0]);

/** A key as read; the lease and revision strings, which many keys of a namespace share, are shared. */
function toStored(kv: IKeyValue, key = kv.key.toString('utf8')): StoredKeyValue {
  return { key, value: kv.value.toString('utf8'), lease: intern(kv.lease), modRevision: intern(kv.mod_revision) };
}

function compareOf(g: TxnGuard): ICompare {
  const key = Buffer.from(g.key);
  if ('modRevision' in g) {
    return g.modRevision === '0'
      ? { key, target: 'Version', result: 'Equal', version: 0 }
      : { key, target: 'Mod', result: 'Equal', mod_revision: g.modRevision };
  }
  return g.value === undefined
    ? { key, target: 'Version', result: 'Equal', version: 0 }
    : { key, target: 'Value', result: 'Equal', value: Buffer.from(g.value) };
}

/** Whether a guard holds for the key as read (undefined: absent). */
function holds(g: TxnGuard, kv: IKeyValue | undefined): boolean {
  if ('modRevision' in g) return g.modRevision === '0' ? kv === undefined : kv?.mod_revision === g.modRevision;
  return g.value === undefined ? kv === undefined : kv?.value.toString('utf8') === g.value;
}

function toBuffer(value: Buffer | string | undefined): Buffer | undefined {
  return value === undefined ? undefined : Buffer.isBuffer(value) ? value : Buffer.from(value);
}

/**
 * etcd3's client with one more call: a write transaction already encoded ({@link encodeTxnRequest}),
 * sent over the same connections, hosts and auth token as every other call, its errors cast to
 * etcd3's typed errors as etcd3 casts its own.
 */
class WritingEtcd3 extends Etcd3 {
  sendTxn(request: Buffer, deadline: number): Promise<TxnOutcome> {
    return this.pool.withConnection(
      'KV',
      ({ client, metadata }) =>
        new Promise<TxnOutcome>((resolve, reject) => {
          client.makeUnaryRequest(TXN_METHOD, identity, decodeTxnResponse, request, metadata, { deadline }, (err, res) => {
            if (err) reject(castGrpcError(err));
            else if (res === undefined) reject(new Error('etcd returned no Txn response'));
            else resolve(res);
          });
        }),
    );
  }
}

function identity(request: Buffer): Buffer {
  return request;
}

/** Connects to etcd through the `etcd3` package with auth, TLS and a deadline on every unary call. */
export function createEtcdClient(options: EtcdConnectionOptions): EtcdClient {
  const ca = toBuffer(options.ca);
  const cert = toBuffer(options.cert);
  const key = toBuffer(options.key);
  const timeout = options.callTimeoutMs;
  const fence = options.fence;
  const etcd = new WritingEtcd3({
    hosts: [...options.endpoints],
    dialTimeout: timeout,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeout }),
    ...(options.username !== undefined ? { auth: { username: options.username, password: options.password ?? '' } } : {}),
    ...(ca !== undefined || cert !== undefined
      ? {
          credentials: {
            // grpc-js accepts null roots (meaning the system's); etcd3's typing is stricter than the runtime.
            rootCertificate: ca ?? (null as unknown as Buffer),
            ...(key !== undefined ? { privateKey: key } : {}),
            ...(cert !== undefined ? { certChain: cert } : {}),
          },
        }
      : {}),
  });

  return {
    rangePrefixes(prefixes, known) {
      return overCompaction.execute(() => rangePaged(etcd, prefixes, known));
    },
    async get(k) {
      const res = await etcd.kv.range({ key: Buffer.from(k) });
      const kv = res.kvs[0];
      return kv === undefined ? undefined : toStored(kv);
    },
    async txn(guards, writes) {
      fence?.check('etcd transaction');
      let res: TxnOutcome;
      try {
        res = await etcd.sendTxn(encodeTxnRequest(guards, writes), Date.now() + timeout);
      } catch (err: unknown) {
        // What etcd3's own calls recover from (an expired auth token, a lost connection or host) is
        // left to one of them: it renews the token and retries as it does for every other call.
        if (!(err instanceof EtcdInvalidAuthTokenError) && !(err instanceof Error && isRecoverableError(err))) throw err;
        const success: IRequestOp[] = writes.map((w) =>
          w.kind === 'put'
            ? { request_put: { key: Buffer.from(w.key), value: Buffer.from(w.value), lease: w.lease.toString() } }
            : { request_delete_range: { key: Buffer.from(w.key) } },
        );
        const full = await etcd.kv.txn({ compare: guards.map(compareOf), success });
        res = { succeeded: full.succeeded, revision: full.header.revision };
      }
      if (res.succeeded) return { succeeded: true, revision: res.revision, failedGuards: [] };
      // Which guard failed: the guarded keys read in one more round trip, only when one did (rare),
      // so the transactions that land carry no reads. A key that changed since can only have moved
      // further from its guard (mod revisions grow); one created and deleted again in between shows
      // as holding, and the caller's retry meets its guard again.
      const read = await etcd.kv.txn({ success: guards.map((g) => ({ request_range: { key: Buffer.from(g.key) } })) });
      const failedGuards = guards.flatMap((g, i) => (holds(g, read.responses[i]?.response_range.kvs[0]) ? [] : [i]));
      return { succeeded: false, revision: read.header.revision, failedGuards };
    },
    async leaseGrant(ttlSeconds) {
      fence?.check('etcd lease grant');
      const res = await etcd.leaseClient.leaseGrant({ TTL: ttlSeconds });
      return BigInt(res.ID);
    },
    async leaseTimeToLive(id) {
      const res = await etcd.leaseClient.leaseTimeToLive({ ID: id.toString() });
      return { ttlSeconds: Number(res.TTL), grantedTtlSeconds: Number(res.grantedTTL) };
    },
    async leaseRevoke(id) {
      fence?.check('etcd lease revoke');
      await etcd.leaseClient.leaseRevoke({ ID: id.toString() });
    },
    async openKeepaliveStream() {
      fence?.check('etcd lease keepalive');
      const stream = await etcd.leaseClient.leaseKeepAlive();
      // Each renewal is a write too: a stream opened before the fence closed must not renew after.
      const write = stream.write.bind(stream);
      stream.write = (...args: Parameters<typeof write>) => {
        fence?.check('etcd lease keepalive');
        return write(...args);
      };
      return stream;
    },
    close() {
      etcd.close();
    },
  };
}

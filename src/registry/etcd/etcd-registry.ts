/**
 * The etcd backend: entries under `<prefix>/<registryNamespace>/<service>/<instanceId>`, one lease
 * per (registry namespace, cluster), writes in transactions of at most 128 operations.
 *
 * The lease id lives in etcd, not in memory, so a restarted operator or a new leader adopts the
 * lease (and thereby every entry on it) instead of granting a new one and rewriting everything.
 * Every transaction is guarded by that id key: if someone else has moved the namespace to another
 * lease, the write is not applied and the backend re-reads before trying again.
 *
 * This class is the facade: it validates the options and hands each call to the part that owns
 * it: `leases.ts` (lease keeping), `writes.ts` (group commit), `reads.ts`, and `namespace-state.ts`
 * (what is remembered of each registry namespace).
 */
import PQueue from 'p-queue';
import type { WriteFence } from '../fence.ts';
import { silentLogger } from '../logger.ts';
import type { RegistryLogger } from '../logger.ts';
import type { Changes, Owner, Registry, RegistryEntry, Scope } from '../types.ts';
import { createEtcdClient } from './client.ts';
import type { EtcdClient } from './client.ts';
import { ETCD_VALUE_FORMATS, usesOwnerIndex } from './codec.ts';
import type { EtcdValueFormat } from './codec.ts';
import type { EtcdBackendContext } from './context.ts';
import { EtcdRegistryError } from './errors.ts';
import { EtcdKeyLayout } from './keys.ts';
import { EtcdLeases } from './leases.ts';
import { NamespaceStates } from './namespace-state.ts';
import { readFromView, readOwnedByCluster, readRecords } from './reads.ts';
import { entriesPerTxn, EtcdWrites } from './writes.ts';

export { EtcdEntryChangedError, EtcdRegistryError } from './errors.ts';

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
  /**
   * How old a namespace's view may get before a scope read reads the namespace again (default
   * {@link DEFAULT_VIEW_MAX_AGE_MS}; 0: every scope read goes to etcd). What others write shows
   * within this time; the operator sets it below its resync period, so hand edits are still
   * repaired within one.
   */
  readonly viewMaxAgeMs?: number;
  /** Wraps the etcd client, e.g. to cut a link at an exact step in fault-injection tests. */
  readonly clientMiddleware?: (client: EtcdClient) => EtcdClient;
}

/** Default deadline of an etcd call. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default lease TTL. */
export const DEFAULT_LEASE_TTL_SECONDS = 30;
/** etcd's default limit of operations in one transaction. */
export const DEFAULT_MAX_TXN_OPS = 128;
export const DEFAULT_VIEW_MAX_AGE_MS = 0;

/** Registry backend for etcd v3. See the module comment for the layout and lease handling. */
export class EtcdRegistry implements Registry {
  readonly #ctx: EtcdBackendContext;
  readonly #leases: EtcdLeases;
  readonly #writes: EtcdWrites;
  #closed = false;
  /** Concurrent applyChanges calls are merged per namespace (writes.ts), scope reads served from namespace views. */
  readonly batchesWrites = true;
  /** Entries per transaction: one put each (json) or two (with the owner index), see entriesPerTxn. */
  readonly writeBatch: number;

  /** Validates the options and creates the client; connections open lazily on the first call. */
  constructor(options: EtcdRegistryOptions) {
    const ttl = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const timeout = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const format = options.format ?? 'json';
    const maxOps = options.maxTxnOps ?? DEFAULT_MAX_TXN_OPS;
    if (options.endpoints.length === 0) throw new RangeError('etcd registry needs at least one endpoint: set spec.etcd.endpoints');
    if (!Number.isInteger(ttl) || ttl < 2) throw new RangeError(`leaseTtlSeconds must be an integer of at least 2, got ${ttl}`);
    if (!(timeout > 0)) throw new RangeError(`callTimeoutMs must be positive, got ${timeout}`);
    if (!ETCD_VALUE_FORMATS.includes(format))
      throw new RangeError(`unknown etcd value format ${JSON.stringify(format)}: use one of ${ETCD_VALUE_FORMATS.join(', ')}`);
    if (!Number.isInteger(maxOps) || maxOps < 3) throw new RangeError(`maxTxnOps must be an integer of at least 3, got ${maxOps}`);
    if (options.clusterId === '') throw new RangeError('clusterId must not be empty');

    const keys = new EtcdKeyLayout(options.prefix);
    keys.leaseId(options.clusterId, 'x'); // validates the cluster id as a key segment
    const now = options.now ?? Date.now;
    const client = createEtcdClient({
      endpoints: options.endpoints,
      callTimeoutMs: timeout,
      ...options.credentials,
      ...(options.fence ? { fence: options.fence } : {}),
    });
    this.writeBatch = entriesPerTxn(maxOps, usesOwnerIndex(format) ? 2 : 1);
    this.#ctx = {
      client: options.clientMiddleware ? options.clientMiddleware(client) : client,
      keys,
      namespaces: new NamespaceStates(keys, now),
      clusterId: options.clusterId,
      format,
      ttlSeconds: ttl,
      dryRun: options.dryRun ?? false,
      maxTxnOps: maxOps,
      viewMaxAgeMs: options.viewMaxAgeMs ?? DEFAULT_VIEW_MAX_AGE_MS,
      viewReads: new PQueue({ concurrency: 1 }),
      logger: options.logger ?? silentLogger,
      now,
    };
    this.#leases = new EtcdLeases(this.#ctx, options.onKeepaliveFailure);
    this.#writes = new EtcdWrites(this.#ctx, this.#leases);
  }

  /**
   * Hex id (as `etcdctl lease list` prints it) of the lease the namespace's entries hang on, or
   * undefined when none is known yet or the lease was lost and not yet replaced.
   */
  leaseIdFor(registryNamespace: string): string | undefined {
    return this.#leases.leaseIdFor(registryNamespace);
  }

  /**
   * True when no entry of this cluster in the registry namespace can still be in etcd: its lease
   * was reported gone, or nothing of this process has had it confirmed alive for longer than the
   * TTL (a predecessor stopped renewing before this backend was built).
   */
  livenessLapsed(registryNamespace: string): boolean {
    return this.#leases.livenessLapsed(registryNamespace);
  }

  /**
   * Drops `owner`'s keys in the scope from the memory of owned keys, so that a lease recovery does
   * not write back the entries of a ServiceInstance that is gone while etcd could not be reached.
   */
  forget(scope: Scope, owner: Owner): void {
    this.#ctx.namespaces.forget(scope, owner);
  }

  /**
   * Every entry of this cluster under the prefix, in every registry namespace the credentials may
   * list (else in the namespaces this backend has used).
   */
  async ownedByCluster(): Promise<RegistryEntry[]> {
    this.#assertOpen();
    return readOwnedByCluster(this.#ctx);
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
    return this.#leases.release(wanted, idleMs);
  }

  /** Leases this backend keeps alive right now (one per registry namespace in use). */
  keepalives(): number {
    return this.#leases.size;
  }

  /**
   * Adopts, and starts keeping alive, every live lease this cluster has stored under the prefix,
   * without waiting for a `records()` call in each namespace. Call it once at startup or on becoming
   * leader, so that entries of namespaces reconciled late do not expire meanwhile. Resolves the
   * registry namespaces whose lease was adopted; writes nothing.
   */
  async adoptLeases(): Promise<string[]> {
    this.#assertOpen();
    return this.#leases.adoptStored();
  }

  /**
   * Every entry under the scope, whoever owns it. This cluster's entries that are stored in another
   * format or are not attached to the namespace's live lease come back with `needsRewrite`.
   */
  async records(scope: Scope): Promise<RegistryEntry[]> {
    this.#assertOpen();
    return readRecords(this.#ctx, this.#leases, scope);
  }

  /** The entries of each scope, as {@link records} reads them; scopes of one namespace share its view. */
  async recordsMany(scopes: readonly Scope[]): Promise<RegistryEntry[][]> {
    this.#assertOpen();
    const out: RegistryEntry[][] = [];
    for (const scope of scopes) {
      // From the view without a round of promises where it can (the common case once one scope
      // of the namespace was read), else as a single scope read.
      const state = this.#ctx.namespaces.use(scope.registryNamespace);
      out.push(readFromView(this.#ctx, state, scope) ?? (await readRecords(this.#ctx, this.#leases, scope)));
    }
    return out;
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
    return this.#writes.apply(changes);
  }

  /** Stops keepalives and closes the connections. Leases are not revoked: entries live out their TTL. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#leases.close();
    await Promise.all([...this.#ctx.namespaces.values()].map((s) => s.tail));
    this.#ctx.client.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new EtcdRegistryError('etcd registry is closed');
  }
}

/**
 * Turns Registry resources into live backends: reads credentials from the referenced Secret,
 * builds the backend for the Registry's type, and keeps one backend per Registry for as long as
 * its spec and the data of its Secrets are unchanged. A changed or deleted Registry closes its old
 * backend (without revoking leases, so nothing disappears while the new one adopts them); changed
 * Secret data (rotated credentials, see credentials.ts) builds a replacement first and closes the
 * old backend only once the replacement runs.
 */
import { BrokenCircuitError, ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen } from 'cockatiel';
import type { Logger } from 'pino';
import type { Registry as RegistryResource } from '../api/v1alpha1/types.ts';
import { ConsulHttpError } from './consul/client.ts';
import { ConsulRegistry } from './consul/consul-registry.ts';
import {
  DEFAULT_SECRET_REFRESH_MS,
  SecretRefresher,
  backendFingerprint,
  currentDigests,
  decideBackend,
  secretDigest,
  secretKey,
  specKeyOf,
  type SecretDigests,
  type SecretKey,
} from './credentials.ts';
import { EtcdRegistry, type EtcdCredentials } from './etcd/etcd-registry.ts';
import { ZooKeeperRegistry } from './zookeeper/zookeeper-registry.ts';
import { systemClock, type Clock } from '../clock.ts';
import { WriteFence } from './fence.ts';
import type { Owner, Registry, RegistryEntry, Scope } from './types.ts';

/** A backend plus what the controller shows in status. */
export interface Backend extends Registry {
  /** Lease id in use for a registry namespace, when the backend has leases. */
  leaseId?(registryNamespace: string): string | undefined;
  /** True when the backend writes nothing. */
  readonly dryRun?: boolean;
  /** Why calls are paused (circuit open), or undefined while the registry answers. */
  failing?(): string | undefined;
  /** etcd leases kept alive, Consul heartbeats passed, or ZooKeeper sessions held by this backend right now. */
  keepalives?(): number;
  /**
   * Every entry this cluster owns in the registry, in every registry namespace the backend can
   * list (for the owner-wide garbage collection).
   */
  ownedByCluster?(): Promise<RegistryEntry[]>;
  /**
   * True when nothing has renewed the registry namespace's lease (or passed its heartbeat) for
   * longer than the time after which the registry drops or fails its entries, so none of them can
   * still be served.
   */
  livenessLapsed?(registryNamespace: string): boolean;
  /** Forgets what the backend remembers of `owner`'s entries in the scope, so nothing rewrites them. */
  forget?(scope: Scope, owner: Owner): void;
  /**
   * Lets go of the registry namespaces outside `wanted` that hold none of this cluster's entries
   * and have been idle for `idleMs`: keepalive or heartbeat stopped, bookkeeping removed, memory freed.
   */
  retainNamespaces?(wanted: ReadonlySet<string>, idleMs: number): Promise<string[]>;
}

/** Gives the controller a backend per Registry resource. */
export interface BackendProvider {
  get(registry: RegistryResource): Promise<Backend>;
  /** Whether a backend for the Registry named `name` has been built and serves (no build is started). */
  isBuilt?(name: string): boolean;
  /** Since when (ms since the epoch) every build of the Registry's backend has failed; undefined while one serves. */
  buildFailingSince?(name: string): number | undefined;
}

/** Reads a Secret's data (base64-decoded) by namespace and name. */
export type SecretReader = (namespace: string, name: string) => Promise<Readonly<Record<string, Buffer>>>;

/** A Registry whose configuration cannot be used; the message says what to fix. */
export class RegistryConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RegistryConfigError';
  }
}

/** Hooks for metrics; every field optional. */
export interface BackendObserver {
  operation?(backend: string, operation: 'records' | 'apply', outcome: 'success' | 'error', seconds: number): void;
  keepaliveFailure?(backend: string): void;
  /** The circuit breaker of a Registry opened (true) or closed again (false). */
  circuit?(registry: string, open: boolean): void;
}

/**
 * Whether an error only says that the registry refused some input (Consul's 400 Bad Request, e.g.
 * an address it does not take), every part of it if it is several: the registry is up and
 * answering, and other writes go through.
 */
export function refusedInput(err: unknown): boolean {
  const parts: unknown[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof AggregateError) {
      parts.push(...(e.errors as unknown[]));
      break;
    }
    if (e instanceof ConsulHttpError) {
      parts.push(e);
      break;
    }
  }
  return parts.length > 0 && parts.every((p) => p instanceof ConsulHttpError && p.status === 400);
}

/** Consecutive failed calls that open a Registry's circuit. */
export const CIRCUIT_FAILURE_THRESHOLD = 5;

/**
 * Wraps a backend in a per-Registry circuit breaker (cockatiel) and times and counts every read
 * and change batch. After {@link CIRCUIT_FAILURE_THRESHOLD} consecutive failures the circuit
 * opens: calls fail at once, so a dead registry costs no timeouts and does not hold up the work
 * queue, until a trial call after an exponentially growing pause (1 s to 30 s) succeeds.
 */
export function guardBackend(backend: Backend, registryName: string, type: string, observer: BackendObserver | undefined): Backend {
  // A registry that answers and refuses one ServiceInstance's input is not failing: that must not
  // open the circuit for every other ServiceInstance (cockatiel counts an unhandled error as a success).
  const breaker = circuitBreaker(
    handleWhen((err) => !refusedInput(err)),
    {
      halfOpenAfter: new ExponentialBackoff({ initialDelay: 1000, maxDelay: 30_000 }),
      breaker: new ConsecutiveBreaker(CIRCUIT_FAILURE_THRESHOLD),
    },
  );
  let lastFailure = '';
  let open = false;
  breaker.onBreak(() => {
    open = true;
    observer?.circuit?.(registryName, true);
  });
  breaker.onReset(() => {
    open = false;
    observer?.circuit?.(registryName, false);
  });
  const call = async <T>(operation: 'records' | 'apply', fn: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      const result = await breaker.execute(fn);
      observer?.operation?.(type, operation, 'success', (performance.now() - started) / 1000);
      return result;
    } catch (err: unknown) {
      observer?.operation?.(type, operation, 'error', (performance.now() - started) / 1000);
      if (err instanceof BrokenCircuitError) {
        throw new Error(
          `Registry ${registryName} is failing (${CIRCUIT_FAILURE_THRESHOLD} calls in a row); its circuit is open and calls are paused before the next try. Last error: ${lastFailure}`,
          { cause: err },
        );
      }
      lastFailure = err instanceof Error ? err.message : String(err);
      throw err;
    }
  };
  return {
    records: (scope) => call('records', () => backend.records(scope)),
    ...(backend.recordsMany
      ? {
          recordsMany: (scopes: readonly Scope[]) =>
            call('records', () => (backend.recordsMany as NonNullable<Backend['recordsMany']>).call(backend, scopes)),
        }
      : {}),
    applyChanges: (changes) => call('apply', () => backend.applyChanges(changes)),
    close: () => backend.close(),
    failing: () => (open ? `circuit open after ${CIRCUIT_FAILURE_THRESHOLD} failed calls in a row; last error: ${lastFailure}` : undefined),
    ...(backend.leaseId ? { leaseId: backend.leaseId.bind(backend) } : {}),
    ...(backend.keepalives ? { keepalives: backend.keepalives.bind(backend) } : {}),
    ...(backend.ownedByCluster
      ? { ownedByCluster: () => call('records', () => (backend.ownedByCluster as () => Promise<RegistryEntry[]>).call(backend)) }
      : {}),
    ...(backend.livenessLapsed ? { livenessLapsed: backend.livenessLapsed.bind(backend) } : {}),
    ...(backend.forget ? { forget: backend.forget.bind(backend) } : {}),
    ...(backend.retainNamespaces ? { retainNamespaces: backend.retainNamespaces.bind(backend) } : {}),
    ...(backend.dryRun !== undefined ? { dryRun: backend.dryRun } : {}),
    ...(backend.marksUnhealthy === true ? { marksUnhealthy: true } : {}),
    ...(backend.batchesWrites === true ? { batchesWrites: true } : {}),
    ...(backend.writeBatch !== undefined ? { writeBatch: backend.writeBatch } : {}),
  };
}

/** Options of {@link KubeBackendProvider}. */
export interface BackendProviderOptions {
  readonly clusterId: string;
  readonly readSecret: SecretReader;
  readonly logger: Logger;
  readonly callTimeoutMs: number;
  /** Operator-wide dry run: every backend computes and logs but writes nothing. */
  readonly dryRun: boolean;
  readonly observer?: BackendObserver;
  /**
   * Pause between two re-reads (a `get` each) of the Secrets live backends were built from: a
   * Registry whose Secret data changed gets a backend with the new credentials within about this
   * long. Defaults to {@link DEFAULT_SECRET_REFRESH_MS}; also how long a replacement that failed
   * waits before the next try.
   */
  readonly secretRefreshMs?: number;
  /** Clock of the Secret re-reads; defaults to the real clock. */
  readonly clock?: Clock;
  /**
   * How old a backend's view of the registry may get before a read reads it again: an etcd
   * namespace in one range read, a Consul agent's services and checks in one bulk read, instead
   * of one read per ServiceInstance. Keep it well below the resync period so hand edits are still
   * repaired within about one; undefined: each backend's default.
   */
  readonly viewMaxAgeMs?: number;
}

interface CacheEntry {
  /** The uid and spec the backend is built for ({@link specKeyOf}). */
  readonly specKey: string;
  readonly uid: string;
  readonly generation: number;
  /** The Registry the backend was built for: a replacement with rotated credentials is built from it. */
  readonly registry: RegistryResource;
  /** The one build of this backend: every caller waits on it, success or failure (single flight). */
  readonly backend: Promise<Backend>;
  /** Digests of the Secrets the backend was built from; set once its build succeeded. */
  digests: SecretDigests | undefined;
  /** The replacement being built with rotated credentials; callers share it (single flight). */
  replacement: Promise<Backend> | undefined;
  /** The last replacement that failed: for which credentials ({@link backendFingerprint}), and when. */
  failed: { readonly fingerprint: string; readonly atMs: number } | undefined;
}

function text(data: Readonly<Record<string, Buffer>>, key: string): string | undefined {
  const v = data[key];
  return v === undefined ? undefined : v.toString('utf8');
}

/** Counts of what keeps registry entries alive, for the gauges. */
export interface BackendStats {
  /** Backends built and not yet closed. */
  readonly backends: number;
  /** etcd leases being kept alive plus Consul heartbeats being passed, per Registry, over its live backends. */
  readonly keepalives: ReadonlyMap<string, number>;
}

/**
 * The production {@link BackendProvider}. At most one backend per Registry is alive at any time:
 * concurrent callers share one build (and its failure: the next call after a failed build starts
 * a new one), a backend replaced by a spec change or released with its Registry is closed, and a
 * Registry once released is never built again, so no forgotten backend keeps leases or heartbeats
 * alive for entries nobody vouches for.
 *
 * Rotated credentials: every `secretRefreshMs` the Secrets of live backends are read again (`get`
 * only, the RBAC the chart grants) and a Registry whose Secret data changed gets a replacement
 * backend, built right away and shared by every `get()` meanwhile. The replacement adopts the same
 * etcd leases and Consul heartbeats, and only once it is built is the old backend closed (closing
 * never revokes or deregisters), so no entry drops; for that moment two backends are alive. If the
 * new credentials cannot be used (key missing, rejected by the registry), the old backend keeps
 * serving, a warning names the Registry and Secret (never their values), and the replacement is
 * tried again after `secretRefreshMs` or as soon as the Secret changes again. A Secret that cannot
 * be read any more (deleted, forbidden) likewise leaves the backend as it is. A failed registry
 * call or keepalive brings the next re-read forward (to a second after the last), so credentials
 * revoked at the registry just before the Secret is updated cost seconds, not a whole interval.
 */
export class KubeBackendProvider implements BackendProvider {
  readonly #o: BackendProviderOptions;
  readonly #cache = new Map<string, CacheEntry>();
  /** Backends built and not closed, whether cached or on their way out. */
  readonly #live = new Map<Backend, string>();
  /** UIDs of released (deleted) Registries: a reconcile still holding one gets an error, not a backend. */
  readonly #released = new Set<string>();
  readonly #fence = new WriteFence();
  /** Per Registry name: when the first of an unbroken run of failed builds failed. */
  readonly #failingSince = new Map<string, number>();
  readonly #clock: Clock;
  readonly #refreshMs: number;
  readonly #refresher: SecretRefresher;
  /**
   * The observer handed to every backend's guard: the caller's, plus a failed call brings the next
   * re-read of the Secrets forward (the credentials may just have been revoked).
   */
  readonly #guardObserver: BackendObserver;
  /** Replacements with rotated credentials under way, so that close() waits for them. */
  readonly #replacing = new Set<Promise<unknown>>();
  #closed = false;

  constructor(options: BackendProviderOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#refreshMs = options.secretRefreshMs ?? DEFAULT_SECRET_REFRESH_MS;
    this.#refresher = new SecretRefresher({
      intervalMs: this.#refreshMs,
      clock: this.#clock,
      read: (ref) => this.#o.readSecret(ref.namespace, ref.name),
      watched: () => this.#watchedSecrets(),
      afterRound: (changed) => this.#afterRefresh(changed),
      onReadError: (secret, err) =>
        this.#o.logger.warn(
          { secret, err },
          'cannot read a Secret named by a Registry again; its backends keep the credentials they were built with',
        ),
      onReadRecovered: (secret) => this.#o.logger.info({ secret }, 'a Secret named by a Registry can be read again'),
    });
    this.#guardObserver = {
      ...options.observer,
      operation: (backend, operation, outcome, seconds) => {
        options.observer?.operation?.(backend, operation, outcome, seconds);
        if (outcome === 'error') this.#refresher.refreshSoon();
      },
    };
  }

  /** A lease keepalive or heartbeat failed: counted, and the Secrets are read again soon. */
  #refused(backend: 'etcd' | 'consul' | 'zookeeper'): void {
    this.#o.observer?.keepaliveFailure?.(backend);
    this.#refresher.refreshSoon();
  }

  /** Returns the backend for a Registry, creating or replacing it when its spec changed. */
  get(registry: RegistryResource): Promise<Backend> {
    const name = registry.metadata?.name ?? '';
    const uid = registry.metadata?.uid ?? '';
    if (this.#fence.closed || this.#closed)
      return Promise.reject(new RegistryConfigError(`Registry ${name}: this process no longer writes to registries`));
    if (uid !== '' && this.#released.has(uid)) return Promise.reject(new RegistryConfigError(`Registry ${name} was deleted`));
    const generation = registry.metadata?.generation ?? 0;
    const cached = this.#cache.get(name);
    if (cached) {
      const decision = this.#decide(cached, uid, registry);
      if (decision === 'reuse' || decision === 'keep-old') return cached.backend;
      if (decision === 'await-replacement' && cached.replacement) return cached.replacement;
      if (decision === 'rotate') return this.#rotate(name, cached);
      // A reconcile that read the Registry before its latest change must not swap the newer backend
      // back out: the newer one serves it, and the next reconcile sees the new spec.
      if (cached.uid === uid && cached.generation > generation) return cached.backend;
      this.#cache.delete(name);
      void this.#closeQuietly(name, cached);
    }
    const digests: Record<SecretKey, string> = {};
    const backend = this.#build(registry, digests);
    const entry: CacheEntry = {
      specKey: specKeyOf(uid, registry.spec),
      uid,
      generation,
      registry,
      backend,
      digests: undefined,
      replacement: undefined,
      failed: undefined,
    };
    void backend.then(
      () => {
        entry.digests = digests;
        this.#failingSince.delete(name);
        this.#refresher.start();
      },
      // A failed build is forgotten so that the next call tries again; its callers all get its error.
      () => {
        if (this.#cache.get(name) === entry) this.#cache.delete(name);
        if (!this.#failingSince.has(name)) this.#failingSince.set(name, this.#clock.now());
      },
    );
    this.#cache.set(name, entry);
    return backend;
  }

  /** Since when every build of the Registry's backend has failed, or undefined while one serves. */
  buildFailingSince(name: string): number | undefined {
    return this.#failingSince.get(name);
  }

  /** Whether a backend for the Registry named `name` has been built and serves. */
  isBuilt(name: string): boolean {
    // Digests are set once a build succeeded: a build under way (or failing) does not count.
    return this.#cache.get(name)?.digests !== undefined;
  }

  /** Forgets a deleted Registry and closes its backend; later calls for that Registry fail. */
  async release(name: string, uid?: string): Promise<void> {
    const cached = this.#cache.get(name);
    const gone = uid ?? cached?.uid;
    if (gone) this.#released.add(gone);
    this.#failingSince.delete(name);
    if (!cached || (uid !== undefined && cached.uid !== uid)) return;
    this.#cache.delete(name);
    await this.#closeQuietly(name, cached);
  }

  /**
   * Refuses every registry write of every backend, now and later (leadership lost). Synchronous on
   * purpose: nothing may be sent between losing the Lease and the fence closing.
   */
  fence(reason: string): void {
    this.#fence.close(reason);
  }

  /** Live backends and keepalive loops (for the gauges). */
  stats(): BackendStats {
    const keepalives = new Map<string, number>();
    for (const [b, name] of this.#live) keepalives.set(name, (keepalives.get(name) ?? 0) + (b.keepalives?.() ?? 0));
    return { backends: this.#live.size, keepalives };
  }

  /** Closes every backend (on shutdown); leases are left to expire or be adopted. */
  async close(): Promise<void> {
    this.#closed = true;
    const entries = [...this.#cache.entries()];
    this.#cache.clear();
    // Replacements under way see the provider closed and close what they built.
    const replacements = [...this.#replacing].map((r) => r.catch(() => undefined));
    await Promise.all([this.#refresher.close(), ...entries.map(([name, e]) => this.#closeQuietly(name, e)), ...replacements]);
  }

  #decide(entry: CacheEntry, uid: string, registry: RegistryResource): ReturnType<typeof decideBackend> {
    const held = { specKey: entry.specKey, digests: entry.digests, replacing: entry.replacement !== undefined, failed: entry.failed };
    return decideBackend(held, { uid, spec: registry.spec }, (key) => this.#refresher.latest(key), this.#clock.now(), this.#refreshMs);
  }

  /** Builds a backend and counts it live; `digests` receives the digests of the Secrets it read. */
  #build(registry: RegistryResource, digests: Record<SecretKey, string>): Promise<Backend> {
    return this.#create(registry, digests).then((b) => {
      this.#live.set(b, registry.metadata?.name ?? '');
      return b;
    });
  }

  /**
   * Builds a replacement for `old` with the credentials its Secrets hold now (single flight: every
   * caller meanwhile shares it), then swaps it in and closes `old`. On failure `old` stays and
   * serves; callers get it, and the failure is remembered so that only a later try or new data
   * starts another build.
   */
  #rotate(name: string, old: CacheEntry): Promise<Backend> {
    const logger = this.#o.logger.child({ registry: name });
    const secrets = Object.keys(old.digests ?? {});
    const wanted = backendFingerprint(
      old.uid,
      old.registry.spec,
      currentDigests(old.digests ?? {}, (key) => this.#refresher.latest(key)),
    );
    logger.info(
      { secrets },
      'credentials in a Secret named by the Registry changed; building a backend with them while the current one keeps serving',
    );
    const digests: Record<SecretKey, string> = {};
    const built = this.#build(old.registry, digests);
    const replacement = built
      .then(
        async (backend) => {
          if (this.#cache.get(name) !== old || this.#closed || this.#fence.closed) {
            // Replaced by a spec change, released, or shut down while this was built.
            await this.#closeBackend(name, backend);
            const current = this.#closed ? undefined : this.#cache.get(name);
            if (current) return current.backend;
            throw new RegistryConfigError(
              `Registry ${name}: its backend was released while rotated credentials were being used; this process no longer writes to it`,
            );
          }
          const next: CacheEntry = {
            specKey: old.specKey,
            uid: old.uid,
            generation: old.generation,
            registry: old.registry,
            backend: built,
            digests,
            replacement: undefined,
            failed: undefined,
          };
          this.#cache.set(name, next);
          this.#refresher.start();
          logger.info(
            { secrets },
            'backend rebuilt with the rotated credentials; closing the previous one (its leases and heartbeats carry on in the new one)',
          );
          void this.#closeQuietly(name, old);
          return backend;
        },
        (err: unknown) => {
          old.failed = { fingerprint: wanted, atMs: this.#clock.now() };
          logger.warn(
            { secrets, err },
            'the rotated credentials cannot be used: the backend built from the previous ones keeps serving, and the new ones are ' +
              `tried again in ${this.#refreshMs / 1000} s or when the Secret changes again; fix the Secret`,
          );
          return old.backend;
        },
      )
      .finally(() => {
        old.replacement = undefined;
        this.#replacing.delete(replacement);
      });
    old.replacement = replacement;
    this.#replacing.add(replacement);
    return replacement;
  }

  /** The Secrets that built backends were built from, for the next round of re-reads. */
  *#watchedSecrets(): Iterable<SecretKey> {
    for (const entry of this.#cache.values()) yield* Object.keys(entry.digests ?? {});
  }

  /**
   * After each round of re-reads: starts a replacement for every backend whose Secrets changed,
   * and again for one whose last replacement failed at least `secretRefreshMs` ago.
   */
  #afterRefresh(changed: readonly SecretKey[]): void {
    if (this.#closed || this.#fence.closed) return;
    if (changed.length > 0) this.#o.logger.info({ secrets: changed }, 'Secrets named by Registries changed');
    for (const [name, entry] of this.#cache) {
      const decision = this.#decide(entry, entry.uid, entry.registry);
      if (decision === 'rotate') void this.#rotate(name, entry).catch(() => undefined);
    }
  }

  async #closeQuietly(name: string, entry: CacheEntry): Promise<void> {
    let backend: Backend;
    try {
      backend = await entry.backend;
    } catch {
      return; // never built, nothing to close
    }
    await this.#closeBackend(name, backend);
  }

  async #closeBackend(name: string, backend: Backend): Promise<void> {
    try {
      await backend.close();
    } catch (err: unknown) {
      this.#o.logger.debug({ registry: name, err }, 'closing backend failed');
    } finally {
      this.#live.delete(backend);
    }
  }

  /** Reads a Secret a Registry names and records its digest in `digests` (never its values in a log). */
  async #secret(
    registryName: string,
    ref: { name: string; namespace?: string },
    digests: Record<SecretKey, string>,
  ): Promise<Readonly<Record<string, Buffer>>> {
    let data: Readonly<Record<string, Buffer>>;
    try {
      data = await this.#o.readSecret(ref.namespace ?? '', ref.name);
    } catch (err: unknown) {
      throw new RegistryConfigError(
        `cannot read Secret ${ref.namespace ?? ''}/${ref.name} named by Registry ${registryName}: create it, and let the operator's ServiceAccount get it`,
        { cause: err },
      );
    }
    const key = secretKey(ref);
    const digest = secretDigest(data);
    digests[key] = digest;
    this.#refresher.record(key, digest);
    return data;
  }

  async #create(registry: RegistryResource, digests: Record<SecretKey, string>): Promise<Backend> {
    const name = registry.metadata?.name ?? '';
    const spec = registry.spec;
    const dryRun = this.#o.dryRun || spec.dryRun === true;
    const logger = this.#o.logger.child({ registry: name });
    if (spec.type === 'etcd') {
      if (!spec.etcd) throw new RegistryConfigError(`Registry ${name} has type etcd but no spec.etcd`);
      let credentials: EtcdCredentials | undefined;
      const ref = spec.etcd.credentialsSecretRef;
      if (ref) {
        const data = await this.#secret(name, ref, digests);
        const c: Record<string, string> = {};
        for (const k of ['username', 'password', 'ca.crt', 'tls.crt', 'tls.key']) {
          const v = text(data, k);
          if (v !== undefined) c[k] = v;
        }
        credentials = {
          ...(c['username'] !== undefined ? { username: c['username'] } : {}),
          ...(c['password'] !== undefined ? { password: c['password'] } : {}),
          ...(c['ca.crt'] !== undefined ? { ca: c['ca.crt'] } : {}),
          ...(c['tls.crt'] !== undefined ? { cert: c['tls.crt'] } : {}),
          ...(c['tls.key'] !== undefined ? { key: c['tls.key'] } : {}),
        };
      }
      const backend = new EtcdRegistry({
        endpoints: spec.etcd.endpoints,
        ...(credentials ? { credentials } : {}),
        callTimeoutMs: this.#o.callTimeoutMs,
        leaseTtlSeconds: spec.leaseTTLSeconds ?? 30,
        prefix: spec.etcd.prefix ?? '/services',
        format: spec.etcd.format ?? 'json',
        dryRun,
        clusterId: this.#o.clusterId,
        logger,
        onKeepaliveFailure: () => this.#refused('etcd'),
        fence: this.#fence,
        ...(this.#o.viewMaxAgeMs !== undefined ? { viewMaxAgeMs: this.#o.viewMaxAgeMs } : {}),
      });
      return guardBackend(await this.#adopt(backend, logger, dryRun, (ns) => backend.leaseIdFor(ns)), name, 'etcd', this.#guardObserver);
    }
    if (spec.type === 'consul') {
      if (!spec.consul) throw new RegistryConfigError(`Registry ${name} has type consul but no spec.consul`);
      let token: string | undefined;
      const ref = spec.consul.tokenSecretRef;
      if (ref) {
        token = text(await this.#secret(name, ref, digests), 'token')?.trim();
        if (!token)
          throw new RegistryConfigError(
            `Secret ${ref.namespace ?? ''}/${ref.name} named by Registry ${name} has no key "token"; put the Consul ACL token there`,
          );
      }
      const backend = new ConsulRegistry({
        address: spec.consul.address,
        ...(token ? { token } : {}),
        ...(spec.consul.datacenter ? { datacenter: spec.consul.datacenter } : {}),
        ...(spec.consul.namespace ? { namespaceTemplate: spec.consul.namespace } : {}),
        serviceNameTemplate: spec.consul.serviceName ?? '{service}',
        leaseTtlSeconds: spec.leaseTTLSeconds ?? 30,
        dryRun,
        clusterId: this.#o.clusterId,
        registryName: name,
        callTimeoutMs: this.#o.callTimeoutMs,
        logger,
        onHeartbeatFailure: () => this.#refused('consul'),
        fence: this.#fence,
        ...(this.#o.viewMaxAgeMs !== undefined ? { viewRefreshSeconds: this.#o.viewMaxAgeMs / 1000 } : {}),
      });
      return guardBackend(await this.#adopt(backend, logger, dryRun, (ns) => backend.leaseIdFor(ns)), name, 'consul', this.#guardObserver);
    }
    if (spec.type === 'zookeeper') {
      if (!spec.zookeeper) throw new RegistryConfigError(`Registry ${name} has type zookeeper but no spec.zookeeper`);
      let digest: string | undefined;
      let previousDigest: string | undefined;
      const ref = spec.zookeeper.credentialsSecretRef;
      if (ref) {
        const data = await this.#secret(name, ref, digests);
        const username = text(data, 'username')?.trim();
        const password = text(data, 'password');
        if (!username || password === undefined)
          throw new RegistryConfigError(
            `Secret ${ref.namespace ?? ''}/${ref.name} named by Registry ${name} needs keys "username" and "password" (ZooKeeper digest credentials)`,
          );
        digest = `${username}:${password}`;
        const previous = text(data, 'previousPassword');
        if (previous !== undefined && previous !== '') previousDigest = `${username}:${previous}`;
      }
      const backend = new ZooKeeperRegistry({
        servers: spec.zookeeper.servers,
        basePath: spec.zookeeper.basePath ?? '/services',
        format: spec.zookeeper.format ?? 'curator',
        sessionTimeoutMs: (spec.zookeeper.sessionTimeoutSeconds ?? spec.leaseTTLSeconds ?? 30) * 1000,
        callTimeoutMs: this.#o.callTimeoutMs,
        ...(digest !== undefined ? { digest } : {}),
        ...(previousDigest !== undefined ? { previousDigest } : {}),
        dryRun,
        clusterId: this.#o.clusterId,
        registryName: name,
        logger,
        onKeepaliveFailure: () => this.#refused('zookeeper'),
        fence: this.#fence,
      });
      try {
        if (await backend.start()) logger.info({ sessionId: backend.leaseIdFor() }, 'adopted the existing ZooKeeper session');
      } catch (err: unknown) {
        await backend.close().catch(() => undefined);
        throw err;
      }
      return guardBackend(
        Object.assign(backend, { dryRun, leaseId: (ns: string) => backend.leaseIdFor(ns) }),
        name,
        'zookeeper',
        this.#guardObserver,
      );
    }
    throw new RegistryConfigError(`Registry ${name} has type ${String(spec.type)}, which this version does not support`);
  }

  /**
   * Keeps alive every lease (etcd) or heartbeat (Consul) this cluster holds in the registry before
   * the first reconcile, so that no namespace's entries expire while its ServiceInstances wait in
   * the queue; a backend that cannot even do that is closed and the error goes to the caller.
   */
  async #adopt<B extends Registry & { adoptLeases(): Promise<string[]>; keepalives(): number }>(
    backend: B,
    logger: Logger,
    dryRun: boolean,
    leaseId: (ns: string) => string | undefined,
  ): Promise<Backend> {
    try {
      const adopted = await backend.adoptLeases();
      if (adopted.length > 0) logger.info({ registryNamespaces: adopted }, 'adopted existing leases');
    } catch (err: unknown) {
      await backend.close().catch(() => undefined);
      throw err;
    }
    return Object.assign(backend, { dryRun, leaseId });
  }
}

/**
 * Turns Registry resources into live backends: reads credentials from the referenced Secret,
 * builds the backend for the Registry's type, and keeps one backend per Registry for as long as
 * its spec is unchanged. A changed or deleted Registry closes its old backend (without revoking
 * leases, so nothing disappears while the new one adopts them).
 */
import { BrokenCircuitError, ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleAll } from 'cockatiel';
import type { Logger } from 'pino';
import type { Registry as RegistryResource } from '../api/v1alpha1/types.ts';
import { ConsulRegistry } from './consul/consul-registry.ts';
import { EtcdRegistry, type EtcdCredentials } from './etcd/etcd-registry.ts';
import type { Registry } from './types.ts';

/** A backend plus what the controller shows in status. */
export interface Backend extends Registry {
  /** Lease id in use for a registry namespace, when the backend has leases. */
  leaseId?(registryNamespace: string): string | undefined;
  /** True when the backend writes nothing. */
  readonly dryRun?: boolean;
  /** Why calls are paused (circuit open), or undefined while the registry answers. */
  failing?(): string | undefined;
}

/** Gives the controller a backend per Registry resource. */
export interface BackendProvider {
  get(registry: RegistryResource): Promise<Backend>;
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

/** Consecutive failed calls that open a Registry's circuit. */
export const CIRCUIT_FAILURE_THRESHOLD = 5;

/**
 * Wraps a backend in a per-Registry circuit breaker (cockatiel) and times and counts every read
 * and change batch. After {@link CIRCUIT_FAILURE_THRESHOLD} consecutive failures the circuit
 * opens: calls fail at once, so a dead registry costs no timeouts and does not hold up the work
 * queue, until a trial call after an exponentially growing pause (1 s to 30 s) succeeds.
 */
export function guardBackend(backend: Backend, registryName: string, type: string, observer: BackendObserver | undefined): Backend {
  const breaker = circuitBreaker(handleAll, {
    halfOpenAfter: new ExponentialBackoff({ initialDelay: 1000, maxDelay: 30_000 }),
    breaker: new ConsecutiveBreaker(CIRCUIT_FAILURE_THRESHOLD),
  });
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
        throw new Error(`Registry ${registryName} is failing (${CIRCUIT_FAILURE_THRESHOLD} calls in a row); its circuit is open and calls are paused before the next try. Last error: ${lastFailure}`, { cause: err });
      }
      lastFailure = err instanceof Error ? err.message : String(err);
      throw err;
    }
  };
  return {
    records: (scope) => call('records', () => backend.records(scope)),
    applyChanges: (changes) => call('apply', () => backend.applyChanges(changes)),
    close: () => backend.close(),
    failing: () => (open ? `circuit open after ${CIRCUIT_FAILURE_THRESHOLD} failed calls in a row; last error: ${lastFailure}` : undefined),
    ...(backend.leaseId ? { leaseId: backend.leaseId.bind(backend) } : {}),
    ...(backend.dryRun !== undefined ? { dryRun: backend.dryRun } : {}),
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
}

interface CacheEntry {
  readonly fingerprint: string;
  readonly backend: Promise<Backend>;
}

function text(data: Readonly<Record<string, Buffer>>, key: string): string | undefined {
  const v = data[key];
  return v === undefined ? undefined : v.toString('utf8');
}

/** The production {@link BackendProvider}. */
export class KubeBackendProvider implements BackendProvider {
  readonly #o: BackendProviderOptions;
  readonly #cache = new Map<string, CacheEntry>();

  constructor(options: BackendProviderOptions) {
    this.#o = options;
  }

  /** Returns the backend for a Registry, creating or replacing it when its spec changed. */
  async get(registry: RegistryResource): Promise<Backend> {
    const name = registry.metadata?.name ?? '';
    const fingerprint = JSON.stringify([registry.metadata?.uid, registry.spec]);
    const cached = this.#cache.get(name);
    if (cached?.fingerprint === fingerprint) {
      try {
        return await cached.backend;
      } catch {
        // A backend that failed to build (e.g. Secret missing) is retried on the next call.
        if (this.#cache.get(name) === cached) this.#cache.delete(name);
      }
    } else if (cached) {
      this.#cache.delete(name);
      await this.#closeQuietly(name, cached);
    }
    const entry: CacheEntry = { fingerprint, backend: this.#create(registry) };
    this.#cache.set(name, entry);
    return entry.backend;
  }

  /** Forgets a deleted Registry and closes its backend. */
  async release(name: string): Promise<void> {
    const cached = this.#cache.get(name);
    if (!cached) return;
    this.#cache.delete(name);
    await this.#closeQuietly(name, cached);
  }

  /** Closes every backend (on shutdown); leases are left to expire or be adopted. */
  async close(): Promise<void> {
    const entries = [...this.#cache.entries()];
    this.#cache.clear();
    await Promise.all(entries.map(([name, e]) => this.#closeQuietly(name, e)));
  }

  async #closeQuietly(name: string, entry: CacheEntry): Promise<void> {
    try {
      await (await entry.backend).close();
    } catch (err: unknown) {
      this.#o.logger.debug({ registry: name, err }, 'closing backend failed');
    }
  }

  async #secret(registryName: string, ref: { name: string; namespace?: string }): Promise<Readonly<Record<string, Buffer>>> {
    try {
      return await this.#o.readSecret(ref.namespace ?? '', ref.name);
    } catch (err: unknown) {
      throw new RegistryConfigError(`cannot read Secret ${ref.namespace ?? ''}/${ref.name} named by Registry ${registryName}: create it, and let the operator's ServiceAccount get it`, { cause: err });
    }
  }

  async #create(registry: RegistryResource): Promise<Backend> {
    const name = registry.metadata?.name ?? '';
    const spec = registry.spec;
    const dryRun = this.#o.dryRun || spec.dryRun === true;
    const logger = this.#o.logger.child({ registry: name });
    if (spec.type === 'etcd') {
      if (!spec.etcd) throw new RegistryConfigError(`Registry ${name} has type etcd but no spec.etcd`);
      let credentials: EtcdCredentials | undefined;
      const ref = spec.etcd.credentialsSecretRef;
      if (ref) {
        const data = await this.#secret(name, ref);
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
        onKeepaliveFailure: () => this.#o.observer?.keepaliveFailure?.('etcd'),
      });
      return guardBackend(await this.#adopt(backend, logger, dryRun, (ns) => backend.leaseIdFor(ns)), name, 'etcd', this.#o.observer);
    }
    if (spec.type === 'consul') {
      if (!spec.consul) throw new RegistryConfigError(`Registry ${name} has type consul but no spec.consul`);
      let token: string | undefined;
      const ref = spec.consul.tokenSecretRef;
      if (ref) {
        token = text(await this.#secret(name, ref), 'token')?.trim();
        if (!token) throw new RegistryConfigError(`Secret ${ref.namespace ?? ''}/${ref.name} named by Registry ${name} has no key "token"; put the Consul ACL token there`);
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
        callTimeoutMs: this.#o.callTimeoutMs,
        logger,
        onHeartbeatFailure: () => this.#o.observer?.keepaliveFailure?.('consul'),
      });
      return guardBackend(await this.#adopt(backend, logger, dryRun, (ns) => backend.leaseIdFor(ns)), name, 'consul', this.#o.observer);
    }
    throw new RegistryConfigError(`Registry ${name} has type ${String(spec.type)}, which this version does not support`);
  }

  /**
   * Keeps alive every lease (etcd) or heartbeat (Consul) this cluster holds in the registry before
   * the first reconcile, so that no namespace's entries expire while its ServiceInstances wait in
   * the queue; a backend that cannot even do that is closed and the error goes to the caller.
   */
  async #adopt<B extends Registry & { adoptLeases(): Promise<string[]> }>(backend: B, logger: Logger, dryRun: boolean, leaseId: (ns: string) => string | undefined): Promise<Backend> {
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

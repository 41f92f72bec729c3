/**
 * The boundary between the client and a registry. A source reads one registry namespace of one
 * registry (etcd, Consul) and follows services in it; a registrar writes this process's own entry
 * there. Everything above this boundary (watch cache, selection, `call()`) is the same whatever the
 * registry, and is unit-tested with an in-memory source.
 */
import { DiscoveryConfigError } from './errors.ts';
import type { Instance } from './instance.ts';

/** Receives what a source learns about one service. */
export interface SourceListener {
  /**
   * The complete current set of instances, after the initial read and after every change the
   * registry reports (one call per registry response, not per key). `revision` is the registry's
   * own position (etcd revision, Consul index), for logs and tests; the set is authoritative.
   * A call also says the source is in step with the registry again after a `disconnected`.
   */
  update(instances: readonly Instance[], revision: string): void;
  /**
   * The source lost the registry (a read failed, the watch broke). It retries on its own with
   * backoff and jitter; until the next `update` the last set is all there is.
   */
  disconnected(error: unknown): void;
}

/** One followed service; closing it stops the watch. */
export interface SourceWatch {
  close(): Promise<void>;
}

/** Reads one registry namespace of one registry. */
export interface DiscoverySource {
  /** `etcd`, `consul`, ...: for messages and metric labels. */
  readonly kind: string;
  /** The registry namespace every read is pinned to. */
  readonly namespace: string;
  /** Follows `service` until the watch is closed: an initial read, then changes, never polling. */
  watch(service: string, listener: SourceListener): SourceWatch;
  /** Closes the registry client if the source created it. */
  close(): Promise<void>;
}

/** An endpoint of this process, as `register()` takes it. */
export interface SelfEndpoint {
  /** The service name in the registry (DNS-1123 label, as in a ServiceInstance). */
  readonly service: string;
  /** The address consumers dial: an IP literal or a host name. */
  readonly address: string;
  readonly port: number;
  /** 0-1000; default 1. */
  readonly weight?: number;
  readonly tags?: Readonly<Record<string, string>>;
  readonly metadata?: Readonly<Record<string, string>>;
}

/** A live self-registration: kept alive until closed, gone at once when closed. */
export interface Registration {
  /** Where the entry lives (etcd key, Consul service id), for logs. */
  readonly id: string;
  /** Removes the entry now and stops keeping it alive. Idempotent. */
  close(): Promise<void>;
}

/** Writes this process's own entries into one registry namespace. */
export interface Registrar {
  register(endpoint: SelfEndpoint): Promise<Registration>;
}

/**
 * The environment variable naming the registry namespace a client reads when none is given, and
 * the namespace used when it is unset too. Reading `default` unless told otherwise means a
 * process started without configuration never reads (or registers into) prod by accident.
 */
export const NAMESPACE_ENV = 'KUBE_REGISTRAR_NAMESPACE';
export const DEFAULT_NAMESPACE = 'default';

/** The registry namespace to pin to: the option, else `$KUBE_REGISTRAR_NAMESPACE`, else `default`. */
export function resolveNamespace(namespace: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const chosen = namespace ?? env[NAMESPACE_ENV] ?? DEFAULT_NAMESPACE;
  if (chosen === '' || chosen.includes('/') || chosen.startsWith('_')) {
    throw new DiscoveryConfigError(
      `registry namespace ${JSON.stringify(chosen)} cannot be read: it is the namespace of the Registry's template ` +
        `(usually the Kubernetes namespace, e.g. prod), non-empty, without '/', not starting with '_'. Set it with the namespace option or ${NAMESPACE_ENV}.`,
    );
  }
  return chosen;
}

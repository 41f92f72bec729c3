/**
 * The registry boundary: what the controller hands to a backend and what it reads back.
 *
 * Everything above this file (plan, controller) speaks only these types; etcd, Consul and the
 * in-memory test registry sit below it.
 */

/** Who wrote an entry: the cluster and the ServiceInstance that vouch for it. */
export interface Owner {
  /** Cluster id: the UID of namespace kube-system unless overridden by flag. */
  readonly clusterId: string;
  /** Kubernetes namespace of the owning ServiceInstance. */
  readonly namespace: string;
  /** Name of the owning ServiceInstance. */
  readonly name: string;
}

/** One endpoint as the operator wants it registered (or as it was read back from a registry). */
export interface Endpoint {
  /** Service name in the registry (ServiceInstance spec.service). */
  readonly service: string;
  /** Stable, deterministic id of the instance within its service: `<address>:<port>`. */
  readonly instanceId: string;
  /** IP literal or host name. */
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  readonly tags: Readonly<Record<string, string>>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Where the endpoint came from, e.g. `pod/prod/user-7d9c` or `static/prod/user-service/0`. */
  readonly source: string;
  /**
   * Set when an active health check judged the endpoint unhealthy and the backend keeps failing
   * endpoints listed but marked (see Registry.marksUnhealthy): Consul shows it critical with this
   * output. Absent means healthy as far as the operator knows.
   */
  readonly health?: EndpointHealthMark;
}

/** An endpoint's failed health check, as written to a registry that can show it. */
export interface EndpointHealthMark {
  readonly status: 'critical';
  /** The probe's last failure, e.g. `status 503, want 200-399`; at most HEALTH_OUTPUT_MAX characters. */
  readonly output: string;
}

/** Longest probe output written to a registry (Consul service metadata values hold at most 512). */
export const HEALTH_OUTPUT_MAX = 256;

/** An endpoint placed in one registry namespace, with its owner. */
export interface RegistryEntry {
  /** Registry-side namespace: the Registry's `namespace` template applied to the k8s namespace. */
  readonly registryNamespace: string;
  /** Kubernetes namespace the entry comes from (the owner's namespace). */
  readonly k8sNamespace: string;
  readonly owner: Owner;
  readonly endpoint: Endpoint;
  /**
   * Set by a backend on an entry read back whose stored form is out of date in a way the other
   * fields cannot show: written in another value format, or detached from the lease that keeps it
   * alive (e.g. rewritten by hand without `--lease`). The plan rewrites such an entry even when
   * every field matches. Absent on desired entries.
   */
  readonly needsRewrite?: boolean;
}

/** The plan's output: plain data, applied by a backend in one batch where it can. */
export interface Changes {
  readonly create: readonly RegistryEntry[];
  /** Entries as they are now; `updateNew[i]` replaces `updateOld[i]`. */
  readonly updateOld: readonly RegistryEntry[];
  readonly updateNew: readonly RegistryEntry[];
  readonly delete: readonly RegistryEntry[];
}

/** What one reconcile of one ServiceInstance touches in one registry: a service in a namespace. */
export interface Scope {
  readonly registryNamespace: string;
  readonly service: string;
}

/**
 * A registry backend. Implementations hide their client behind a small private interface, put a
 * timeout on every call, and keep the liveness of what they wrote (etcd lease, Consul TTL check)
 * going until `close()`; `close()` never revokes, so entries survive an operator restart.
 */
export interface Registry {
  /** Every entry found under the scope, whoever owns it; entries that cannot be parsed are skipped. */
  records(scope: Scope): Promise<RegistryEntry[]>;
  /**
   * The entries of each scope, as {@link records} reads them, in one call: for backends that serve
   * scope reads from a view of the namespace, so that a bulk pass reads many scopes at the cost of
   * one call. Optional; without it callers read scope by scope.
   */
  recordsMany?(scopes: readonly Scope[]): Promise<RegistryEntry[][]>;
  /** Applies the changes; either all of a batch lands or an error is thrown and the caller retries. */
  applyChanges(changes: Changes): Promise<void>;
  /** Stops keepalives and closes connections without revoking leases or deregistering. */
  close(): Promise<void>;
  /**
   * True when the backend can list an endpoint marked as failing its health check (Endpoint.health)
   * so that consumers asking for healthy instances skip it (Consul: a critical check). Backends
   * without it are handed healthy endpoints only; a failing endpoint is deleted from them.
   */
  readonly marksUnhealthy?: boolean;
  /**
   * True when applyChanges calls that arrive together are merged into few large writes, and scope
   * reads are served from a view of the whole namespace: a first pass may then hand the backend
   * every ServiceInstance's changes at once instead of one reconcile at a time (etcd).
   */
  readonly batchesWrites?: boolean;
  /**
   * With {@link batchesWrites}: how many one-key entries fill one of the backend's writes (etcd: a
   * transaction). Handing it a multiple of this at once leaves no write partly filled.
   */
  readonly writeBatch?: number;
}

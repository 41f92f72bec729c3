/**
 * The registrar.dev/v1alpha1 API as TypeScript: the ServiceInstance and Registry custom resources
 * as the operator reads them from the apiserver.
 *
 * Hand-kept in step with crds/*.yaml rather than generated, because the CRDs carry the contract
 * (descriptions, CEL rules) and a generator would add a toolchain for two small types. The
 * `*_FIELDS` tables below are what test/unit/crds.test.ts compares against the schemas, so a field
 * added on one side only fails the tests (and, for a table left behind, the type check).
 *
 * Fields with a schema default are typed as always present: the apiserver applies defaults both on
 * write and when reading from storage, so code that reads objects never sees them missing.
 */
import type { V1ListMeta, V1ObjectMeta } from '@kubernetes/client-node';

/** API group of both custom resources. */
export const GROUP = 'registrar.dev';
/** API version of both custom resources. */
export const VERSION = 'v1alpha1';
/** `apiVersion` of both custom resources. */
export const API_VERSION = 'registrar.dev/v1alpha1';

/** Kind of the namespaced resource that publishes one service. */
export const SERVICE_INSTANCE_KIND = 'ServiceInstance';
/** Kind of a list of ServiceInstances, as returned by list calls. */
export const SERVICE_INSTANCE_LIST_KIND = 'ServiceInstanceList';
/** Resource (plural) name of ServiceInstance, as used in API paths and RBAC rules. */
export const SERVICE_INSTANCE_PLURAL = 'serviceinstances';

/** Kind of the cluster-scoped resource that describes one target registry. */
export const REGISTRY_KIND = 'Registry';
/** Kind of a list of Registries, as returned by list calls. */
export const REGISTRY_LIST_KIND = 'RegistryList';
/** Resource (plural) name of Registry, as used in API paths and RBAC rules. */
export const REGISTRY_PLURAL = 'registries';

/**
 * Finalizer the operator puts on a ServiceInstance before it writes anything for it, so that a
 * deleted ServiceInstance stays until its entries are removed from every registry.
 */
export const FINALIZER = 'registrar.dev/finalizer';

/** Placeholder for the Kubernetes namespace (Registry spec.namespace) or the registry namespace (consul templates). */
export const NAMESPACE_PLACEHOLDER = '{namespace}';
/** Placeholder for the ServiceInstance's spec.service in spec.consul.serviceName. */
export const SERVICE_PLACEHOLDER = '{service}';

/** Condition types of a ServiceInstance. */
export const ServiceInstanceConditionType = {
  /** Every ready endpoint is registered in every target registry and nothing stale is left. */
  Ready: 'Ready',
  /** The operator holds entries for this service in every target registry. */
  Registered: 'Registered',
  /** Every static endpoint passes spec.healthCheck; set only when a health check is configured. */
  EndpointsHealthy: 'EndpointsHealthy',
} as const;
/** A condition type of a ServiceInstance. */
export type ServiceInstanceConditionType = (typeof ServiceInstanceConditionType)[keyof typeof ServiceInstanceConditionType];

/** Condition types of a Registry. */
export const RegistryConditionType = {
  /** The registry is reachable and writable with the configured credentials. */
  Ready: 'Ready',
} as const;
/** A condition type of a Registry. */
export type RegistryConditionType = (typeof RegistryConditionType)[keyof typeof RegistryConditionType];

/**
 * Reasons for condition transitions, shared by both kinds. Named constants so that alerts and
 * tests can match on them; the condition's message carries the details for people.
 */
export const ConditionReason = {
  /** ServiceInstance: every ready endpoint is registered everywhere it should be. */
  Synced: 'Synced',
  /** ServiceInstance: the operator is writing the first entries or catching up after a change. */
  Progressing: 'Progressing',
  /** ServiceInstance: no endpoint is ready, so nothing is registered (not an error). */
  NoReadyEndpoints: 'NoReadyEndpoints',
  /** ServiceInstance: spec.registries names no Registry and no default Registry admits the namespace. */
  NoRegistry: 'NoRegistry',
  /** ServiceInstance: spec.registries names a Registry that does not exist. */
  RegistryNotFound: 'RegistryNotFound',
  /** ServiceInstance: a target Registry's namespaceSelector does not admit this namespace; nothing is written there. */
  NamespaceNotAdmitted: 'NamespaceNotAdmitted',
  /** ServiceInstance: a write to a registry failed; retried with backoff. */
  RegistrationFailed: 'RegistrationFailed',
  /** ServiceInstance: an entry it would write is owned by someone else (another cluster or ServiceInstance); left alone. */
  OwnershipConflict: 'OwnershipConflict',
  /** ServiceInstance: some endpoints cannot be registered (e.g. a pod lacks the named port); the rest are. */
  InvalidEndpoints: 'InvalidEndpoints',
  /** ServiceInstance: the finalizer is removing the entries before the object goes. */
  Deregistering: 'Deregistering',
  /** ServiceInstance (EndpointsHealthy): every probed endpoint passes its health check. */
  AllHealthy: 'AllHealthy',
  /** ServiceInstance (EndpointsHealthy): some endpoints fail their health check and are withdrawn or marked critical. */
  SomeUnhealthy: 'SomeUnhealthy',
  /** ServiceInstance (EndpointsHealthy): too few endpoints are healthy, so panic mode keeps every endpoint registered. */
  PanicThreshold: 'PanicThreshold',
  /** ServiceInstance (EndpointsHealthy): endpoints have not been probed enough to be judged yet. */
  AwaitingProbes: 'AwaitingProbes',
  /** Both: the registry is in dry-run mode, so changes are reported but not written. */
  DryRun: 'DryRun',
  /** Both: the spec passed admission but cannot be used (e.g. a Registry whose block does not match its type). */
  InvalidSpec: 'InvalidSpec',
  /** Registry: connected and authenticated. */
  Connected: 'Connected',
  /** Registry: cannot be reached, or its circuit breaker is open after repeated failures. */
  Unreachable: 'Unreachable',
  /** Registry (and the ServiceInstances targeting it): the referenced Secret is missing or lacks a key. */
  CredentialsNotFound: 'CredentialsNotFound',
  /** Registry: the registry refused the credentials or token. */
  AuthenticationFailed: 'AuthenticationFailed',
} as const;
/** A reason for a condition transition. */
export type ConditionReason = (typeof ConditionReason)[keyof typeof ConditionReason];

/** Statuses of a condition, as in metav1.Condition. */
export const CONDITION_STATUSES = ['True', 'False', 'Unknown'] as const;
/** Status of a condition. */
export type ConditionStatus = (typeof CONDITION_STATUSES)[number];

/**
 * A condition shaped like metav1.Condition. Times are RFC 3339 strings because custom objects
 * arrive as plain JSON (client-node's V1Condition types them as Date, which they are not here).
 */
export interface Condition {
  /** Condition type in CamelCase, e.g. Ready. */
  readonly type: string;
  readonly status: ConditionStatus;
  /** metadata.generation the condition was computed from. */
  readonly observedGeneration?: number;
  /** RFC 3339 time of the last change of status. */
  readonly lastTransitionTime: string;
  /** CamelCase reason; one of {@link ConditionReason}. */
  readonly reason: string;
  /** What is wrong and what to do; may be empty. */
  readonly message: string;
}

/** Operators of a label selector requirement. */
export const LABEL_SELECTOR_OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;
/** Operator of a label selector requirement. */
export type LabelSelectorOperator = (typeof LABEL_SELECTOR_OPERATORS)[number];

/** One requirement of a label selector, as in metav1.LabelSelectorRequirement. */
export interface LabelSelectorRequirement {
  readonly key: string;
  readonly operator: LabelSelectorOperator;
  /** Non-empty for In and NotIn, absent or empty for Exists and DoesNotExist. */
  readonly values?: readonly string[];
}

/** A label selector, as in metav1.LabelSelector; all of its terms must match. */
export interface LabelSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly matchExpressions?: readonly LabelSelectorRequirement[];
}

/** Reference to a Secret in a given namespace (Registry is cluster-scoped, so the namespace is explicit). */
export interface SecretReference {
  readonly name: string;
  readonly namespace: string;
}

/** A static endpoint of a ServiceInstance (a VM, another cluster). */
export interface StaticEndpoint {
  /** IPv4 or IPv6 address, or a lowercase DNS-1123 host name. */
  readonly address: string;
  /** Falls back to spec.port, which must then be a number. */
  readonly port?: number;
  /** Falls back to spec.weight. */
  readonly weight?: number;
  /** Merged over spec.tags; these win on the same key. */
  readonly tags?: Readonly<Record<string, string>>;
}

/** URL schemes of an HTTP health check. */
export const HTTP_HEALTH_CHECK_SCHEMES = ['http', 'https'] as const;
/** URL scheme of an HTTP health check. */
export type HttpHealthCheckScheme = (typeof HTTP_HEALTH_CHECK_SCHEMES)[number];

/** An HTTP(S) GET against the endpoint's own address (spec.healthCheck.http). */
export interface HttpHealthCheck {
  /** Request path, starting with `/`, e.g. `/healthz`; may carry a query string. */
  readonly path: string;
  /** Port to probe, 1-65535; absent means the endpoint's own port. */
  readonly port?: number;
  /** Defaulted to http. */
  readonly scheme: HttpHealthCheckScheme;
  /** With https only: accept any server certificate (self-signed, wrong name). Absent means false. */
  readonly insecureSkipVerify?: boolean;
  /** Extra request headers (HTTP token names, at most 16), e.g. `{ 'X-Probe': '1' }`. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Status codes that count as healthy: codes (100-599, as numbers or strings) or ascending
   * `"200-399"`-style ranges. Absent or empty means 200-399. Redirects are never followed.
   */
  readonly expectedStatuses?: readonly (number | string)[];
  /**
   * Business check: dotted JSON path in the response body → required value, compared as a string,
   * e.g. `{ db: 'ok', 'deps.redis': 'ok' }`. When set, the body must be JSON with every field equal.
   */
  readonly expectedJSON?: Readonly<Record<string, string>>;
}

/** A TCP connect to the endpoint's own address: healthy when the connection is accepted (spec.healthCheck.tcp). */
export interface TcpHealthCheck {
  /** Port to connect to, 1-65535; absent means the endpoint's own port. */
  readonly port?: number;
}

/** A call to the standard `grpc.health.v1.Health/Check` at the endpoint's own address, over plaintext (spec.healthCheck.grpc). */
export interface GrpcHealthCheck {
  /** Port to call, 1-65535; absent means the endpoint's own port. */
  readonly port?: number;
  /** Service name sent in HealthCheckRequest; defaulted to `""`, the server's overall health. */
  readonly service: string;
}

/**
 * Active health checks of static endpoints (spec.healthCheck; never with spec.selector). Exactly
 * one of `http`, `tcp` and `grpc` is set. The timing fields mean what they mean in Kubernetes
 * probes (`intervalSeconds` is a probe's `periodSeconds`). src/health/types.ts applies the same
 * defaults again for callers that build a HealthCheck by hand.
 */
export interface HealthCheck {
  readonly http?: HttpHealthCheck;
  readonly tcp?: TcpHealthCheck;
  readonly grpc?: GrpcHealthCheck;
  /** Seconds between two probes of one endpoint, 1-3600; defaulted to 10. */
  readonly intervalSeconds: number;
  /** Seconds after which a probe counts as failed, at least 1 and at most intervalSeconds; defaulted to 1. */
  readonly timeoutSeconds: number;
  /** Consecutive failures that take an endpoint out of rotation, 1-100; defaulted to 3. */
  readonly failureThreshold: number;
  /** Consecutive successes that put an endpoint (back) into rotation, 1-100; defaulted to 1. */
  readonly successThreshold: number;
  /**
   * Below this percentage of healthy endpoints among those with a verdict, every endpoint stays
   * registered (fail open); 0-100, 0 disables panic mode; defaulted to 50.
   */
  readonly panicThresholdPercent: number;
}

/** What a ServiceInstance publishes. Exactly one of `selector` and `endpoints` is set. */
export interface ServiceInstanceSpec {
  /** Name in the registries: a DNS-1123 label. */
  readonly service: string;
  /** Registry names; absent means every default Registry that admits the namespace. */
  readonly registries?: readonly string[];
  /** Mirror the Ready pods that match, in the ServiceInstance's namespace. */
  readonly selector?: LabelSelector;
  /** Static endpoints, registered as given. */
  readonly endpoints?: readonly StaticEndpoint[];
  /** Active health checks of the static endpoints; only with `endpoints`. */
  readonly healthCheck?: HealthCheck;
  /** Container port number or name (selector), or the default port of static endpoints (a number). */
  readonly port?: number | string;
  /** Copied onto every entry. */
  readonly tags?: Readonly<Record<string, string>>;
  /** Default weight of each endpoint, 0-1000; defaulted to 1. */
  readonly weight: number;
  /** Free-form, stored with every entry. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** Endpoint counts of a ServiceInstance, over all its target registries. */
export interface EndpointCounts {
  /** Endpoints found: selected pods or static endpoints. */
  readonly total: number;
  /** Endpoints that are ready and so should be registered. */
  readonly ready: number;
  /** Entries held, summed over the target registries. */
  readonly registered: number;
}

/**
 * What the operator holds for a ServiceInstance in one scope of one target registry. Keyed by
 * registry, namespace and service together: after spec.service or the Registry's namespace template
 * changes, the old scope stays listed until its entries are removed.
 */
export interface Registration {
  /** Name of the Registry object. */
  readonly registry: string;
  /** Registry namespace written to; empty when it could not be worked out (unusable template). */
  readonly namespace: string;
  /** spec.service the entries were written under, so a renamed service's old entries can be found. */
  readonly service: string;
  readonly entries: number;
  /** RFC 3339 time of the last successful sync. */
  readonly lastSyncTime?: string;
  /** Last error or note; absent or empty when all is well. */
  readonly message?: string;
}

/** A static endpoint that fails its health check (status.health.unhealthyEndpoints[]). */
export interface UnhealthyEndpoint {
  readonly address: string;
  readonly port: number;
  /** Output of the latest failed probe, e.g. `status 503, want 200-399`; at most 256 characters. */
  readonly lastFailure: string;
  /** RFC 3339 time since when the endpoint has been unhealthy. */
  readonly since: string;
}

/** Health of the static endpoints under spec.healthCheck (status.health). */
export interface EndpointHealthSummary {
  /** Endpoints whose verdict is healthy. */
  readonly healthy: number;
  /** Endpoints whose verdict is unhealthy. */
  readonly unhealthy: number;
  /** Endpoints without a verdict yet (not probed often enough). */
  readonly unknown: number;
  /** True while panic mode keeps every endpoint registered. */
  readonly panic: boolean;
  /** Some of the unhealthy endpoints and why, at most 10. */
  readonly unhealthyEndpoints?: readonly UnhealthyEndpoint[];
}

/** Status of a ServiceInstance, written by the operator only. */
export interface ServiceInstanceStatus {
  readonly observedGeneration?: number;
  readonly conditions?: readonly Condition[];
  /** `${ready}/${total}` for the READY printer column, which cannot compute it from `endpoints`. */
  readonly readyRatio?: string;
  readonly endpoints?: EndpointCounts;
  readonly registrations?: readonly Registration[];
  /** Present only when spec.healthCheck is set. */
  readonly health?: EndpointHealthSummary;
}

/** A ServiceInstance as read from the apiserver. */
export interface ServiceInstance {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof SERVICE_INSTANCE_KIND;
  readonly metadata: V1ObjectMeta;
  readonly spec: ServiceInstanceSpec;
  readonly status?: ServiceInstanceStatus;
}

/** A list of ServiceInstances as returned by a list call. */
export interface ServiceInstanceList {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof SERVICE_INSTANCE_LIST_KIND;
  readonly metadata: V1ListMeta;
  readonly items: readonly ServiceInstance[];
}

/** Kinds of target registry. */
export const REGISTRY_TYPES = ['etcd', 'consul', 'zookeeper'] as const;
/** Kind of a target registry. */
export type RegistryType = (typeof REGISTRY_TYPES)[number];

/**
 * Write policies: sync also deletes the operator's own entries that are no longer wanted;
 * upsert-only never deletes what it did not create in this run.
 */
export const REGISTRY_POLICIES = ['sync', 'upsert-only'] as const;
/** Write policy of a Registry. */
export type RegistryPolicy = (typeof REGISTRY_POLICIES)[number];

/** Value formats of etcd entries (DESIGN.md §2). */
export const ETCD_VALUE_FORMATS = ['json', 'grpc', 'hostport'] as const;
/** Value format of etcd entries. */
export type EtcdValueFormat = (typeof ETCD_VALUE_FORMATS)[number];

/** How to reach etcd and lay out its keys. */
export interface EtcdRegistrySpec {
  /** Client URLs, http(s)://host:port. */
  readonly endpoints: readonly string[];
  /** Key prefix, e.g. /services; defaulted. */
  readonly prefix: string;
  /** Value format; defaulted to json. */
  readonly format: EtcdValueFormat;
  /** Secret with username/password, ca.crt, tls.crt/tls.key, all optional. */
  readonly credentialsSecretRef?: SecretReference;
}

/** Value formats of ZooKeeper entries (README, "ZooKeeper"). */
export const ZOOKEEPER_VALUE_FORMATS = ['curator', 'hostport', 'json'] as const;
/** Value format of ZooKeeper entries. */
export type ZooKeeperValueFormat = (typeof ZOOKEEPER_VALUE_FORMATS)[number];

/** How to reach ZooKeeper and lay out its nodes. */
export interface ZooKeeperRegistrySpec {
  /** Connect string: host:port pairs separated by ',', optionally followed by a chroot path. */
  readonly servers: string;
  /** Base path under which entries are `<basePath>/<namespace>/<service>/<instance>`; defaulted to /services. */
  readonly basePath: string;
  /** Node data format; defaulted to curator. */
  readonly format: ZooKeeperValueFormat;
  /** Session timeout asked of the server, 2-600 s; absent means spec.leaseTTLSeconds. */
  readonly sessionTimeoutSeconds?: number;
  /** Secret whose keys `username` and `password` are the digest credentials. */
  readonly credentialsSecretRef?: SecretReference;
}

/** How to reach Consul and name the services there. */
export interface ConsulRegistrySpec {
  /** Agent URL, http(s)://host:port. */
  readonly address: string;
  /** Empty or absent means the agent's datacenter. */
  readonly datacenter?: string;
  /** Consul Enterprise namespace template over {namespace} (the registry namespace); '' = default namespace. */
  readonly namespace: string;
  /** Service-name template over {service} and {namespace}; defaulted to {service}. */
  readonly serviceName: string;
  /** Secret whose key `token` holds the ACL token. */
  readonly tokenSecretRef?: SecretReference;
}

/** One target registry and which Kubernetes namespaces may write to it. */
export interface RegistrySpec {
  readonly type: RegistryType;
  /** Used by ServiceInstances that name no registry; defaulted to false. */
  readonly default: boolean;
  /** Kubernetes namespaces allowed to write here; the empty selector admits every namespace. */
  readonly namespaceSelector: LabelSelector;
  /** Registry namespace template over {namespace} (the Kubernetes namespace); defaulted to {namespace}. */
  readonly namespace: string;
  /** Lease TTL in seconds, 5-3600; defaulted to 30. */
  readonly leaseTTLSeconds: number;
  /** Defaulted to sync. */
  readonly policy: RegistryPolicy;
  /** Report but do not write; defaulted to false. */
  readonly dryRun: boolean;
  /** Set exactly when type is etcd. */
  readonly etcd?: EtcdRegistrySpec;
  /** Set exactly when type is consul. */
  readonly consul?: ConsulRegistrySpec;
  /** Set exactly when type is zookeeper. */
  readonly zookeeper?: ZooKeeperRegistrySpec;
}

/** Status of a Registry, written by the operator only. */
export interface RegistryStatus {
  readonly observedGeneration?: number;
  readonly conditions?: readonly Condition[];
  /** Entries the operator holds in this registry. */
  readonly entries?: number;
  /** The lease of each registry namespace the operator writes, sorted by namespace. */
  readonly leases?: readonly RegistryLease[];
}

/**
 * The lease one registry namespace's entries hang on (status.leases[]). It belongs to the
 * namespace, not to each ServiceInstance: a new lease after an outage is one Registry status
 * write, not one write per ServiceInstance.
 */
export interface RegistryLease {
  readonly namespace: string;
  /** etcd lease id in hex, the Consul TTL check id, or the ZooKeeper session id in hex. */
  readonly leaseID: string;
}

/** A Registry as read from the apiserver. */
export interface Registry {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof REGISTRY_KIND;
  readonly metadata: V1ObjectMeta;
  readonly spec: RegistrySpec;
  readonly status?: RegistryStatus;
}

/** A list of Registries as returned by a list call. */
export interface RegistryList {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof REGISTRY_LIST_KIND;
  readonly metadata: V1ListMeta;
  readonly items: readonly Registry[];
}

/**
 * How the apiserver guarantees a field: listed in the schema's `required`, filled in by a schema
 * `default`, or neither.
 */
export type FieldPresence = 'required' | 'defaulted' | 'optional';

/**
 * One entry per field of T saying how it is guaranteed. Used with `satisfies`, it fails the type
 * check when a field is missing or extra, or when a property that TypeScript treats as always
 * present is marked optional (and the other way round), so the interface and its table cannot
 * drift apart; the unit test then holds the table against the CRD schema.
 */
export type FieldTable<T> = {
  readonly [K in keyof T]-?: object extends Pick<T, K> ? 'optional' : 'required' | 'defaulted';
};

/** Presence of each field of ServiceInstance spec; compared with the CRD by the unit test. */
export const SERVICE_INSTANCE_SPEC_FIELDS = {
  service: 'required',
  registries: 'optional',
  selector: 'optional',
  endpoints: 'optional',
  healthCheck: 'optional',
  port: 'optional',
  tags: 'optional',
  weight: 'defaulted',
  metadata: 'optional',
} as const satisfies FieldTable<ServiceInstanceSpec>;

/** Presence of each field of a static endpoint (spec.endpoints[]). */
export const STATIC_ENDPOINT_FIELDS = {
  address: 'required',
  port: 'optional',
  weight: 'optional',
  tags: 'optional',
} as const satisfies FieldTable<StaticEndpoint>;

/** Presence of each field of spec.healthCheck. */
export const HEALTH_CHECK_FIELDS = {
  http: 'optional',
  tcp: 'optional',
  grpc: 'optional',
  intervalSeconds: 'defaulted',
  timeoutSeconds: 'defaulted',
  failureThreshold: 'defaulted',
  successThreshold: 'defaulted',
  panicThresholdPercent: 'defaulted',
} as const satisfies FieldTable<HealthCheck>;

/** Presence of each field of spec.healthCheck.http. */
export const HTTP_HEALTH_CHECK_FIELDS = {
  path: 'required',
  port: 'optional',
  scheme: 'defaulted',
  insecureSkipVerify: 'optional',
  headers: 'optional',
  expectedStatuses: 'optional',
  expectedJSON: 'optional',
} as const satisfies FieldTable<HttpHealthCheck>;

/** Presence of each field of spec.healthCheck.tcp. */
export const TCP_HEALTH_CHECK_FIELDS = {
  port: 'optional',
} as const satisfies FieldTable<TcpHealthCheck>;

/** Presence of each field of spec.healthCheck.grpc. */
export const GRPC_HEALTH_CHECK_FIELDS = {
  port: 'optional',
  service: 'defaulted',
} as const satisfies FieldTable<GrpcHealthCheck>;

/** Presence of each field of a label selector (spec.selector, spec.namespaceSelector). */
export const LABEL_SELECTOR_FIELDS = {
  matchLabels: 'optional',
  matchExpressions: 'optional',
} as const satisfies FieldTable<LabelSelector>;

/** Presence of each field of a label selector requirement. */
export const LABEL_SELECTOR_REQUIREMENT_FIELDS = {
  key: 'required',
  operator: 'required',
  values: 'optional',
} as const satisfies FieldTable<LabelSelectorRequirement>;

/** Presence of each field of ServiceInstance status. */
export const SERVICE_INSTANCE_STATUS_FIELDS = {
  observedGeneration: 'optional',
  conditions: 'optional',
  readyRatio: 'optional',
  endpoints: 'optional',
  registrations: 'optional',
  health: 'optional',
} as const satisfies FieldTable<ServiceInstanceStatus>;

/** Presence of each field of status.health. */
export const ENDPOINT_HEALTH_SUMMARY_FIELDS = {
  healthy: 'required',
  unhealthy: 'required',
  unknown: 'required',
  panic: 'required',
  unhealthyEndpoints: 'optional',
} as const satisfies FieldTable<EndpointHealthSummary>;

/** Presence of each field of status.health.unhealthyEndpoints[]. */
export const UNHEALTHY_ENDPOINT_FIELDS = {
  address: 'required',
  port: 'required',
  lastFailure: 'required',
  since: 'required',
} as const satisfies FieldTable<UnhealthyEndpoint>;

/** Presence of each field of status.endpoints. */
export const ENDPOINT_COUNTS_FIELDS = {
  total: 'required',
  ready: 'required',
  registered: 'required',
} as const satisfies FieldTable<EndpointCounts>;

/** Presence of each field of status.registrations[]. */
export const REGISTRATION_FIELDS = {
  registry: 'required',
  namespace: 'required',
  service: 'required',
  entries: 'required',
  lastSyncTime: 'optional',
  message: 'optional',
} as const satisfies FieldTable<Registration>;

/** Presence of each field of a condition (both kinds). */
export const CONDITION_FIELDS = {
  type: 'required',
  status: 'required',
  observedGeneration: 'optional',
  lastTransitionTime: 'required',
  reason: 'required',
  message: 'required',
} as const satisfies FieldTable<Condition>;

/** Presence of each field of Registry spec. */
export const REGISTRY_SPEC_FIELDS = {
  type: 'required',
  default: 'defaulted',
  namespaceSelector: 'required',
  namespace: 'defaulted',
  leaseTTLSeconds: 'defaulted',
  policy: 'defaulted',
  dryRun: 'defaulted',
  etcd: 'optional',
  consul: 'optional',
  zookeeper: 'optional',
} as const satisfies FieldTable<RegistrySpec>;

/** Presence of each field of Registry spec.etcd. */
export const ETCD_REGISTRY_FIELDS = {
  endpoints: 'required',
  prefix: 'defaulted',
  format: 'defaulted',
  credentialsSecretRef: 'optional',
} as const satisfies FieldTable<EtcdRegistrySpec>;

/** Presence of each field of Registry spec.zookeeper. */
export const ZOOKEEPER_REGISTRY_FIELDS = {
  servers: 'required',
  basePath: 'defaulted',
  format: 'defaulted',
  sessionTimeoutSeconds: 'optional',
  credentialsSecretRef: 'optional',
} as const satisfies FieldTable<ZooKeeperRegistrySpec>;

/** Presence of each field of Registry spec.consul. */
export const CONSUL_REGISTRY_FIELDS = {
  address: 'required',
  datacenter: 'optional',
  namespace: 'defaulted',
  serviceName: 'defaulted',
  tokenSecretRef: 'optional',
} as const satisfies FieldTable<ConsulRegistrySpec>;

/** Presence of each field of a Secret reference. */
export const SECRET_REFERENCE_FIELDS = {
  name: 'required',
  namespace: 'required',
} as const satisfies FieldTable<SecretReference>;

/** Presence of each field of Registry status. */
export const REGISTRY_STATUS_FIELDS = {
  observedGeneration: 'optional',
  conditions: 'optional',
  entries: 'optional',
  leases: 'optional',
} as const satisfies FieldTable<RegistryStatus>;

/** Presence of each field of Registry status.leases[]. */
export const REGISTRY_LEASE_FIELDS = {
  namespace: 'required',
  leaseID: 'required',
} as const satisfies FieldTable<RegistryLease>;

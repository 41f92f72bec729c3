/**
 * Where things live in etcd.
 *
 * Entries: `<prefix>/<registryNamespace>/<service>/<instanceId>`. Bookkeeping lives under
 * `<prefix>/_kube-registrar/`: registry namespaces come from DNS-1123 Kubernetes namespaces through
 * a template, and a leading '_' is refused here, so the two can never collide.
 *
 * The prefix may start with '/' (`/services`) or not (`grpc`); every key, the owner index and the
 * lease ids alike, is built from it the same way. Without the '/' is what Go gRPC clients need:
 * etcd's naming resolver drops the leading '/' of the dial target's path, so with a prefix `grpc`
 * the target `etcd:///grpc/<ns>/<service>` watches exactly the keys written here, while a prefix
 * `/grpc` can only be reached as `etcd:////grpc/<ns>/<service>`.
 */

/** Reserved first segment under the prefix for kube-registrar's own keys. */
export const RESERVED_SEGMENT = '_kube-registrar';

/** A key segment that would not stay a single segment, or would reach into the reserved area. */
export class EtcdKeyError extends Error {
  override readonly name = 'EtcdKeyError';
}

function checkSegment(what: string, value: string): string {
  if (value === '' || value.includes('/') || value === '.' || value === '..') {
    throw new EtcdKeyError(
      `${what} ${JSON.stringify(value)} cannot be used in an etcd key: it must be non-empty, not '.' or '..', and contain no '/'`,
    );
  }
  return value;
}

function checkNamespace(registryNamespace: string): string {
  checkSegment('registry namespace', registryNamespace);
  if (registryNamespace.startsWith('_')) {
    throw new EtcdKeyError(
      `registry namespace ${JSON.stringify(registryNamespace)} starts with '_', which is reserved for kube-registrar's own keys ` +
        `under ${RESERVED_SEGMENT}/; change the Registry's namespace template so it does not start with '_'`,
    );
  }
  return registryNamespace;
}

/** Builds every key the etcd backend reads or writes, from one normalised prefix. */
export class EtcdKeyLayout {
  /** The prefix without trailing slashes; '' means the root of the keyspace. */
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix.replace(/\/+$/, '');
  }

  /** `<prefix>/<ns>/` */
  namespacePrefix(registryNamespace: string): string {
    return `${this.prefix}/${checkNamespace(registryNamespace)}/`;
  }

  /** `<prefix>/<ns>/<service>/`: the keys a gRPC client dialling {@link grpcTarget} watches. */
  servicePrefix(registryNamespace: string, service: string): string {
    return `${this.namespacePrefix(registryNamespace)}${checkSegment('service', service)}/`;
  }

  /**
   * The target a Go gRPC client dials through etcd's naming resolver to reach a service:
   * `etcd:///<prefix>/<ns>/<service>` for a prefix without a leading '/'. The resolver drops the
   * path's leading '/', so a prefix that starts with '/' needs a fourth slash.
   */
  grpcTarget(registryNamespace: string, service: string): string {
    return `etcd:///${this.servicePrefix(registryNamespace, service).slice(0, -1)}`;
  }

  /** `<prefix>/<ns>/<service>/<instanceId>` */
  entry(registryNamespace: string, service: string, instanceId: string): string {
    return `${this.servicePrefix(registryNamespace, service)}${checkSegment('instance id', instanceId)}`;
  }

  /** `<prefix>/_kube-registrar/owners/<ns>/`: owner index of the grpc and hostport formats. */
  ownerIndexNamespacePrefix(registryNamespace: string): string {
    return `${this.prefix}/${RESERVED_SEGMENT}/owners/${checkNamespace(registryNamespace)}/`;
  }

  /** `<prefix>/_kube-registrar/owners/<ns>/<service>/` */
  ownerIndexServicePrefix(registryNamespace: string, service: string): string {
    return `${this.ownerIndexNamespacePrefix(registryNamespace)}${checkSegment('service', service)}/`;
  }

  /** `<prefix>/_kube-registrar/owners/<ns>/<service>/<instanceId>` */
  ownerIndex(registryNamespace: string, service: string, instanceId: string): string {
    return `${this.ownerIndexServicePrefix(registryNamespace, service)}${checkSegment('instance id', instanceId)}`;
  }

  /**
   * `<prefix>/_kube-registrar/leases/<clusterId>/<ns>`: the id of the lease every key of this
   * cluster in this namespace hangs on. Stored without a lease so a successor can find and adopt it.
   */
  leaseId(clusterId: string, registryNamespace: string): string {
    return `${this.leaseIdPrefix(clusterId)}${checkNamespace(registryNamespace)}`;
  }

  /** `<prefix>/_kube-registrar/leases/<clusterId>/`: every lease id key of one cluster. */
  leaseIdPrefix(clusterId: string): string {
    return `${this.prefix}/${RESERVED_SEGMENT}/leases/${checkSegment('cluster id', clusterId)}/`;
  }

  /** The last segment of `key` if it sits directly under `parent` (which ends in '/'), else undefined. */
  static childName(parent: string, key: string): string | undefined {
    if (!key.startsWith(parent)) return undefined;
    const rest = key.slice(parent.length);
    return rest === '' || rest.includes('/') ? undefined : rest;
  }
}

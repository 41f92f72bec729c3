/**
 * Where the operator's entries live in ZooKeeper, read from the consumer side. The layout is the
 * operator's (DESIGN.md §2): entries at `<basePath>/<namespace>/<service>/<instanceId>`, and for the
 * `hostport` format the record in an owner index node at
 * `<basePath>/_kube-registrar/owners/<namespace>/<service>/<instanceId>`.
 */
import { DiscoveryConfigError } from '../errors.ts';
import { RESERVED_SEGMENT } from '../etcd/keys.ts';

/** The base path of the operator's ZooKeeper Registry by default. */
export const DEFAULT_BASE_PATH = '/services';

/** The nodes of one service in one registry namespace. */
export interface ServicePaths {
  /** `<base>/<ns>/<service>`: one child per instance. */
  readonly service: string;
  /** `<base>/_kube-registrar/owners/<ns>/<service>`: the record of each hostport instance. */
  readonly ownerIndex: string;
}

// Characters ZooKeeper refuses in a path (PathUtils.validatePath).
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]/u;

function checkSegment(what: string, value: string, advice: string): string {
  if (value === '' || value.includes('/') || value === '.' || value === '..' || FORBIDDEN.test(value)) {
    throw new DiscoveryConfigError(
      `${what} ${JSON.stringify(value)} cannot be read from ZooKeeper: it must be non-empty, not '.' or '..', and contain no '/' or control characters (${advice})`,
    );
  }
  return value;
}

/** The base path without trailing '/' ('' for the root), as the operator normalises it. */
export function normaliseBasePath(basePath: string): string {
  if (!basePath.startsWith('/')) {
    throw new DiscoveryConfigError(
      `ZooKeeper basePath ${JSON.stringify(basePath)} must start with '/': use the Registry's basePath, e.g. /services`,
    );
  }
  const trimmed = basePath.replace(/\/+$/, '');
  for (const segment of trimmed.split('/').slice(1)) checkSegment('basePath segment', segment, "use the Registry's basePath");
  return trimmed;
}

/** The nodes of `service` in registry namespace `namespace` under a normalised base path. */
export function servicePaths(basePath: string, namespace: string, service: string): ServicePaths {
  checkSegment('service name', service, 'use the service name of the ServiceInstance, e.g. user-service');
  return {
    service: `${basePath}/${namespace}/${service}`,
    ownerIndex: `${basePath}/${RESERVED_SEGMENT}/owners/${namespace}/${service}`,
  };
}

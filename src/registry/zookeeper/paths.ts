/**
 * Where things live in ZooKeeper.
 *
 * Entries: `<basePath>/<registryNamespace>/<service>/<instanceId>`, so a Curator or Spring consumer
 * whose base path (root) is `<basePath>/<registryNamespace>` sees the services of one environment.
 * Bookkeeping lives under `<basePath>/_kube-registrar/`: the owner index of the `hostport` format
 * (`owners/<ns>/<service>/<instanceId>`, beside the entry because ephemeral nodes cannot have
 * children) and the session a successor adopts (`sessions/<clusterId>/<registry>`). Registry
 * namespaces starting with '_' are refused, so the two never collide.
 */
import { RESERVED_SEGMENT } from '../etcd/keys.ts';

export { RESERVED_SEGMENT };

/** A path segment ZooKeeper cannot hold, or one that would reach into the reserved area. */
export class ZooKeeperPathError extends Error {
  override readonly name = 'ZooKeeperPathError';
}

// Characters ZooKeeper refuses in a path (PathUtils.validatePath).
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]/u;

function checkSegment(what: string, value: string): string {
  if (value === '' || value.includes('/') || value === '.' || value === '..' || FORBIDDEN.test(value)) {
    throw new ZooKeeperPathError(
      `${what} ${JSON.stringify(value)} cannot be used in a ZooKeeper path: it must be non-empty, not '.' or '..', and contain no '/' or control characters`,
    );
  }
  return value;
}

function checkNamespace(registryNamespace: string): string {
  checkSegment('registry namespace', registryNamespace);
  if (registryNamespace.startsWith('_')) {
    throw new ZooKeeperPathError(
      `registry namespace ${JSON.stringify(registryNamespace)} starts with '_', which is reserved for kube-registrar's own nodes ` +
        `under ${RESERVED_SEGMENT}/; change the Registry's namespace template so it does not start with '_'`,
    );
  }
  return registryNamespace;
}

/** Normalises and checks a base path: absolute, no trailing '/', no empty, '.' or '..' segments. */
export function normaliseBasePath(basePath: string): string {
  if (!basePath.startsWith('/'))
    throw new ZooKeeperPathError(`ZooKeeper basePath ${JSON.stringify(basePath)} must start with '/', e.g. /services`);
  const trimmed = basePath.replace(/\/+$/, '');
  for (const segment of trimmed.split('/').slice(1)) checkSegment('basePath segment', segment);
  if (trimmed === '/zookeeper' || trimmed.startsWith('/zookeeper/'))
    throw new ZooKeeperPathError(`ZooKeeper basePath ${JSON.stringify(basePath)} lies under /zookeeper, which the server reserves`);
  return trimmed;
}

/** Builds every path the ZooKeeper backend reads or writes, from one normalised base path. */
export class ZooKeeperLayout {
  /** The base path without a trailing '/'; '' means the root. */
  readonly basePath: string;

  constructor(basePath: string) {
    this.basePath = normaliseBasePath(basePath);
  }

  /** `<base>` itself ('/' for the root). */
  get root(): string {
    return this.basePath === '' ? '/' : this.basePath;
  }

  /** `<base>/<ns>`: a Curator or Spring consumer's base path for one environment. */
  namespacePath(registryNamespace: string): string {
    return `${this.basePath}/${checkNamespace(registryNamespace)}`;
  }

  /** `<base>/<ns>/<service>`: the node whose children a consumer lists. */
  servicePath(registryNamespace: string, service: string): string {
    return `${this.namespacePath(registryNamespace)}/${checkSegment('service', service)}`;
  }

  /** `<base>/<ns>/<service>/<instanceId>` */
  entry(registryNamespace: string, service: string, instanceId: string): string {
    return `${this.servicePath(registryNamespace, service)}/${checkSegment('instance id', instanceId)}`;
  }

  /** `<base>/_kube-registrar` */
  get reserved(): string {
    return `${this.basePath}/${RESERVED_SEGMENT}`;
  }

  /** `<base>/_kube-registrar/owners/<ns>/<service>` */
  ownerIndexServicePath(registryNamespace: string, service: string): string {
    return `${this.reserved}/owners/${checkNamespace(registryNamespace)}/${checkSegment('service', service)}`;
  }

  /** `<base>/_kube-registrar/owners/<ns>/<service>/<instanceId>` */
  ownerIndex(registryNamespace: string, service: string, instanceId: string): string {
    return `${this.ownerIndexServicePath(registryNamespace, service)}/${checkSegment('instance id', instanceId)}`;
  }

  /**
   * `<base>/_kube-registrar/sessions/<clusterId>/<registry>`: id and password of the session this
   * cluster's entries in this Registry hang on, stored so a successor can adopt it.
   */
  sessionStore(clusterId: string, registryName: string): string {
    return `${this.reserved}/sessions/${checkSegment('cluster id', clusterId)}/${checkSegment('Registry name', registryName)}`;
  }

  /** Every ancestor of `path` below the root, outermost first (`/a/b/c` → `/a`, `/a/b`). */
  static ancestors(path: string): string[] {
    const parts = path.split('/').slice(1, -1);
    return parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`);
  }
}

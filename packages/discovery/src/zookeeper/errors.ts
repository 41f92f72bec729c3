/**
 * Errors of the ZooKeeper source. A failed read carries ZooKeeper's own error code, so the watch
 * branches on the code (a missing node is an answer, not a failure) rather than on message text.
 */
import { DiscoveryError } from '../errors.ts';

/** ZooKeeper error codes (`KeeperException.Code`) the source treats specially or names in messages. */
export const ZOOKEEPER_CODES = {
  CONNECTION_LOSS: -4,
  OPERATION_TIMEOUT: -7,
  NO_NODE: -101,
  NO_AUTH: -102,
  SESSION_EXPIRED: -112,
  AUTH_FAILED: -115,
  SESSION_MOVED: -118,
} as const;

const ADVICE: Readonly<Record<number, string>> = {
  [ZOOKEEPER_CODES.CONNECTION_LOSS]: 'the connection dropped before the server answered; the source reads again once it is back',
  [ZOOKEEPER_CODES.NO_AUTH]:
    "the node's ACL does not let these credentials read it: pass the Registry's digest credentials (user:password) as digestCredentials",
  [ZOOKEEPER_CODES.SESSION_EXPIRED]: 'the session expired while the servers were out of reach; the source opens a new one and reads again',
  [ZOOKEEPER_CODES.AUTH_FAILED]: 'the server refused the digest credentials: check digestCredentials (user:password)',
};

/** A ZooKeeper read failed with an error code of the server (or of the library, for CONNECTION_LOSS). */
export class ZooKeeperReadError extends DiscoveryError {
  override name = 'ZooKeeperReadError';
  /** ZooKeeper's error code, e.g. -101 for NO_NODE. */
  readonly code: number;
  readonly path: string | undefined;

  constructor(operation: string, path: string | undefined, code: number, options?: ErrorOptions) {
    const advice = ADVICE[code] ?? 'see the ZooKeeper server log; the source retries with backoff';
    super(`ZooKeeper ${operation}${path === undefined ? '' : ` ${path}`} failed with code ${code}: ${advice}`, options);
    this.code = code;
    this.path = path;
  }
}

/** ZooKeeper did not answer in time, or could not be reached at all. */
export class ZooKeeperUnavailableError extends DiscoveryError {
  override name = 'ZooKeeperUnavailableError';
}

/** True if `error` is a read that failed with `code`. */
export function hasCode(error: unknown, code: number): boolean {
  return error instanceof ZooKeeperReadError && error.code === code;
}

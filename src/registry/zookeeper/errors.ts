/**
 * Errors of the ZooKeeper client adapter. A failed operation carries ZooKeeper's own error code
 * (`KeeperException.Code`), so callers branch on `codeName` rather than on message text, and its
 * message says what to do about it.
 */

/**
 * Every error code a ZooKeeper 3.4–3.9 server or client can report, by name. node-zookeeper-client
 * knows only part of them (see `unknown-codes.ts`); the rest are listed so that a code it does not
 * know still gets its name here.
 */
export const ZOOKEEPER_CODES = {
  OK: 0,
  SYSTEM_ERROR: -1,
  RUNTIME_INCONSISTENCY: -2,
  DATA_INCONSISTENCY: -3,
  CONNECTION_LOSS: -4,
  MARSHALLING_ERROR: -5,
  UNIMPLEMENTED: -6,
  OPERATION_TIMEOUT: -7,
  BAD_ARGUMENTS: -8,
  UNKNOWN_SESSION: -12,
  NEW_CONFIG_NO_QUORUM: -13,
  RECONFIG_IN_PROGRESS: -14,
  API_ERROR: -100,
  NO_NODE: -101,
  NO_AUTH: -102,
  BAD_VERSION: -103,
  NO_CHILDREN_FOR_EPHEMERALS: -108,
  NODE_EXISTS: -110,
  NOT_EMPTY: -111,
  SESSION_EXPIRED: -112,
  INVALID_CALLBACK: -113,
  INVALID_ACL: -114,
  AUTH_FAILED: -115,
  SESSION_MOVED: -118,
  NOT_READONLY: -119,
  EPHEMERAL_ON_LOCAL_SESSION: -120,
  NO_WATCHER: -121,
  REQUEST_TIMEOUT: -122,
  RECONFIG_DISABLED: -123,
  SESSION_CLOSED_REQUIRE_SASL_AUTH: -124,
  QUOTA_EXCEEDED: -125,
  THROTTLED_OP: -127,
} as const;

/** A ZooKeeper error code by name. */
export type ZooKeeperCodeName = keyof typeof ZOOKEEPER_CODES;

const NAMES_BY_CODE = new Map<number, ZooKeeperCodeName>(
  Object.entries(ZOOKEEPER_CODES).map(([name, code]) => [code, name as ZooKeeperCodeName]),
);

/** The name of a ZooKeeper error code, or `UNKNOWN` for a code no known server version sends. */
export function zooKeeperCodeName(code: number): ZooKeeperCodeName | 'UNKNOWN' {
  return NAMES_BY_CODE.get(code) ?? 'UNKNOWN';
}

/** What each code means for the caller: the second half of every operation error's message. */
const ADVICE: Partial<Record<ZooKeeperCodeName, string>> = {
  CONNECTION_LOSS:
    'the connection dropped before the server answered, so the operation may or may not have been applied: read the node back before retrying',
  OPERATION_TIMEOUT: 'the server did not answer in time: check its load and retry',
  MARSHALLING_ERROR:
    'the request could not be encoded or was too large (the server limit is jute.maxbuffer, 1 MiB by default): send less data or fewer operations at once',
  BAD_ARGUMENTS: 'the server refused the arguments (e.g. an invalid create mode or path): fix the request',
  NO_NODE: 'the node (or, for a create, its parent) does not exist: create the parent first, or read again and re-plan',
  NO_AUTH:
    "this session's credentials lack the permission the node's ACL requires: check the digest credentials (user:password) and the ACL the node was created with",
  BAD_VERSION: 'the node changed since it was read (its version differs): read it again and re-plan',
  NO_CHILDREN_FOR_EPHEMERALS: 'ephemeral nodes cannot have children: keep related nodes beside the ephemeral one, not under it',
  NODE_EXISTS: 'the node already exists: read it (and its ephemeralOwner) before deciding to replace it',
  NOT_EMPTY: 'the node still has children: remove them first',
  SESSION_EXPIRED:
    'the session has expired (or, when adopting, its id or password was wrong) and its ephemeral nodes are gone: start a new session and re-create them',
  INVALID_ACL: 'the ACL is invalid (e.g. empty, or a digest id that is not user:base64(sha1)): fix the ACL',
  AUTH_FAILED: 'the server refused the credentials: check the authentication scheme and credentials',
  SESSION_MOVED:
    'another client has taken over this session on another server: stop using this client (detach it) and let the other one write',
  NOT_READONLY: 'the server is in read-only mode and cannot take writes: retry once the ensemble has a quorum',
  QUOTA_EXCEEDED: 'a hard quota on a parent path is exceeded: raise the quota or write fewer nodes',
  THROTTLED_OP: 'the server is throttling requests: retry later with backoff',
  REQUEST_TIMEOUT: 'the request timed out on the server: retry',
};

/** The base class of every error thrown by the ZooKeeper adapter. */
export class ZooKeeperError extends Error {
  override readonly name: string = 'ZooKeeperError';
}

/** The server (or the client library on its behalf) answered an operation with an error code. */
export class ZooKeeperOperationError extends ZooKeeperError {
  override readonly name: string = 'ZooKeeperOperationError';
  /** ZooKeeper's numeric error code, e.g. -101. */
  readonly code: number;
  /** ZooKeeper's name for the code, e.g. `NO_NODE`. */
  readonly codeName: ZooKeeperCodeName | 'UNKNOWN';
  /** The operation, e.g. `create`, `multi`. */
  readonly operation: string;
  /** The node the operation was about, when there is one. */
  readonly path: string | undefined;

  constructor(operation: string, path: string | undefined, code: number, options?: ErrorOptions) {
    const codeName = zooKeeperCodeName(code);
    const advice = ADVICE[codeName as ZooKeeperCodeName] ?? 'see the ZooKeeper server log';
    super(`ZooKeeper ${operation}${path === undefined ? '' : ` ${path}`} failed with ${codeName} (${code}): ${advice}`, options);
    this.code = code;
    this.codeName = codeName;
    this.operation = operation;
    this.path = path;
  }
}

/** A `multi` transaction failed as a whole; `failedIndex` is the operation that made it fail. */
export class ZooKeeperMultiError extends ZooKeeperOperationError {
  override readonly name = 'ZooKeeperMultiError';
  /** Index (in the ops given) of the operation that failed; nothing of the transaction was applied. */
  readonly failedIndex: number;

  constructor(failedIndex: number, path: string | undefined, code: number, options?: ErrorOptions) {
    super(`multi (operation ${failedIndex})`, path, code, options);
    this.failedIndex = failedIndex;
  }
}

/** No answer within the call deadline; the operation may or may not have been applied. */
export class ZooKeeperTimeoutError extends ZooKeeperError {
  override readonly name = 'ZooKeeperTimeoutError';
}

/** The session was detached or closed by this process; nothing more can be sent through it. */
export class ZooKeeperSessionEndedError extends ZooKeeperError {
  override readonly name = 'ZooKeeperSessionEndedError';
}

/** Whether `err` is an operation error with the given code, e.g. `hasZooKeeperCode(err, 'NO_NODE')`. */
export function hasZooKeeperCode(err: unknown, codeName: ZooKeeperCodeName): boolean {
  return err instanceof ZooKeeperOperationError && err.codeName === codeName;
}

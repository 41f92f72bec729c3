/**
 * The operator's ZooKeeper client: one session, promise-based calls with a deadline each, and the
 * two ways of leaving a session that a registry backend needs (end it, or leave it to a successor).
 *
 * Why node-zookeeper-client (1.1.3, pinned exactly) behind an adapter of our own:
 * - It is pure JavaScript over `net`: no native build, nothing downloaded at install.
 * - It can re-attach to a live session: its connection manager sends the session id and password
 *   it was given in every ConnectRequest, which is exactly ZooKeeper's adoption protocol. A
 *   restarted operator or a new leader adopts the session its predecessor left, so the entries
 *   (ephemeral nodes of that session) are never deleted and re-created.
 * - It has `multi` transactions and sets ACLs at create time (digest credentials per environment).
 * - Its socket can be dropped without ending the session (see `connection.ts`).
 * The native `zookeeper` package has no `multi`, creates every node world-open and always sends
 * CLOSE_SESSION when it closes, so it can do none of the above.
 *
 * The package is unmaintained since 2022, so this folder owns the fixes it needs, each tested:
 * - `unknown-codes.ts`: an error code the library does not know (SESSION_MOVED and everything
 *   newer) no longer throws inside its socket handler and kills the process.
 * - `connection.ts`: `detach()` drops the socket without CLOSE_SESSION, a fence on the reconnect
 *   loop so a detached or deposed client never reconnects and fights its successor, and a read
 *   timeout: the library never notices a server that went silent.
 * - `transaction.ts`: versions 0 in `multi` ops are kept (the builder turned them into -1, "any").
 * - `calls.ts`: a deadline on every call (the library has none).
 * - Calls made while disconnected are held until the session is connected again: the library would
 *   send them ahead of the credentials it re-sends on reconnect, so they would be refused (NO_AUTH).
 * - `internals.ts`: typings for the session id/password options and the internals patched here.
 */
import zookeeper from 'node-zookeeper-client';
import type { WriteFence } from '../fence.ts';
import { fromLibraryAcls, OPEN_ACL, parseDigestCredentials, toLibraryAcls, type ZooKeeperAcl } from './acl.ts';
import { CallDeadlines } from './calls.ts';
import { closeSession, dropConnection, dropSilentConnections, fenceConnects } from './connection.ts';
import { ZOOKEEPER_CODES, ZooKeeperError, ZooKeeperOperationError, ZooKeeperSessionEndedError, ZooKeeperTimeoutError } from './errors.ts';
import { connectionManagerOf, type ConnectionManager, type TransactionWithOps } from './internals.ts';
import { toZooKeeperStat, type ZooKeeperStat } from './stat.ts';
import {
  addOps,
  createModeFlag,
  readResults,
  type LibraryOpResult,
  type ZooKeeperCreateMode,
  type ZooKeeperOp,
  type ZooKeeperOpResult,
} from './transaction.ts';
import { installTolerantExceptionFactory } from './unknown-codes.ts';

/** What identifies a session to the server: enough for a successor to adopt it. */
export interface ZooKeeperSessionCredentials {
  /** 16 hex digits. */
  readonly sessionId: string;
  /** 32 hex digits. */
  readonly password: string;
}

/** How to open (or adopt) a session. */
export interface ZooKeeperSessionOptions {
  /** `host:port[,host:port…][/chroot]`. */
  readonly connectString: string;
  /** Requested session timeout; the server clamps it to its own bounds (see {@link ZooKeeperSession.sessionTimeoutMs}). */
  readonly sessionTimeoutMs: number;
  /** Deadline of every call. */
  readonly callTimeoutMs: number;
  /** How long {@link ZooKeeperSession.connect} waits for the first connection; default: the session timeout. */
  readonly connectTimeoutMs?: number;
  /** Re-attach to this live session instead of starting a new one. */
  readonly adopt?: ZooKeeperSessionCredentials;
  /** Digest credentials `user:password`, sent before anything else on every (re)connect. */
  readonly digestCredentials?: readonly string[];
  /**
   * Once closed, writes are refused, and the client neither connects nor reconnects: it detaches
   * instead, leaving the session to whoever now leads.
   */
  readonly fence?: WriteFence;
  /** Longest random wait before reconnecting once every server was tried; default 1000 ms. */
  readonly spinDelayMs?: number;
}

/**
 * - `connecting`: before the first connection.
 * - `connected` / `disconnected`: the connection is up / lost; the client reconnects by itself and
 *   the session survives if it does so within the session timeout.
 * - `expired`: the server ended the session (or refused the adoption); its ephemeral nodes are gone.
 * - `authFailed`: the server refused the credentials.
 * - `detached`: this process let go of the session (detach(), or the fence refused a reconnect).
 * - `closed`: this process ended the session (close()).
 */
export type ZooKeeperSessionState = 'connecting' | 'connected' | 'disconnected' | 'expired' | 'authFailed' | 'detached' | 'closed';

/** A node's data with its Stat. */
export interface ZooKeeperNode {
  readonly data: Buffer;
  readonly stat: ZooKeeperStat;
}

/** How to create a node. */
export interface ZooKeeperCreateOptions {
  /** Default `persistent`. */
  readonly mode?: ZooKeeperCreateMode;
  /** Default {@link OPEN_ACL}. */
  readonly acl?: readonly ZooKeeperAcl[];
}

const FINAL_STATES: ReadonlySet<ZooKeeperSessionState> = new Set(['expired', 'authFailed', 'detached', 'closed']);

function parseCredentials(credentials: ZooKeeperSessionCredentials): { sessionId: Buffer; sessionPassword: Buffer } {
  if (!/^[0-9a-f]{16}$/i.test(credentials.sessionId) || !/^[0-9a-f]{32}$/i.test(credentials.password)) {
    throw new ZooKeeperError(
      'a ZooKeeper session to adopt needs a sessionId of 16 hex digits and a password of 32 hex digits (as ZooKeeperSession.credentials gives them); the stored ones are malformed, so start a new session',
    );
  }
  return { sessionId: Buffer.from(credentials.sessionId, 'hex'), sessionPassword: Buffer.from(credentials.password, 'hex') };
}

/** One ZooKeeper session of this process. */
export class ZooKeeperSession {
  readonly #options: ZooKeeperSessionOptions;
  readonly #client: zookeeper.Client;
  readonly #manager: ConnectionManager;
  readonly #calls: CallDeadlines;
  readonly #listeners = new Set<(state: ZooKeeperSessionState) => void>();
  #state: ZooKeeperSessionState = 'connecting';
  #endError: Error | undefined;
  readonly #stopWatchingReads: () => void;

  private constructor(options: ZooKeeperSessionOptions) {
    this.#options = options;
    this.#calls = new CallDeadlines(options.callTimeoutMs);
    this.#client = zookeeper.createClient(options.connectString, {
      sessionTimeout: options.sessionTimeoutMs,
      spinDelay: options.spinDelayMs ?? 1000,
      // Retries are the caller's decision: a retried create after CONNECTION_LOSS may meet its own node.
      retries: 0,
      ...(options.adopt !== undefined ? parseCredentials(options.adopt) : {}),
    });
    this.#manager = connectionManagerOf(this.#client);
    this.#stopWatchingReads = dropSilentConnections(this.#manager, () => this.#client.getSessionTimeout() || options.sessionTimeoutMs);
    fenceConnects(
      this.#manager,
      () => !FINAL_STATES.has(this.#state) && options.fence?.closed !== true,
      () => {
        if (FINAL_STATES.has(this.#state)) return;
        this.#end(
          'detached',
          new ZooKeeperSessionEndedError(
            `ZooKeeper session ${this.sessionId} was left to its successor: this process no longer writes to registries, so it does not reconnect`,
          ),
        );
      },
    );
    for (const credentials of options.digestCredentials ?? []) {
      parseDigestCredentials(credentials);
      this.#client.addAuthInfo('digest', Buffer.from(credentials));
    }
    this.#client.on('connected', () => this.#setState('connected'));
    this.#client.on('disconnected', () => {
      if (this.#state === 'connected') this.#setState('disconnected');
    });
    this.#client.on('expired', () =>
      this.#end('expired', new ZooKeeperOperationError('session', undefined, ZOOKEEPER_CODES.SESSION_EXPIRED)),
    );
    this.#client.on('authenticationFailed', () =>
      this.#end('authFailed', new ZooKeeperOperationError('session', undefined, ZOOKEEPER_CODES.AUTH_FAILED)),
    );
  }

  /**
   * Opens a session, or adopts `options.adopt`, and resolves once connected. Rejects with a
   * SESSION_EXPIRED {@link ZooKeeperOperationError} when the session to adopt is gone or its
   * password is wrong (the server answers both the same way), and with
   * {@link ZooKeeperTimeoutError} when no server answered in time; the client is then stopped.
   */
  static async connect(options: ZooKeeperSessionOptions): Promise<ZooKeeperSession> {
    installTolerantExceptionFactory();
    options.fence?.check('ZooKeeper connect');
    const session = new ZooKeeperSession(options);
    try {
      await session.#firstConnection(options.connectTimeoutMs ?? options.sessionTimeoutMs);
    } catch (err) {
      await session.#stop();
      throw err;
    }
    return session;
  }

  #firstConnection(timeoutMs: number): Promise<void> {
    const adopting = this.#options.adopt?.sessionId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        unsubscribe();
        reject(
          new ZooKeeperTimeoutError(
            `ZooKeeper ${this.#options.connectString}: not connected within ${timeoutMs} ms; check that the servers are up and reachable from here`,
          ),
        );
      }, timeoutMs);
      const unsubscribe = this.onStateChange((state) => {
        if (state === 'connecting' || state === 'disconnected') return;
        clearTimeout(timer);
        unsubscribe();
        if (state === 'connected') resolve();
        else if (state === 'expired' && adopting !== undefined) {
          reject(
            new ZooKeeperOperationError(`adopt session ${adopting}`, undefined, ZOOKEEPER_CODES.SESSION_EXPIRED, {
              cause: this.#endError,
            }),
          );
        } else reject(this.#endError ?? new ZooKeeperSessionEndedError(`ZooKeeper session ended while connecting (${state})`));
      });
      this.#client.connect();
    });
  }

  /** The session id, 16 hex digits (as ZooKeeper's Stat.ephemeralOwner of this session's nodes). */
  get sessionId(): string {
    return this.#client.getSessionId().toString('hex');
  }

  /** The session password, 32 hex digits. Store it with the id so that a successor can adopt the session. */
  get sessionPassword(): string {
    return this.#client.getSessionPassword().toString('hex');
  }

  /** Id and password together, ready for {@link ZooKeeperSessionOptions.adopt}. */
  get credentials(): ZooKeeperSessionCredentials {
    return { sessionId: this.sessionId, password: this.sessionPassword };
  }

  /** The timeout the server granted, in milliseconds. */
  get sessionTimeoutMs(): number {
    return this.#client.getSessionTimeout();
  }

  get state(): ZooKeeperSessionState {
    return this.#state;
  }

  /** Calls `listener` on every state change; returns the function that stops it. The listener must not throw. */
  onStateChange(listener: (state: ZooKeeperSessionState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #setState(state: ZooKeeperSessionState): void {
    if (FINAL_STATES.has(this.#state) || this.#state === state) return;
    this.#state = state;
    for (const listener of [...this.#listeners]) listener(state);
  }

  #end(state: ZooKeeperSessionState, error: Error): void {
    if (FINAL_STATES.has(this.#state)) return;
    this.#endError = error;
    this.#stopWatchingReads();
    this.#setState(state);
    this.#calls.failAll(error);
  }

  async #stop(): Promise<void> {
    this.#end('detached', new ZooKeeperSessionEndedError(`ZooKeeper session ${this.sessionId} was detached by this process`));
    await dropConnection(this.#manager);
  }

  /**
   * Lets go of the session without ending it: drops the connection and never reconnects. The
   * session and its ephemeral nodes live on until a successor adopts it with {@link credentials}
   * or the session timeout passes. Calls in flight fail with {@link ZooKeeperSessionEndedError}.
   */
  async detach(): Promise<void> {
    await this.#stop();
  }

  /**
   * Ends the session: the server deletes its ephemeral nodes at once. When not connected (or when
   * the fence is closed, because a successor may hold the session now) it detaches instead, and
   * the session ends by expiring.
   */
  async close(): Promise<void> {
    if (FINAL_STATES.has(this.#state)) return;
    if (this.#state !== 'connected' || this.#options.fence?.closed === true) return this.detach();
    this.#end('closed', new ZooKeeperSessionEndedError(`ZooKeeper session ${this.sessionId} was closed by this process`));
    await closeSession(this.#manager, () => this.#client.close(), this.#options.callTimeoutMs);
  }

  /**
   * Runs a call with its deadline. While not connected the request is held here rather than queued
   * in the library: on reconnect the library queues the credentials (and watch re-registrations)
   * behind whatever was queued while disconnected, so those requests would reach the server
   * unauthenticated. Queued from the `connected` event, they go out behind the credentials.
   */
  #call<T>(operation: string, path: string | undefined, start: (done: (error: unknown, value?: T) => void) => void): Promise<T> {
    if (this.#endError !== undefined) return Promise.reject(this.#endError);
    return this.#calls.run<T>(operation, path, (done, settled) => {
      if (this.#state === 'connected') return start(done);
      const stop = this.onStateChange((state) => {
        if (state !== 'connected' && !FINAL_STATES.has(state)) return;
        stop();
        // A call that timed out (or failed with the session's end) while held is never sent.
        if (state === 'connected' && !settled()) start(done);
      });
    });
  }

  #write(operation: string): void {
    this.#options.fence?.check(`ZooKeeper ${operation}`);
  }

  /** Creates a node; resolves its path (with the counter for sequential modes). */
  async create(path: string, data: Buffer, options: ZooKeeperCreateOptions = {}): Promise<string> {
    this.#write('create');
    const acls = toLibraryAcls(options.acl ?? OPEN_ACL);
    const mode = createModeFlag(options.mode ?? 'persistent');
    return this.#call<string>('create', path, (done) => this.#client.create(path, data, acls, mode, done));
  }

  /** Reads a node; rejects with NO_NODE when it does not exist. */
  async getData(path: string): Promise<ZooKeeperNode> {
    return this.#call<ZooKeeperNode>('getData', path, (done) =>
      this.#client.getData(path, (error, data, stat) =>
        done(error, error ? undefined : { data: data ?? Buffer.alloc(0), stat: toZooKeeperStat(stat) }),
      ),
    );
  }

  /** The node's Stat, or undefined when it does not exist. */
  async exists(path: string): Promise<ZooKeeperStat | undefined> {
    return this.#call<ZooKeeperStat | undefined>('exists', path, (done) =>
      this.#client.exists(path, (error, stat) => done(error, error || stat === null ? undefined : toZooKeeperStat(stat))),
    );
  }

  /** The names (not paths) of a node's children, in no particular order; rejects with NO_NODE when it does not exist. */
  async getChildren(path: string): Promise<string[]> {
    return this.#call<string[]>('getChildren', path, (done) => this.#client.getChildren(path, (error, children) => done(error, children)));
  }

  /** Replaces a node's data if its version is `version` (-1: any); resolves the new Stat, rejects with BAD_VERSION otherwise. */
  async setData(path: string, data: Buffer, version: number): Promise<ZooKeeperStat> {
    this.#write('setData');
    return this.#call<ZooKeeperStat>('setData', path, (done) =>
      this.#client.setData(path, data, version, (error, stat) => done(error, error ? undefined : toZooKeeperStat(stat))),
    );
  }

  /** Deletes a node if its version is `version` (-1: any); rejects with BAD_VERSION, NO_NODE or NOT_EMPTY otherwise. */
  async remove(path: string, version: number): Promise<void> {
    this.#write('remove');
    return this.#call<void>('remove', path, (done) => this.#client.remove(path, version, (error) => done(error)));
  }

  /** A node's ACL and Stat (whose `aversion` {@link setAcl} compares). */
  async getAcl(path: string): Promise<{ readonly acl: ZooKeeperAcl[]; readonly stat: ZooKeeperStat }> {
    return this.#call('getACL', path, (done) =>
      this.#client.getACL(path, (error, acls, stat) =>
        done(error, error ? undefined : { acl: fromLibraryAcls(acls), stat: toZooKeeperStat(stat) }),
      ),
    );
  }

  /** Replaces a node's ACL if its ACL version is `aclVersion` (-1: any); rejects with BAD_VERSION otherwise. */
  async setAcl(path: string, acl: readonly ZooKeeperAcl[], aclVersion: number): Promise<ZooKeeperStat> {
    this.#write('setACL');
    const acls = toLibraryAcls(acl);
    return this.#call<ZooKeeperStat>('setACL', path, (done) =>
      this.#client.setACL(path, acls, aclVersion, (error, stat) => done(error, error ? undefined : toZooKeeperStat(stat))),
    );
  }

  /**
   * Applies all `ops` or none. Resolves one result per op; rejects with
   * {@link ZooKeeperMultiError} (whose `failedIndex` names the op) when one of them fails.
   */
  async multi(ops: readonly ZooKeeperOp[]): Promise<ZooKeeperOpResult[]> {
    this.#write('multi');
    if (ops.length === 0) return [];
    const tx = this.#client.transaction() as TransactionWithOps;
    addOps(tx, ops);
    const results = await this.#call<LibraryOpResult[] | undefined>('multi', undefined, (done) =>
      tx.commit((error: unknown, libraryResults: LibraryOpResult[] | undefined) =>
        // A failed transaction still has its results, which say which op failed.
        Array.isArray(libraryResults) ? done(null, libraryResults) : done(error, undefined),
      ),
    );
    return readResults(ops, results ?? []);
  }

  /**
   * Authenticates this session with digest `user:password` as well (ZooKeeper keeps every identity
   * a connection authenticated with), now and on every reconnect; resolves once the server has
   * taken it.
   */
  async addDigestAuth(credentials: string): Promise<void> {
    parseDigestCredentials(credentials);
    if (this.#endError !== undefined) throw this.#endError;
    this.#client.addAuthInfo('digest', Buffer.from(credentials));
    // The server handles an auth packet before reading the next request of the connection, so an
    // answer to the next request means the credentials are in effect.
    await this.exists('/');
  }
}

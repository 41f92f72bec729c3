/**
 * The one session a ZooKeeper backend's entries hang on: found, adopted, stored and replaced.
 *
 * Entries are ephemeral nodes of this session, so the session is what etcd's lease is to the etcd
 * backend. Its id and password are stored in `<basePath>/_kube-registrar/sessions/<cluster>/<registry>`
 * so that a restarted operator, a new leader, or a backend rebuilt with rotated credentials adopts
 * it: the entries stay where they are, and nothing is deleted or re-created. Leaving never ends
 * the session (see {@link SessionKeeper.close}); it expires after its timeout unless adopted.
 *
 * When the session really expires (a partition longer than the timeout), its nodes are gone: a new
 * session is started, stored, and handed to `onNewSession` so the backend re-creates its entries.
 * Ids of this backend's sessions that ended are kept, because a node of an expired session can
 * still be seen for a moment (its removal is a transaction of its own): such a node is ours to
 * replace, unlike a node of any other session.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { WriteFence } from '../fence.ts';
import type { RegistryLogger } from '../logger.ts';
import { digestAcl, OPEN_ACL, rotatedAcl, ZooKeeperPermission, type ZooKeeperAcl } from './acl.ts';
import { ZooKeeperSession, type ZooKeeperSessionCredentials, type ZooKeeperSessionState } from './client.ts';
import { hasZooKeeperCode } from './errors.ts';
import { ZooKeeperLayout } from './paths.ts';

/** Sessions held by backends of this process, by id: an adopter makes the holder let go first. */
const HELD = new Map<string, SessionKeeper>();

/** What is stored for a successor. */
interface StoredSession extends ZooKeeperSessionCredentials {
  readonly timeoutMs: number;
  readonly writtenAt: string;
}

function parseStored(data: Buffer): StoredSession | undefined {
  try {
    const value = JSON.parse(data.toString('utf8')) as Partial<StoredSession>;
    if (typeof value.sessionId === 'string' && typeof value.password === 'string') return value as StoredSession;
  } catch {
    // Unreadable: treated as absent, and overwritten with the session in use.
  }
  return undefined;
}

/** Options of {@link SessionKeeper}. */
export interface SessionKeeperOptions {
  readonly connectString: string;
  readonly sessionTimeoutMs: number;
  readonly callTimeoutMs: number;
  /** Digest credentials `user:password`. */
  readonly digest?: string;
  /**
   * The digest credentials before a password rotation: the session authenticates with both, so
   * nodes created under the old password stay writable until their ACLs name the new one.
   */
  readonly previousDigest?: string;
  readonly layout: ZooKeeperLayout;
  readonly clusterId: string;
  readonly registryName: string;
  /** Read only: a session of its own, never stored, never adopted, closed on close. */
  readonly dryRun: boolean;
  readonly fence?: WriteFence;
  readonly logger: RegistryLogger;
  readonly now: () => number;
  /** The connection dropped or the session expired (for metrics and an early credentials re-read). */
  readonly onFailure?: () => void;
  /** A new session replaced one that expired; its entries must be re-created. */
  readonly onNewSession: (session: ZooKeeperSession) => Promise<void>;
}

/** Finds, adopts, stores and replaces a backend's session. */
export class SessionKeeper {
  readonly #o: SessionKeeperOptions;
  #session: ZooKeeperSession | undefined;
  #establishing: Promise<ZooKeeperSession> | undefined;
  /** Ids of this backend's sessions that expired (see the module comment). */
  readonly #ended = new Set<string>();
  /** Since when no live, connected session has held the entries (ms since the epoch). */
  #downSince: number | undefined;
  #adopted = false;
  #closed = false;
  #recovering = false;

  constructor(options: SessionKeeperOptions) {
    this.#o = options;
  }

  /** True when the session in use was adopted from a predecessor rather than started. */
  get adopted(): boolean {
    return this.#adopted;
  }

  /** Id of the live session, or undefined when there is none. */
  get sessionId(): string | undefined {
    const s = this.#session;
    return s !== undefined && (s.state === 'connected' || s.state === 'disconnected') ? s.sessionId : undefined;
  }

  /** Whether a node's ephemeralOwner is a session of this backend that has ended. */
  endedSession(owner: string): boolean {
    return this.#ended.has(owner);
  }

  /** The server's timeout of the current session, else the one asked for. */
  get timeoutMs(): number {
    return this.#session?.sessionTimeoutMs ?? this.#o.sessionTimeoutMs;
  }

  /**
   * True when the entries cannot still be in ZooKeeper: no connected session has held them for
   * longer than the session timeout (after which the server drops them).
   */
  lapsed(): boolean {
    return this.#downSince !== undefined && this.#o.now() - this.#downSince > this.timeoutMs;
  }

  /** 1 while a session is held (whatever the number of entries), else 0. */
  keepalives(): number {
    return this.sessionId === undefined ? 0 : 1;
  }

  /** The live session, found or adopted or started on first use (single flight). */
  async current(): Promise<ZooKeeperSession> {
    const s = this.#session;
    if (s !== undefined && (s.state === 'connected' || s.state === 'disconnected')) return s;
    if (this.#closed) throw new Error('this ZooKeeper backend is closed, or handed its session over to a successor');
    this.#establishing ??= this.#establish().finally(() => {
      this.#establishing = undefined;
    });
    return this.#establishing;
  }

  async #establish(): Promise<ZooKeeperSession> {
    const o = this.#o;
    const fresh = await this.#connect(undefined);
    if (o.dryRun) return this.#take(fresh, false);
    const storePath = o.layout.sessionStore(o.clusterId, o.registryName);
    let stored: StoredSession | undefined;
    let storedVersion: number | undefined;
    try {
      const node = await fresh.getData(storePath);
      stored = parseStored(node.data);
      storedVersion = node.stat.version;
      await this.moveAcl(fresh, storePath);
    } catch (err: unknown) {
      if (!hasZooKeeperCode(err, 'NO_NODE')) {
        await fresh.close();
        if (hasZooKeeperCode(err, 'NO_AUTH'))
          throw new Error(
            `cannot read the stored ZooKeeper session at ${storePath}: it was stored under other digest credentials. After rotating the password, ` +
              'put the previous one under the key previousPassword of the credentials Secret until the operator has moved its nodes to the new one',
            { cause: err },
          );
        throw err;
      }
    }
    if (stored !== undefined && stored.sessionId !== fresh.sessionId && !this.#ended.has(stored.sessionId)) {
      // A backend of this process holding that session lets go of it first, so the two never
      // take it from each other.
      await HELD.get(stored.sessionId)?.release();
      try {
        const adopted = await this.#connect(stored);
        // The probe session has no ephemeral nodes: ending it deletes nothing.
        await fresh.close();
        o.logger.info({ sessionId: adopted.sessionId }, 'adopted the ZooKeeper session of a predecessor; its entries stay as they are');
        return this.#take(adopted, true);
      } catch (err: unknown) {
        if (!hasZooKeeperCode(err, 'SESSION_EXPIRED')) {
          await fresh.close();
          throw err;
        }
        this.#ended.add(stored.sessionId);
        o.logger.info(
          { previousSessionId: stored.sessionId },
          'the stored ZooKeeper session has expired; its entries are gone and are written again under a new session',
        );
      }
    }
    try {
      await this.#store(fresh, storePath, storedVersion);
    } catch (err: unknown) {
      await fresh.close();
      throw err;
    }
    return this.#take(fresh, false);
  }

  #connect(adopt: ZooKeeperSessionCredentials | undefined): Promise<ZooKeeperSession> {
    const o = this.#o;
    return ZooKeeperSession.connect({
      connectString: o.connectString,
      sessionTimeoutMs: o.sessionTimeoutMs,
      callTimeoutMs: o.callTimeoutMs,
      connectTimeoutMs: Math.max(o.callTimeoutMs, 2000),
      ...(adopt !== undefined ? { adopt } : {}),
      ...(o.digest !== undefined ? { digestCredentials: [o.digest, ...(o.previousDigest !== undefined ? [o.previousDigest] : [])] } : {}),
      ...(o.fence !== undefined ? { fence: o.fence } : {}),
    });
  }

  /** Writes the session's id and password where a successor looks for them. */
  async #store(session: ZooKeeperSession, path: string, version: number | undefined): Promise<void> {
    const data = Buffer.from(
      JSON.stringify({ ...session.credentials, timeoutMs: session.sessionTimeoutMs, writtenAt: new Date(this.#o.now()).toISOString() }),
    );
    if (version !== undefined) {
      await session.setData(path, data, -1);
      return;
    }
    await ensurePath(session, ZooKeeperLayout.ancestors(path), (p) => this.aclFor(p));
    try {
      // Only this identity may read it: the password lets anyone take the session over.
      await session.create(path, data, { acl: this.#o.digest !== undefined ? [digestAcl(this.#o.digest)] : OPEN_ACL });
    } catch (err: unknown) {
      if (!hasZooKeeperCode(err, 'NODE_EXISTS')) throw err;
      await session.setData(path, data, -1);
    }
  }

  #take(session: ZooKeeperSession, adopted: boolean): ZooKeeperSession {
    this.#session = session;
    this.#adopted = adopted;
    this.#downSince = undefined;
    HELD.set(session.sessionId, this);
    session.onStateChange((state) => this.#onState(session, state));
    if (this.#closed) void this.release();
    return session;
  }

  #onState(session: ZooKeeperSession, state: ZooKeeperSessionState): void {
    if (session !== this.#session) return;
    if (state === 'connected') {
      this.#downSince = undefined;
      return;
    }
    this.#downSince ??= this.#o.now();
    if (state === 'disconnected' || state === 'authFailed') this.#o.onFailure?.();
    if (state !== 'expired') return;
    if (HELD.get(session.sessionId) === this) HELD.delete(session.sessionId);
    this.#ended.add(session.sessionId);
    this.#o.logger.warn(
      { sessionId: session.sessionId },
      'ZooKeeper session expired (no contact for longer than its timeout): its entries are gone; starting a new session and writing them again',
    );
    this.#o.onFailure?.();
    void this.#recover();
  }

  /** Starts a new session after an expiry and hands it over to re-create the entries; retries until done or closed. */
  async #recover(): Promise<void> {
    if (this.#recovering) return;
    this.#recovering = true;
    try {
      for (let delay = 500; !this.#closed && this.#o.fence?.closed !== true; delay = Math.min(delay * 2, 10_000)) {
        try {
          const session = await this.current();
          await this.#o.onNewSession(session);
          return;
        } catch (err: unknown) {
          this.#o.logger.warn({ err }, 'cannot re-create the entries under a new ZooKeeper session yet; trying again');
          await sleep(delay, undefined, { ref: false });
        }
      }
    } finally {
      this.#recovering = false;
    }
  }

  /**
   * ACL of a node the backend creates: the parents several environments and clusters share (the
   * base path and its ancestors, `_kube-registrar`, `sessions`, `sessions/<cluster>`, `owners`)
   * let anyone create children and read; every other node (a namespace, a service, an entry) is
   * this identity's alone to change, and anyone may read it. Without credentials, open.
   */
  aclFor(path: string): readonly ZooKeeperAcl[] {
    const digest = this.#o.digest;
    if (digest === undefined) return OPEN_ACL;
    const { layout, clusterId } = this.#o;
    const reserved = layout.reserved;
    const shared =
      layout.root === path ||
      layout.root.startsWith(`${path}/`) ||
      [reserved, `${reserved}/sessions`, `${reserved}/sessions/${clusterId}`, `${reserved}/owners`].includes(path);
    const world = shared ? ZooKeeperPermission.READ | ZooKeeperPermission.CREATE : ZooKeeperPermission.READ;
    return [digestAcl(digest), { perms: world, scheme: 'world', id: 'anyone' }];
  }

  /**
   * Moves the ACL of `path` from the previous digest identity to the current one, if it names the
   * previous one (a node created before the password was rotated); resolves whether it did.
   */
  async moveAcl(session: ZooKeeperSession, path: string): Promise<boolean> {
    const { digest, previousDigest } = this.#o;
    if (digest === undefined || previousDigest === undefined) return false;
    const { acl, stat } = await session.getAcl(path);
    const next = rotatedAcl(acl, previousDigest, digest);
    if (next === undefined) return false;
    await session.setAcl(path, next, stat.aversion);
    return true;
  }

  /**
   * Lets go of the session without ending it (a successor in this process adopts it); from then
   * on this keeper never opens a session again, so it cannot compete with its successor.
   */
  async release(): Promise<void> {
    this.#closed = true;
    const session = this.#session;
    if (session === undefined) return;
    if (HELD.get(session.sessionId) === this) HELD.delete(session.sessionId);
    await session.detach();
  }

  /**
   * Leaves the session to expire or be adopted: the connection is dropped without ending it, so
   * a restart or a new leader deletes nothing. A dry run's session holds nothing and is ended.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#establishing?.catch(() => undefined);
    const session = this.#session;
    if (session === undefined) return;
    if (this.#o.dryRun) await session.close();
    else await this.release();
  }
}

/**
 * Creates every path of `paths` (outermost first) that does not exist yet, as a persistent node
 * with `acl(path)`; a node that exists (whoever made it) is left as it is.
 */
export async function ensurePath(
  session: ZooKeeperSession,
  paths: readonly string[],
  acl: (path: string) => readonly ZooKeeperAcl[],
  data: (path: string) => Buffer = () => Buffer.alloc(0),
): Promise<void> {
  for (const path of paths) {
    if ((await session.exists(path)) !== undefined) continue;
    try {
      await session.create(path, data(path), { acl: acl(path) });
    } catch (err: unknown) {
      if (!hasZooKeeperCode(err, 'NODE_EXISTS')) throw err;
    }
  }
}

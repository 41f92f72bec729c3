/**
 * The ZooKeeper backend: entries are ephemeral nodes `<basePath>/<registryNamespace>/<service>/<instanceId>`
 * of one session per Registry, written in `multi` transactions.
 *
 * The session's id and password live in ZooKeeper, not in memory (see `session-keeper.ts`), so a
 * restarted operator, a new leader or a backend rebuilt with rotated credentials adopts the
 * session, and thereby every entry on it, instead of starting a new one and re-creating
 * everything. Closing never ends the session: the entries live until it is adopted or times out.
 *
 * This class is the facade: it validates the options and hands each call to the part that owns
 * it: `session-keeper.ts` (the session), `writes.ts` (group commit), `reads.ts`, and
 * `backend-state.ts` (what is remembered of the nodes).
 */
import { sameOwner } from '../../plan/plan.ts';
import type { WriteFence } from '../fence.ts';
import { silentLogger, type RegistryLogger } from '../logger.ts';
import type { Changes, Owner, Registry, RegistryEntry, Scope } from '../types.ts';
import { parseDigestCredentials } from './acl.ts';
import { ZooKeeperBackendState, ZooKeeperRegistryError, type ZooKeeperBackendContext } from './backend-state.ts';
import type { ZooKeeperSession } from './client.ts';
import { ZOOKEEPER_VALUE_FORMATS, type ZooKeeperValueFormat } from './codec.ts';
import { hasZooKeeperCode } from './errors.ts';
import { ZooKeeperLayout } from './paths.ts';
import { childrenOf, readOwnedByCluster, readRecords } from './reads.ts';
import { SessionKeeper } from './session-keeper.ts';
import { NO_OWNER } from './stat.ts';
import { ZooKeeperWrites } from './writes.ts';

export { ZooKeeperEntryChangedError, ZooKeeperRegistryError } from './backend-state.ts';

/** Configuration of one {@link ZooKeeperRegistry}: one Registry resource of type zookeeper. */
export interface ZooKeeperRegistryOptions {
  /** Connect string `host:port[,host:port…][/chroot]`. */
  readonly servers: string;
  /** Base path, e.g. `/services`. */
  readonly basePath: string;
  /** Node data format (default `curator`). */
  readonly format?: ZooKeeperValueFormat;
  /** Session timeout asked of the server (default 30000); the server clamps it to its bounds. */
  readonly sessionTimeoutMs?: number;
  /** Deadline of every ZooKeeper call in milliseconds (default 5000). */
  readonly callTimeoutMs?: number;
  /** Digest credentials `user:password`. */
  readonly digest?: string;
  /**
   * The digest credentials before the password was rotated (`user:previousPassword`): the session
   * authenticates with both, and {@link ZooKeeperRegistry.start} moves the ACLs of the nodes still
   * naming the old identity to the new one.
   */
  readonly previousDigest?: string;
  /** Read, compute and log, but write nothing and adopt no session. */
  readonly dryRun?: boolean;
  /** This cluster's id; part of every owner and of the session bookkeeping. */
  readonly clusterId: string;
  /** Name of the Registry resource: the session is stored per (cluster, Registry). */
  readonly registryName: string;
  readonly logger?: RegistryLogger;
  /** Called whenever the connection drops or the session expires (for metrics). */
  readonly onKeepaliveFailure?: () => void;
  /** Refuses every write once closed (leadership lost), and the session is then never reconnected. */
  readonly fence?: WriteFence;
  /** Milliseconds since the epoch (default Date.now). */
  readonly now?: () => number;
}

/** Default deadline of a ZooKeeper call. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default session timeout. */
export const DEFAULT_SESSION_TIMEOUT_MS = 30_000;

/** Registry backend for ZooKeeper. See the module comment for the layout and session handling. */
export class ZooKeeperRegistry implements Registry {
  readonly #ctx: ZooKeeperBackendContext;
  readonly #writes: ZooKeeperWrites;
  /** Credentials were rotated: nodes still naming the previous identity are moved to the new one. */
  readonly #rotating: boolean;
  #migration: Promise<number> | undefined;
  #closed = false;

  /** Validates the options; the session is found or started on the first call (or {@link start}). */
  constructor(options: ZooKeeperRegistryOptions) {
    const format = options.format ?? 'curator';
    const timeout = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const sessionTimeout = options.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS;
    if (options.servers.trim() === '') throw new RangeError('ZooKeeper registry needs servers: set spec.zookeeper.servers, e.g. zk-0:2181');
    if (!ZOOKEEPER_VALUE_FORMATS.includes(format))
      throw new RangeError(`unknown ZooKeeper format ${JSON.stringify(format)}: use one of ${ZOOKEEPER_VALUE_FORMATS.join(', ')}`);
    if (!(timeout > 0)) throw new RangeError(`callTimeoutMs must be positive, got ${timeout}`);
    if (!Number.isInteger(sessionTimeout) || sessionTimeout < 1000)
      throw new RangeError(`sessionTimeoutMs must be a whole number of at least 1000, got ${sessionTimeout}`);
    if (options.clusterId === '') throw new RangeError('clusterId must not be empty');
    if (options.digest !== undefined) parseDigestCredentials(options.digest);
    if (options.previousDigest !== undefined) {
      if (options.digest === undefined) throw new RangeError('previousDigest needs digest: the credentials it was rotated to');
      parseDigestCredentials(options.previousDigest);
    }
    const layout = new ZooKeeperLayout(options.basePath);
    layout.sessionStore(options.clusterId, options.registryName); // validates both as path segments
    const now = options.now ?? Date.now;
    const logger = options.logger ?? silentLogger;
    const state = new ZooKeeperBackendState();
    const keeper = new SessionKeeper({
      connectString: options.servers,
      sessionTimeoutMs: sessionTimeout,
      callTimeoutMs: timeout,
      ...(options.digest !== undefined ? { digest: options.digest } : {}),
      ...(options.previousDigest !== undefined ? { previousDigest: options.previousDigest } : {}),
      layout,
      clusterId: options.clusterId,
      registryName: options.registryName,
      dryRun: options.dryRun ?? false,
      ...(options.fence !== undefined ? { fence: options.fence } : {}),
      logger,
      now,
      ...(options.onKeepaliveFailure !== undefined ? { onFailure: options.onKeepaliveFailure } : {}),
      onNewSession: (session) => this.#recreate(session),
    });
    this.#ctx = { keeper, layout, state, clusterId: options.clusterId, format, dryRun: options.dryRun ?? false, logger, now };
    this.#rotating = options.previousDigest !== undefined && !(options.dryRun ?? false);
    this.#writes = new ZooKeeperWrites(this.#ctx);
  }

  /**
   * Finds the session this cluster's entries in this Registry hang on and adopts it, or starts
   * and stores a new one. Call it once when the backend is built, so that the predecessor's
   * session does not expire while ServiceInstances wait for their first reconcile. Resolves true
   * when a predecessor's session was adopted.
   */
  async start(): Promise<boolean> {
    this.#assertOpen();
    await this.#ctx.keeper.current();
    if (this.#rotating) {
      const { logger } = this.#ctx;
      void this.migrateAcls().then(
        (moved) => logger.info({ nodes: moved }, 'ZooKeeper nodes moved from the previous digest credentials to the current ones'),
        (err: unknown) =>
          logger.warn(
            { err },
            'cannot move every ZooKeeper node to the rotated digest credentials yet; the next backend build tries again',
          ),
      );
    }
    return this.#ctx.keeper.adopted;
  }

  /**
   * After a password rotation (`previousDigest` set): gives every node under the base path (and
   * the base path's ancestors) whose ACL names the previous digest identity the same ACL naming the
   * current one, so that once the previous password is gone the nodes are still this backend's to
   * change. Nodes it may not read are skipped. Resolves how many nodes it moved; runs once.
   */
  migrateAcls(): Promise<number> {
    this.#migration ??= this.#migrate();
    return this.#migration;
  }

  async #migrate(): Promise<number> {
    const { keeper, layout } = this.#ctx;
    const session = await keeper.current();
    let moved = 0;
    const move = async (path: string): Promise<void> => {
      try {
        if (await keeper.moveAcl(session, path)) moved++;
      } catch (err: unknown) {
        if (!hasZooKeeperCode(err, 'NO_NODE') && !hasZooKeeperCode(err, 'NO_AUTH')) throw err;
      }
    };
    const walk = async (path: string): Promise<void> => {
      await move(path);
      let children: string[];
      try {
        children = await childrenOf(session, path);
      } catch (err: unknown) {
        if (hasZooKeeperCode(err, 'NO_AUTH')) return;
        throw err;
      }
      await Promise.all(children.map((child) => walk(path === '/' ? `/${child}` : `${path}/${child}`)));
    };
    for (const ancestor of ZooKeeperLayout.ancestors(`${layout.basePath}/x`).slice(0, -1)) await move(ancestor);
    await walk(layout.root);
    return moved;
  }

  /** Hex id of the session the entries hang on (the same for every registry namespace), or undefined. */
  leaseIdFor(_registryNamespace?: string): string | undefined {
    return this.#ctx.keeper.sessionId;
  }

  /** True when no entry of this backend can still be in ZooKeeper: its session has been lost for longer than its timeout. */
  livenessLapsed(_registryNamespace?: string): boolean {
    return this.#ctx.keeper.lapsed();
  }

  /** Sessions kept alive: 1 while the backend holds one, whatever the number of entries. */
  keepalives(): number {
    return this.#ctx.keeper.keepalives();
  }

  /** Forgets `owner`'s entries in the scope, so that a recovery after an expiry does not write them back. */
  forget(scope: Scope, owner: Owner): void {
    const { state, layout } = this.#ctx;
    for (const [path, held] of [...state.held.childrenOf(layout.servicePath(scope.registryNamespace, scope.service))]) {
      if (sameOwner(held.entry.owner, owner)) state.held.delete(path);
    }
  }

  /** Every entry of this cluster under the base path. */
  async ownedByCluster(): Promise<RegistryEntry[]> {
    this.#assertOpen();
    return readOwnedByCluster(this.#ctx);
  }

  /** Every entry under the scope, whoever owns it; this cluster's entries not as they would be written now carry `needsRewrite`. */
  async records(scope: Scope): Promise<RegistryEntry[]> {
    this.#assertOpen();
    return readRecords(this.#ctx, scope);
  }

  /**
   * Writes the changes in `multi` transactions; calls arriving while one is under way are merged
   * into the next (group commit). Each transaction lands whole or not at all.
   */
  async applyChanges(changes: Changes): Promise<void> {
    this.#assertOpen();
    return this.#writes.apply(changes);
  }

  /** Waits for the writes under way, then lets go of the session without ending it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#writes.idle();
    await this.#ctx.keeper.close();
  }

  /**
   * After an expiry, writes every held entry again under the new session. A node still held by
   * the ended session (its removal not yet seen) is replaced; a node of any other session, or a
   * persistent one, is left for the next reconcile to judge.
   */
  async #recreate(session: ZooKeeperSession): Promise<void> {
    const { state, keeper, logger } = this.#ctx;
    const held = [...state.held];
    await Promise.all(
      held.map(async ([path]) => {
        const stat = await session.exists(path);
        if (stat === undefined) state.nodes.delete(path);
        else state.nodes.set(path, { version: stat.version, owner: stat.ephemeralOwner });
      }),
    );
    const entries = held
      .filter(([path]) => {
        const node = state.nodes.get(path);
        return node === undefined || keeper.endedSession(node.owner) || node.owner === session.sessionId;
      })
      .map(([, h]) => h.entry);
    for (const [path] of held) {
      const owner = state.nodes.get(path)?.owner;
      if (owner !== undefined && owner !== NO_OWNER && !keeper.endedSession(owner) && owner !== session.sessionId) state.held.delete(path);
    }
    // Owner-index nodes of hostport entries are looked up the same way before the rewrite.
    await Promise.all(
      entries.map(async (entry) => {
        const indexPath = this.#ctx.layout.ownerIndex(entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
        const stat = await session.exists(indexPath);
        if (stat === undefined) state.nodes.delete(indexPath);
        else state.nodes.set(indexPath, { version: stat.version, owner: stat.ephemeralOwner });
      }),
    );
    await this.#writes.rewrite(entries);
    logger.info({ sessionId: session.sessionId, entries: entries.length }, 'entries written again under the new ZooKeeper session');
  }

  #assertOpen(): void {
    if (this.#closed) throw new ZooKeeperRegistryError('ZooKeeper registry is closed');
  }
}

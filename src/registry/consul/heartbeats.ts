/**
 * Heartbeat bookkeeping of the Consul backend: per (cluster, registry namespace) one heartbeat
 * service whose TTL check is passed every TTL/3 and which every instance of the namespace aliases.
 * Heartbeats are registered when first needed, adopted when found on the agent (a restart or a new
 * leader passes the same one again), registered again when they vanish, counted as lapsed when
 * nothing of this process passed them for too long, and deregistered when the namespace is idle.
 */
import type { AgentServiceRecord } from './client.ts';
import { ConsulHttpError } from './client.ts';
import { heartbeatIsCurrent, heartbeatRegistration, HEARTBEAT_ROLE, isHeartbeat, META } from './codec.ts';
import type { ConsulBackendContext } from './context.ts';
import { ConsulRegistryError } from './errors.ts';
import { HeartbeatKeeper } from './heartbeat.ts';
import type { NamespaceState } from './namespace-state.ts';
import { lit } from './naming.ts';

/** Extra time a heartbeat outlives its instances once critical, so they are reaped before it. */
const HEARTBEAT_EXTRA_REAP_SECONDS = 60;

/** Owns every namespace's heartbeat and the keeper that passes them. */
export class ConsulHeartbeats {
  readonly #ctx: ConsulBackendContext;
  readonly #keeper: HeartbeatKeeper;
  /** When each namespace's heartbeat was last passed by this backend, in ms since the epoch. */
  readonly #passedAt = new Map<string, number>();
  readonly #createdAt = Date.now();

  /** Creates the keeper; `onHeartbeatFailure` is called whenever a pass fails (for metrics). */
  constructor(ctx: ConsulBackendContext, onHeartbeatFailure?: () => void) {
    this.#ctx = ctx;
    this.#keeper = new HeartbeatKeeper({
      intervalMs: (ctx.ttlSeconds * 1000) / 3,
      logger: ctx.logger,
      beat: (ns) => this.#beat(ns),
      onFailure: (ns, err) => {
        onHeartbeatFailure?.();
        this.#onBeatFailure(ns, err);
      },
    });
  }

  /** Id of the namespace's heartbeat check while it is known to be registered and passed, else undefined. */
  leaseIdFor(registryNamespace: string): string | undefined {
    const state = this.#ctx.namespaces.get(registryNamespace);
    return state?.present === true && (this.#ctx.dryRun || this.#keeper.has(registryNamespace)) ? state.heartbeatCheckId : undefined;
  }

  /** True when nothing of this process passed the heartbeat for longer than the TTL plus the reap delays. */
  livenessLapsed(registryNamespace: string): boolean {
    const last = Math.max(this.#createdAt, this.#passedAt.get(registryNamespace) ?? 0);
    return Date.now() - last > (this.#ctx.ttlSeconds + this.#ctx.reapAfterSeconds + HEARTBEAT_EXTRA_REAP_SECONDS + 30) * 1000;
  }

  /** Heartbeats passed right now. */
  get size(): number {
    return this.#keeper.size;
  }

  /**
   * Finds every heartbeat of this cluster on the agent and adopts it; resolves the registry
   * namespaces adopted. Deregisters nothing.
   */
  async adoptAll(): Promise<string[]> {
    const { calls, naming, namespaces, clusterId, registryName, logger } = this.#ctx;
    await calls.checkAgent();
    const filter = `Meta[${lit(META.role)}] == ${lit(HEARTBEAT_ROLE)} and Meta[${lit(META.ownerCluster)}] == ${lit(clusterId)}`;
    let found: AgentServiceRecord[];
    try {
      found = await calls.call(() => calls.client.services(filter, naming.usesConsulNamespaces ? '*' : ''));
    } catch (err: unknown) {
      throw new ConsulRegistryError(
        `looking for this cluster's heartbeats on the Consul agent at ${calls.address} failed: ${calls.explain(err)}`,
        { cause: err },
      );
    }
    const adopted: string[] = [];
    for (const record of found) {
      const ns = record.Meta[META.registryNamespace] ?? '';
      if (ns === '') continue;
      // Another Registry's heartbeat (same cluster, same agent): not this backend's to keep.
      const owner = record.Meta[META.registry];
      if (owner !== undefined && registryName !== undefined && owner !== registryName) continue;
      let state: NamespaceState;
      try {
        state = namespaces.use(ns);
      } catch (err: unknown) {
        logger.warn({ err, serviceId: record.ID }, 'ignoring a heartbeat whose registry namespace this Registry cannot use');
        continue;
      }
      // With a namespace template, the listing spans every Consul namespace: take only ours.
      if (record.ID !== state.heartbeatServiceId || (naming.usesConsulNamespaces && record.Namespace !== state.consulNamespace)) continue;
      try {
        await this.#adopt(state, record);
      } catch (err: unknown) {
        throw new ConsulRegistryError(`adopting the Consul heartbeat of registry namespace ${ns} failed: ${calls.explain(err)}`, {
          cause: err,
        });
      }
      if (state.present) adopted.push(ns);
    }
    return adopted;
  }

  /**
   * Takes in what a read of the namespace found of its heartbeat: adopts it when found, and forgets
   * it when missing unless it was registered since the read began (`registrationsAtRead`).
   */
  async applyRead(state: NamespaceState, heartbeat: AgentServiceRecord | undefined, registrationsAtRead: number): Promise<void> {
    if (heartbeat !== undefined) await this.#adopt(state, heartbeat);
    // Missing from the read, and not registered by a concurrent write since the read began.
    else if (state.registrations === registrationsAtRead && state.ensuring === undefined) this.#forget(state);
  }

  /** Registers the namespace's heartbeat unless it is known to be there as configured and passed. */
  async ensure(state: NamespaceState): Promise<void> {
    const { calls, clusterId, registryName, ttlSeconds: ttl, reapAfterSeconds, dryRun, logger } = this.#ctx;
    if (state.present && state.current && (dryRun || this.#keeper.has(state.registryNamespace))) return;
    const body = heartbeatRegistration({
      ...(registryName !== undefined ? { registry: registryName } : {}),
      clusterId,
      registryNamespace: state.registryNamespace,
      name: state.heartbeatName,
      ttlSeconds: ttl,
      deregisterAfterSeconds: reapAfterSeconds + HEARTBEAT_EXTRA_REAP_SECONDS,
    });
    if (dryRun) {
      logger.info(
        { dryRun: true, op: 'register', consulNamespace: state.consulNamespace, service: body },
        'dry run: Consul heartbeat registration skipped',
      );
      return;
    }
    state.ensuring ??= (async () => {
      try {
        await calls.call(() => calls.client.register(body, state.consulNamespace));
        this.#ctx.views.of(state.consulNamespace).registered(body);
        state.registrations++;
        state.present = true;
        state.current = true;
        // Registering again keeps a check's current status; a heartbeat that had expired is
        // critical until passed, so pass it now rather than an interval from now.
        await calls.call(() => calls.client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace));
        this.#passedAt.set(state.registryNamespace, Date.now());
        this.#keeper.add(state.registryNamespace);
        logger.info({ registryNamespace: state.registryNamespace, checkId: state.heartbeatCheckId, ttl }, 'registered Consul heartbeat');
      } finally {
        state.ensuring = undefined;
      }
    })();
    await state.ensuring;
  }

  /**
   * Lets go of every registry namespace outside `wanted` that has no instance of this cluster on
   * the agent and has not been used for `idleMs`: stops passing its heartbeat, deregisters the
   * heartbeat service and frees what is remembered of it. Resolves the namespaces released.
   */
  async release(wanted: ReadonlySet<string>, idleMs: number): Promise<string[]> {
    const { calls, namespaces, clusterId, logger } = this.#ctx;
    const released: string[] = [];
    for (const state of [...namespaces.values()]) {
      const ns = state.registryNamespace;
      if (wanted.has(ns) || Date.now() - state.usedAt < idleMs || state.ensuring !== undefined) continue;
      const filter = `Meta[${lit(META.registryNamespace)}] == ${lit(ns)} and Meta[${lit(META.ownerCluster)}] == ${lit(clusterId)}`;
      const services = await calls.call(() => calls.client.services(filter, state.consulNamespace));
      if (services.some((s) => !isHeartbeat(s))) continue; // instances still alias the heartbeat
      this.#keeper.delete(ns);
      await calls.call(() => calls.client.deregister(state.heartbeatServiceId, state.consulNamespace));
      this.#ctx.views.of(state.consulNamespace).deregistered(state.heartbeatServiceId);
      namespaces.delete(ns);
      this.#passedAt.delete(ns);
      released.push(ns);
    }
    if (released.length > 0)
      logger.info({ registryNamespaces: released }, 'released Consul registry namespaces that nothing writes to any more');
    return released;
  }

  /**
   * Passes every heartbeat once more, then stops the keeper and waits for passes under way. The last
   * pass leaves a successor (a restarted process, a new leader) a whole TTL to adopt the heartbeats
   * rather than what was left of the interval; a closed fence (leadership lost) refuses it, and a
   * failure is only logged.
   */
  async close(): Promise<void> {
    const { calls, namespaces, dryRun, logger } = this.#ctx;
    if (!dryRun) {
      const kept = [...namespaces.values()].filter((state) => this.#keeper.has(state.registryNamespace));
      await Promise.all(
        kept.map(async (state) => {
          try {
            await calls.client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace);
          } catch (err: unknown) {
            logger.debug({ err, registryNamespace: state.registryNamespace }, 'last Consul heartbeat pass before closing failed');
          }
        }),
      );
    }
    await this.#keeper.close();
  }

  /**
   * Takes over a heartbeat found on the agent: passes it now and on every interval. Reads that find
   * it at once (the first reads after a start, one per ServiceInstance of the namespace) share one
   * adoption rather than passing the TTL once each.
   */
  async #adopt(state: NamespaceState, record: AgentServiceRecord): Promise<void> {
    const { ttlSeconds, reapAfterSeconds, dryRun } = this.#ctx;
    const wasPresent = state.present;
    state.present = true;
    state.current = heartbeatIsCurrent(record, ttlSeconds, reapAfterSeconds + HEARTBEAT_EXTRA_REAP_SECONDS);
    if (dryRun || this.#keeper.has(state.registryNamespace)) return;
    state.adopting ??= this.#takeOver(state, wasPresent).finally(() => {
      state.adopting = undefined;
    });
    await state.adopting;
  }

  async #takeOver(state: NamespaceState, wasPresent: boolean): Promise<void> {
    const { calls, logger } = this.#ctx;
    if (!state.current) {
      // Another TTL than configured: register it again (its status carries over) and pass from now on.
      await this.ensure(state);
      return;
    }
    try {
      await calls.call(() => calls.client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace));
    } catch (err: unknown) {
      if (err instanceof ConsulHttpError && err.status === 404) {
        // Reaped between our read and the pass.
        state.present = false;
        this.#ctx.views.invalidateAll();
        return;
      }
      state.present = wasPresent;
      throw err;
    }
    this.#keeper.add(state.registryNamespace);
    this.#passedAt.set(state.registryNamespace, Date.now());
    logger.info({ registryNamespace: state.registryNamespace, checkId: state.heartbeatCheckId }, 'adopted Consul heartbeat');
  }

  #forget(state: NamespaceState): void {
    state.present = false;
    state.current = false;
    this.#keeper.delete(state.registryNamespace);
  }

  #note(): string {
    return `kube-registrar of cluster ${this.#ctx.clusterId} is alive`;
  }

  async #beat(registryNamespace: string): Promise<void> {
    // Not namespaces.use(): passing a heartbeat is not a use of the namespace, or none would ever be idle.
    const state = this.#ctx.namespaces.get(registryNamespace);
    if (state === undefined) return;
    const { calls } = this.#ctx;
    await calls.call(() => calls.client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace));
    this.#passedAt.set(registryNamespace, Date.now());
  }

  #onBeatFailure(registryNamespace: string, err: unknown): void {
    const { calls, logger } = this.#ctx;
    if (calls.closed) return;
    const state = this.#ctx.namespaces.get(registryNamespace);
    if (state === undefined) return;
    // Unreachable, or the agent lost the heartbeat (a restarted dev agent comes back empty): what
    // the view holds may be gone too, so the next read waits for the agent's own account.
    this.#ctx.views.invalidateAll();
    if (err instanceof ConsulHttpError && err.status === 404) {
      // The agent lost the heartbeat (restarted without its data, or someone deregistered it):
      // register it again at once so that instances still aliasing it recover.
      logger.warn({ registryNamespace, checkId: state.heartbeatCheckId }, 'Consul heartbeat vanished from the agent; registering it again');
      this.#forget(state);
      void calls
        .track(() => this.ensure(state))
        .catch((again: unknown) => {
          logger.error(
            { err: again, registryNamespace },
            'could not register the Consul heartbeat again; the next write or resync retries',
          );
        });
      return;
    }
    logger.error({ err, registryNamespace, checkId: state.heartbeatCheckId }, `passing the Consul heartbeat failed: ${calls.explain(err)}`);
  }
}

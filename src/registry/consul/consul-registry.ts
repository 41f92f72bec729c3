/**
 * The Consul backend: one agent service per endpoint, kept alive by one heartbeat per registry
 * namespace.
 *
 * Liveness. Only a Consul agent expires anything on its own: TTL checks, alias checks and
 * DeregisterCriticalServiceAfter all live in the agent's local state. So every service is
 * registered through the agent API. Per (cluster, registry namespace) there is one heartbeat
 * service whose TTL check the operator passes every TTL/3; each instance carries an alias check on
 * that heartbeat (evaluated inside the agent from its local state, at no cost to us) plus
 * DeregisterCriticalServiceAfter. A heartbeat interval therefore costs one HTTP call per registry
 * namespace whatever the number of instances. When the operator dies, the heartbeat turns critical
 * within the TTL, every alias follows at once, the instances leave `?passing=true`, and the agent
 * reaps them after DeregisterCriticalServiceAfter (Consul's minimum is one minute). Ids are
 * deterministic, and registering a check again keeps its status, so a restart or a new leader
 * simply passes the same heartbeat again: nothing turns critical and nothing is deregistered.
 *
 * Batching. The Txn API writes the catalog, not the agent. Catalog services on the agent's own
 * node are deleted by the agent's anti-entropy within seconds (it removes what it does not know
 * locally), and services on a separate virtual node have no agent behind them: their TTL checks are
 * never enforced, so a dead operator would leave them passing for ever. Both were checked against a
 * real Consul 1.21 agent. Txn therefore has no place in writing leased entries, and this backend
 * does not use it. Changes are instead applied as agent calls with bounded concurrency
 * (`maxConcurrentCalls`), each retried on transient failures, in a fixed order: heartbeat, then
 * registrations, then deregistrations (make before break). A failed call does not stop the others;
 * what landed stays, the error names what did not, and since every call is idempotent the caller
 * just retries. The cost is one call per changed instance, never per instance per interval.
 *
 * Reads come from the agent, which is authoritative for what it registered and needs no catalog
 * round-trip, through a copy of its services and checks (`agent-view.ts`): read in bulk, kept
 * current by this backend's own writes, and read again in bulk every `viewRefreshSeconds` or after
 * any trouble. A reconcile therefore reads its scope from memory, and a change costs the agent one
 * call. `address` must always reach the same agent: a dedicated agent or a client agent, not a
 * load balancer over several servers.
 *
 * Health marks. An endpoint failing its active health check (Endpoint.health) is not deregistered
 * but registered with one more check, held critical with the probe's output (Notes at once, Output
 * through a check update), and the mark in Meta, so it leaves `?passing=true` and DNS while the UI
 * and API say why. That check never reaps the instance; only the alias check does, when the
 * operator is gone. Registering it again without the mark drops the check: the instance passes.
 *
 * Ownership lives in Meta (`kr-owner-cluster`, `kr-owner-namespace`, `kr-owner-name`, ...). Ids
 * contain a hash of the cluster id, so this backend can only ever write or deregister ids of its
 * own cluster; services of others (other clusters, VMs, people) are read and reported but never
 * touched.
 *
 * This class is the facade: it validates the options and hands each call to the part that owns
 * it: `heartbeats.ts` (heartbeat bookkeeping), `writes.ts`, `reads.ts`, with `agent-calls.ts`
 * (retries, tracking, datacenter check), `naming.ts` and `namespace-state.ts` under them.
 */
import type { WriteFence } from '../fence.ts';
import { silentLogger } from '../logger.ts';
import type { RegistryLogger } from '../logger.ts';
import type { Changes, Registry, RegistryEntry, Scope } from '../types.ts';
import { AgentCalls } from './agent-calls.ts';
import { AgentViews, DEFAULT_VIEW_REFRESH_SECONDS } from './agent-view.ts';
import { createConsulAgentClient } from './client.ts';
import type { ConsulBackendContext } from './context.ts';
import { ConsulHeartbeats } from './heartbeats.ts';
import { ConsulNamespaces } from './namespace-state.ts';
import { ConsulNaming } from './naming.ts';
import { readOwnedByCluster, readRecords } from './reads.ts';
import { applyConsulChanges } from './writes.ts';

export { ConsulRegistryError } from './errors.ts';

/** Configuration of one {@link ConsulRegistry}: one Registry resource of type consul. */
export interface ConsulRegistryOptions {
  /** Agent URL, `http(s)://host:port`; must always reach the same agent. */
  readonly address: string;
  /** ACL token (from the Registry's tokenSecretRef); absent when ACLs are off. */
  readonly token?: string;
  /**
   * Datacenter the Registry expects. Agent registrations always land in the agent's own
   * datacenter, so this is a guard: a mismatch is refused rather than written elsewhere.
   */
  readonly datacenter?: string;
  /** Consul Enterprise namespace template over `{namespace}` (the registry namespace); absent or '' for open-source Consul. */
  readonly namespaceTemplate?: string;
  /** Service name template over `{service}` and `{namespace}` (default `{service}`). */
  readonly serviceNameTemplate?: string;
  /** TTL of the heartbeat check (default 30); instances leave `?passing=true` within it when the operator dies. */
  readonly leaseTtlSeconds?: number;
  /** How long instances stay critical before the agent reaps them (default max(60, 3 × TTL); at least 60, Consul's minimum). */
  readonly deregisterCriticalAfterSeconds?: number;
  /** Read, compute and log, but write nothing and pass no heartbeat. */
  readonly dryRun?: boolean;
  /** This cluster's id; part of every owner and of every service id. */
  readonly clusterId: string;
  /**
   * Name of the Registry resource: recorded on the heartbeats this backend registers, so that at
   * startup it adopts only its own and not those of another Registry on the same agent.
   */
  readonly registryName?: string;
  /** Deadline of every HTTP call in milliseconds (default 5000). */
  readonly callTimeoutMs?: number;
  /** Agent calls in flight at once while applying changes (default 16). */
  readonly maxConcurrentCalls?: number;
  /**
   * Age in seconds after which the copy of the agent's services is read again in bulk (default 30):
   * how soon a foreign service or a hand edit shows, and so how long after the resync period a hand
   * edit may wait for its repair.
   */
  readonly viewRefreshSeconds?: number;
  readonly logger?: RegistryLogger;
  /** Called whenever a heartbeat pass fails (for metrics). */
  readonly onHeartbeatFailure?: () => void;
  /** Refuses every write once closed (leadership lost). */
  readonly fence?: WriteFence;
}

/** Default deadline of a Consul call. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default heartbeat TTL. */
export const DEFAULT_LEASE_TTL_SECONDS = 30;
/** Default number of concurrent agent calls while applying changes. */
export const DEFAULT_MAX_CONCURRENT_CALLS = 16;
/** Consul's minimum DeregisterCriticalServiceAfter: shorter values are raised to it by the agent. */
export const MIN_DEREGISTER_CRITICAL_AFTER_SECONDS = 60;
/** Registry backend for Consul. See the module comment for liveness, batching and ownership. */
export class ConsulRegistry implements Registry {
  /** Failing endpoints stay registered, held critical with the probe's output (see the module comment). */
  readonly marksUnhealthy = true;
  readonly #ctx: ConsulBackendContext;
  readonly #heartbeats: ConsulHeartbeats;

  /** Validates the options and creates the client; nothing is sent before the first call. */
  constructor(options: ConsulRegistryOptions) {
    const ttl = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const reapAfter = options.deregisterCriticalAfterSeconds ?? Math.max(MIN_DEREGISTER_CRITICAL_AFTER_SECONDS, 3 * ttl);
    const timeout = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const concurrency = options.maxConcurrentCalls ?? DEFAULT_MAX_CONCURRENT_CALLS;
    if (!Number.isInteger(ttl) || ttl < 3) throw new RangeError(`leaseTtlSeconds must be an integer of at least 3, got ${ttl}`);
    if (!Number.isInteger(reapAfter) || reapAfter < MIN_DEREGISTER_CRITICAL_AFTER_SECONDS) {
      throw new RangeError(
        `deregisterCriticalAfterSeconds must be an integer of at least ${MIN_DEREGISTER_CRITICAL_AFTER_SECONDS} (Consul's minimum), got ${reapAfter}`,
      );
    }
    if (!(timeout > 0)) throw new RangeError(`callTimeoutMs must be positive, got ${timeout}`);
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new RangeError(`maxConcurrentCalls must be a positive integer, got ${concurrency}`);
    if (options.clusterId === '') throw new RangeError('clusterId must not be empty');
    const refresh = options.viewRefreshSeconds ?? DEFAULT_VIEW_REFRESH_SECONDS;
    if (!(refresh >= 0)) throw new RangeError(`viewRefreshSeconds must not be negative, got ${refresh}`);
    const naming = new ConsulNaming({
      clusterId: options.clusterId,
      serviceNameTemplate: options.serviceNameTemplate ?? '{service}',
      namespaceTemplate: options.namespaceTemplate ?? '',
      reapAfterSeconds: reapAfter,
    });

    const client = createConsulAgentClient({
      address: options.address,
      callTimeoutMs: timeout,
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(options.fence ? { fence: options.fence } : {}),
    });
    const logger = options.logger ?? silentLogger;
    const calls = new AgentCalls({ client, address: options.address, datacenter: options.datacenter ?? '', logger });
    this.#ctx = {
      calls,
      views: new AgentViews({ calls, refreshMs: refresh * 1000, logger }),
      naming,
      namespaces: new ConsulNamespaces(naming),
      clusterId: options.clusterId,
      registryName: options.registryName,
      ttlSeconds: ttl,
      reapAfterSeconds: reapAfter,
      dryRun: options.dryRun ?? false,
      maxConcurrentCalls: concurrency,
      logger,
    };
    this.#heartbeats = new ConsulHeartbeats(this.#ctx, options.onHeartbeatFailure);
  }

  /**
   * Id of the heartbeat TTL check that keeps the namespace's entries alive (the lease id shown in
   * status), or undefined while no heartbeat is known to be registered and passed.
   */
  leaseIdFor(registryNamespace: string): string | undefined {
    return this.#heartbeats.leaseIdFor(registryNamespace);
  }

  /**
   * True when no instance of this cluster in the registry namespace can still be served: nothing
   * of this process passed its heartbeat for longer than the TTL plus the time after which the
   * agent reaps critical instances.
   */
  livenessLapsed(registryNamespace: string): boolean {
    return this.#heartbeats.livenessLapsed(registryNamespace);
  }

  /** Every instance of this cluster on the agent (in every Consul namespace when a template is set). */
  async ownedByCluster(): Promise<RegistryEntry[]> {
    return this.#ctx.calls.track(() => readOwnedByCluster(this.#ctx));
  }

  /**
   * Lets go of every registry namespace outside `wanted` that has no instance of this cluster on
   * the agent and has not been used for `idleMs`: stops passing its heartbeat, deregisters the
   * heartbeat service and frees what the backend remembered of it. Resolves the namespaces released.
   */
  async retainNamespaces(wanted: ReadonlySet<string>, idleMs: number): Promise<string[]> {
    if (this.#ctx.dryRun) return [];
    return this.#ctx.calls.track(() => this.#heartbeats.release(wanted, idleMs));
  }

  /** Bulk reads of the agent's services and checks made so far (every other read is served from memory). */
  get bulkReads(): number {
    return this.#ctx.views.bulkReads;
  }

  /** Heartbeats this backend passes right now (one per registry namespace in use). */
  keepalives(): number {
    return this.#heartbeats.size;
  }

  /**
   * Finds every heartbeat of this cluster on the agent and starts passing it (passing it once right
   * away), re-registering those whose TTL differs from the configured one. Call it once at startup
   * or on becoming leader, so that no namespace's instances turn critical while its
   * ServiceInstances wait in the queue. Resolves the registry namespaces adopted. Deregisters nothing.
   */
  async adoptLeases(): Promise<string[]> {
    return this.#ctx.calls.track(() => this.#heartbeats.adoptAll());
  }

  /**
   * Every service of the scope on the agent, whoever owns it: this cluster's last, so that where two
   * clusters registered the same endpoint the owner wrapper sees ours. This cluster's services that
   * differ from what would be written now (hand edits, a changed template or TTL, a missing
   * heartbeat) come back with `needsRewrite`. Adopts the namespace's heartbeat if it exists.
   */
  async records(scope: Scope): Promise<RegistryEntry[]> {
    return this.#ctx.calls.track(() => readRecords(this.#ctx, this.#heartbeats, scope));
  }

  /**
   * Applies the changes as agent calls, at most `maxConcurrentCalls` at a time: first the heartbeat
   * of every namespace written to, then registrations (create and update), then deregistrations.
   * Transient failures are retried per call; a call that still fails does not stop the others. If
   * any failed, a {@link ConsulRegistryError} names them all; what landed stays, and since every
   * call is idempotent the caller simply retries.
   *
   * @throws {RangeError} for entries of another cluster: this backend never touches those.
   */
  async applyChanges(changes: Changes): Promise<void> {
    return this.#ctx.calls.track(() => applyConsulChanges(this.#ctx, this.#heartbeats, changes));
  }

  /**
   * Passes every heartbeat a last time, stops passing them and waits for calls under way.
   * Deregisters nothing: instances expire on their own, a TTL after the last pass.
   */
  async close(): Promise<void> {
    if (this.#ctx.calls.closed) return;
    const settled = this.#ctx.calls.close();
    await this.#heartbeats.close();
    await settled;
  }
}

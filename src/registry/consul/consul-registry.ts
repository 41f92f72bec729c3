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
 * Reads go to the agent (`/v1/agent/services` and `/v1/agent/checks` with filters), which is
 * authoritative for what it registered and needs no catalog round-trip. `address` must therefore
 * always reach the same agent: a dedicated agent or a client agent, not a load balancer over
 * several servers.
 *
 * Ownership lives in Meta (`kr-owner-cluster`, `kr-owner-namespace`, `kr-owner-name`, ...). Ids
 * contain a hash of the cluster id, so this backend can only ever write or deregister ids of its
 * own cluster; services of others (other clusters, VMs, people) are read and reported but never
 * touched.
 */
import { ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import type { RetryPolicy } from 'cockatiel';

import type { RegistryLogger } from '../etcd/logger.ts';
import { silentLogger } from '../etcd/logger.ts';
import { renderConsulServiceName, renderTemplate, SERVICE_NAME_TEMPLATE_PLACEHOLDERS, validateTemplate } from '../template.ts';
import type { Changes, Registry, RegistryEntry, Scope } from '../types.ts';
import { ConsulHttpError, createConsulAgentClient, isTransientConsulError } from './client.ts';
import type { AgentCheckRecord, AgentServiceRecord, ConsulAgentClient, ServiceRegistration } from './client.ts';
import {
  decodeService,
  differsFromRegistration,
  drainCheckId,
  HEARTBEAT_SERVICE,
  heartbeatCheckId,
  heartbeatIsCurrent,
  heartbeatRegistration,
  heartbeatServiceId,
  instanceRegistration,
  instanceServiceId,
  isHeartbeat,
  META,
  HEARTBEAT_ROLE,
} from './codec.ts';
import { HeartbeatKeeper } from './heartbeat.ts';
import type { WriteFence } from '../fence.ts';

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
  /** Deadline of every HTTP call in milliseconds (default 5000). */
  readonly callTimeoutMs?: number;
  /** Agent calls in flight at once while applying changes (default 16). */
  readonly maxConcurrentCalls?: number;
  readonly logger?: RegistryLogger;
  /** Called whenever a heartbeat pass fails (for metrics). */
  readonly onHeartbeatFailure?: () => void;
  /** Refuses every write once closed (leadership lost). */
  readonly fence?: WriteFence;
}

/** A failed Consul operation; `cause` holds the underlying error(s). */
export class ConsulRegistryError extends Error {
  override readonly name = 'ConsulRegistryError';
}

/** Default deadline of a Consul call. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default heartbeat TTL. */
export const DEFAULT_LEASE_TTL_SECONDS = 30;
/** Default number of concurrent agent calls while applying changes. */
export const DEFAULT_MAX_CONCURRENT_CALLS = 16;
/** Consul's minimum DeregisterCriticalServiceAfter: shorter values are raised to it by the agent. */
export const MIN_DEREGISTER_CRITICAL_AFTER_SECONDS = 60;
/** Extra time a heartbeat outlives its instances once critical, so they are reaped before it. */
const HEARTBEAT_EXTRA_REAP_SECONDS = 60;

interface NamespaceState {
  readonly registryNamespace: string;
  /** Consul Enterprise namespace; '' is the default (and only, on open-source Consul). */
  readonly consulNamespace: string;
  readonly heartbeatServiceId: string;
  readonly heartbeatCheckId: string;
  readonly heartbeatName: string;
  /** The heartbeat service is registered on the agent, as far as we know. */
  present: boolean;
  /** ... and with the configured TTL and reap delay. */
  current: boolean;
  /** Single flight of registering the heartbeat. */
  ensuring: Promise<void> | undefined;
  /** Bumped on every registration, so a read that started before one cannot undo it. */
  registrations: number;
  /** When a read or write last asked for this namespace, in ms since the epoch. */
  usedAt: number;
}

interface Failure {
  readonly what: string;
  readonly err: unknown;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A bexpr string literal. */
function lit(value: string): string {
  return JSON.stringify(value);
}

/** Runs `work` over `items` with at most `limit` at a time; `work` handles its own errors. */
async function forEachBounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Registry backend for Consul. See the module comment for liveness, batching and ownership. */
export class ConsulRegistry implements Registry {
  readonly #client: ConsulAgentClient;
  readonly #address: string;
  readonly #clusterId: string;
  readonly #datacenter: string;
  readonly #namespaceTemplate: string;
  readonly #serviceNameTemplate: string;
  readonly #ttl: number;
  readonly #reapAfter: number;
  readonly #dryRun: boolean;
  readonly #concurrency: number;
  readonly #log: RegistryLogger;
  readonly #keeper: HeartbeatKeeper;
  readonly #retry: RetryPolicy;
  /** Stops retrying on close; a back-off under way (at most a second) ends and close() waits for it. */
  readonly #abort = new AbortController();
  readonly #namespaces = new Map<string, NamespaceState>();
  readonly #inFlight = new Set<Promise<unknown>>();
  /** When each namespace's heartbeat was last passed by this backend, in ms since the epoch. */
  readonly #passedAt = new Map<string, number>();
  readonly #createdAt = Date.now();
  #agentChecked: Promise<void> | undefined;
  #closed = false;

  /** Validates the options and creates the client; nothing is sent before the first call. */
  constructor(options: ConsulRegistryOptions) {
    const ttl = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const reapAfter = options.deregisterCriticalAfterSeconds ?? Math.max(MIN_DEREGISTER_CRITICAL_AFTER_SECONDS, 3 * ttl);
    const timeout = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const concurrency = options.maxConcurrentCalls ?? DEFAULT_MAX_CONCURRENT_CALLS;
    if (!Number.isInteger(ttl) || ttl < 3) throw new RangeError(`leaseTtlSeconds must be an integer of at least 3, got ${ttl}`);
    if (!Number.isInteger(reapAfter) || reapAfter < MIN_DEREGISTER_CRITICAL_AFTER_SECONDS) {
      throw new RangeError(`deregisterCriticalAfterSeconds must be an integer of at least ${MIN_DEREGISTER_CRITICAL_AFTER_SECONDS} (Consul's minimum), got ${reapAfter}`);
    }
    if (!(timeout > 0)) throw new RangeError(`callTimeoutMs must be positive, got ${timeout}`);
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`maxConcurrentCalls must be a positive integer, got ${concurrency}`);
    if (options.clusterId === '') throw new RangeError('clusterId must not be empty');
    this.#serviceNameTemplate = options.serviceNameTemplate ?? '{service}';
    this.#namespaceTemplate = options.namespaceTemplate ?? '';
    validateTemplate(this.#serviceNameTemplate, { field: 'spec.consul.serviceName', allowed: SERVICE_NAME_TEMPLATE_PLACEHOLDERS });
    validateTemplate(this.#namespaceTemplate, { field: 'spec.consul.namespace', allowed: ['namespace'] });

    this.#client = createConsulAgentClient({ address: options.address, callTimeoutMs: timeout, ...(options.token !== undefined ? { token: options.token } : {}), ...(options.fence ? { fence: options.fence } : {}) });
    this.#address = options.address;
    this.#clusterId = options.clusterId;
    this.#datacenter = options.datacenter ?? '';
    this.#ttl = ttl;
    this.#reapAfter = reapAfter;
    this.#dryRun = options.dryRun ?? false;
    this.#concurrency = concurrency;
    this.#log = options.logger ?? silentLogger;
    this.#retry = retry(handleWhen(isTransientConsulError), { maxAttempts: 2, backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) });
    this.#keeper = new HeartbeatKeeper({
      intervalMs: (ttl * 1000) / 3,
      logger: this.#log,
      beat: (ns) => this.#beat(ns),
      onFailure: (ns, err) => {
        options.onHeartbeatFailure?.();
        this.#onBeatFailure(ns, err);
      },
    });
  }

  /**
   * Id of the heartbeat TTL check that keeps the namespace's entries alive (the lease id shown in
   * status), or undefined while no heartbeat is known to be registered and passed.
   */
  leaseIdFor(registryNamespace: string): string | undefined {
    const state = this.#namespaces.get(registryNamespace);
    return state?.present === true && (this.#dryRun || this.#keeper.has(registryNamespace)) ? state.heartbeatCheckId : undefined;
  }

  /**
   * True when no instance of this cluster in the registry namespace can still be served: nothing
   * of this process passed its heartbeat for longer than the TTL plus the time after which the
   * agent reaps critical instances.
   */
  livenessLapsed(registryNamespace: string): boolean {
    const last = Math.max(this.#createdAt, this.#passedAt.get(registryNamespace) ?? 0);
    return Date.now() - last > (this.#ttl + this.#reapAfter + HEARTBEAT_EXTRA_REAP_SECONDS + 30) * 1000;
  }

  /** Every instance of this cluster on the agent (in every Consul namespace when a template is set). */
  async ownedByCluster(): Promise<RegistryEntry[]> {
    return this.#track(async () => {
      await this.#checkAgent();
      const filter = `Meta[${lit(META.ownerCluster)}] == ${lit(this.#clusterId)}`;
      let found: AgentServiceRecord[];
      try {
        found = await this.#call(() => this.#client.services(filter, this.#namespaceTemplate === '' ? '' : '*'));
      } catch (err: unknown) {
        throw new ConsulRegistryError(`listing this cluster's services on the Consul agent at ${this.#address} failed: ${this.#explain(err)}`, { cause: err });
      }
      const out: RegistryEntry[] = [];
      for (const record of found) {
        const registryNamespace = record.Meta[META.registryNamespace];
        const service = record.Meta[META.service];
        if (registryNamespace === undefined || service === undefined) continue;
        const decoded = decodeService(record, { registryNamespace, service }, false);
        if (decoded?.managed === true && decoded.entry.owner.clusterId === this.#clusterId) out.push(decoded.entry);
      }
      return out;
    });
  }

  /**
   * Lets go of every registry namespace outside `wanted` that has no instance of this cluster on
   * the agent and has not been used for `idleMs`: stops passing its heartbeat, deregisters the
   * heartbeat service and frees what the backend remembered of it. Resolves the namespaces released.
   */
  async retainNamespaces(wanted: ReadonlySet<string>, idleMs: number): Promise<string[]> {
    if (this.#dryRun) return [];
    return this.#track(async () => {
      const released: string[] = [];
      for (const state of [...this.#namespaces.values()]) {
        const ns = state.registryNamespace;
        if (wanted.has(ns) || Date.now() - state.usedAt < idleMs || state.ensuring !== undefined) continue;
        const filter = `Meta[${lit(META.registryNamespace)}] == ${lit(ns)} and Meta[${lit(META.ownerCluster)}] == ${lit(this.#clusterId)}`;
        const services = await this.#call(() => this.#client.services(filter, state.consulNamespace));
        if (services.some((s) => !isHeartbeat(s))) continue; // instances still alias the heartbeat
        this.#keeper.delete(ns);
        await this.#call(() => this.#client.deregister(state.heartbeatServiceId, state.consulNamespace));
        this.#namespaces.delete(ns);
        this.#passedAt.delete(ns);
        released.push(ns);
      }
      if (released.length > 0) this.#log.info({ registryNamespaces: released }, 'released Consul registry namespaces that nothing writes to any more');
      return released;
    });
  }

  /** Heartbeats this backend passes right now (one per registry namespace in use). */
  keepalives(): number {
    return this.#keeper.size;
  }

  /**
   * Finds every heartbeat of this cluster on the agent and starts passing it (passing it once right
   * away), re-registering those whose TTL differs from the configured one. Call it once at startup
   * or on becoming leader, so that no namespace's instances turn critical while its
   * ServiceInstances wait in the queue. Resolves the registry namespaces adopted. Deregisters nothing.
   */
  async adoptLeases(): Promise<string[]> {
    return this.#track(async () => {
      await this.#checkAgent();
      const filter = `Meta[${lit(META.role)}] == ${lit(HEARTBEAT_ROLE)} and Meta[${lit(META.ownerCluster)}] == ${lit(this.#clusterId)}`;
      let found: AgentServiceRecord[];
      try {
        found = await this.#call(() => this.#client.services(filter, this.#namespaceTemplate === '' ? '' : '*'));
      } catch (err: unknown) {
        throw new ConsulRegistryError(`looking for this cluster's heartbeats on the Consul agent at ${this.#address} failed: ${this.#explain(err)}`, { cause: err });
      }
      const adopted: string[] = [];
      for (const record of found) {
        const ns = record.Meta[META.registryNamespace] ?? '';
        if (ns === '') continue;
        let state: NamespaceState;
        try {
          state = this.#state(ns);
        } catch (err: unknown) {
          this.#log.warn({ err, serviceId: record.ID }, 'ignoring a heartbeat whose registry namespace this Registry cannot use');
          continue;
        }
        // With a namespace template, the listing spans every Consul namespace: take only ours.
        if (record.ID !== state.heartbeatServiceId || (this.#namespaceTemplate !== '' && record.Namespace !== state.consulNamespace)) continue;
        try {
          await this.#adopt(state, record);
        } catch (err: unknown) {
          throw new ConsulRegistryError(`adopting the Consul heartbeat of registry namespace ${ns} failed: ${this.#explain(err)}`, { cause: err });
        }
        if (state.present) adopted.push(ns);
      }
      return adopted;
    });
  }

  /**
   * Every service of the scope on the agent, whoever owns it: this cluster's last, so that where two
   * clusters registered the same endpoint the owner wrapper sees ours. This cluster's services that
   * differ from what would be written now (hand edits, a changed template or TTL, a missing
   * heartbeat) come back with `needsRewrite`. Adopts the namespace's heartbeat if it exists.
   */
  async records(scope: Scope): Promise<RegistryEntry[]> {
    return this.#track(async () => {
      await this.#checkAgent();
      const state = this.#state(scope.registryNamespace);
      const name = this.#serviceName(scope.registryNamespace, scope.service);
      const serviceFilter =
        `Service == ${lit(name)} or ID == ${lit(state.heartbeatServiceId)} or ` +
        // Our services under a name from an earlier serviceName template, so they are renamed, not orphaned.
        `(Meta[${lit(META.registryNamespace)}] == ${lit(scope.registryNamespace)} and Meta[${lit(META.service)}] == ${lit(scope.service)})`;
      let services: AgentServiceRecord[];
      let checks: AgentCheckRecord[];
      try {
        const registrations = state.registrations;
        [services, checks] = await Promise.all([
          this.#call(() => this.#client.services(serviceFilter, state.consulNamespace)),
          this.#call(() => this.#client.checks(`ServiceName == ${lit(name)}`, state.consulNamespace)),
        ]);
        const heartbeat = services.find((s) => s.ID === state.heartbeatServiceId && isHeartbeat(s));
        if (heartbeat !== undefined) await this.#adopt(state, heartbeat);
        // Missing from the read, and not registered by a concurrent write since the read began.
        else if (state.registrations === registrations && state.ensuring === undefined) this.#forget(state);
      } catch (err: unknown) {
        throw new ConsulRegistryError(`reading ${scope.registryNamespace}/${scope.service} (Consul service ${name}) from the agent at ${this.#address} failed: ${this.#explain(err)}`, { cause: err });
      }

      const checksOf = new Map<string, AgentCheckRecord[]>();
      for (const check of checks) checksOf.set(check.ServiceID, [...(checksOf.get(check.ServiceID) ?? []), check]);
      const foreign: RegistryEntry[] = [];
      const own: RegistryEntry[] = [];
      for (const record of services) {
        const serviceChecks = checksOf.get(record.ID) ?? [];
        const decoded = decodeService(record, scope, serviceChecks.some((c) => c.CheckID === drainCheckId(record.ID)));
        if (decoded === undefined) continue;
        const { entry } = decoded;
        if (!decoded.managed || entry.owner.clusterId !== this.#clusterId) {
          foreign.push(entry);
          continue;
        }
        own.push(this.#isStale(state, record, serviceChecks, entry) ? { ...entry, needsRewrite: true } : entry);
      }
      return [...foreign, ...own];
    });
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
    return this.#track(async () => {
      if (changes.updateOld.length !== changes.updateNew.length) {
        throw new RangeError(`invalid changes: ${changes.updateOld.length} updateOld but ${changes.updateNew.length} updateNew entries`);
      }
      const puts = [...changes.create, ...changes.updateNew];
      const deletes = [...changes.delete];
      changes.updateOld.forEach((old, i) => {
        const next = changes.updateNew[i] as RegistryEntry;
        if (this.#serviceId(old) !== this.#serviceId(next)) deletes.push(old);
      });
      for (const entry of [...puts, ...deletes]) {
        if (entry.owner.clusterId !== this.#clusterId) {
          throw new RangeError(
            `refusing to write ${entry.registryNamespace}/${entry.endpoint.service}/${entry.endpoint.instanceId}: it belongs to cluster ${JSON.stringify(entry.owner.clusterId)}, this backend to ${JSON.stringify(this.#clusterId)}`,
          );
        }
      }
      if (puts.length + deletes.length === 0) return;
      await this.#checkAgent();

      const failures: Failure[] = [];
      const blocked = new Set<string>();
      const namespaces = [...new Set(puts.map((e) => e.registryNamespace))];
      await Promise.all(
        namespaces.map(async (ns) => {
          try {
            await this.#ensureHeartbeat(this.#state(ns));
          } catch (err: unknown) {
            blocked.add(ns);
            const state = this.#namespaces.get(ns);
            const which = state === undefined ? '' : ` ${state.heartbeatName} (ID ${state.heartbeatServiceId})`;
            failures.push({ what: `registering the heartbeat${which} of registry namespace ${ns}`, err });
          }
        }),
      );
      const skipped = puts.filter((e) => blocked.has(e.registryNamespace)).length;
      if (skipped > 0) this.#log.warn({ skipped }, 'not registering instances whose heartbeat could not be registered');

      await forEachBounded(
        puts.filter((e) => !blocked.has(e.registryNamespace)),
        this.#concurrency,
        async (entry) => {
          let body: ServiceRegistration | undefined;
          try {
            const state = this.#state(entry.registryNamespace);
            body = this.#registration(state, entry);
            if (this.#dryRun) {
              this.#log.info({ dryRun: true, op: 'register', consulNamespace: state.consulNamespace, service: body }, 'dry run: Consul registration skipped');
              return;
            }
            const registration = body;
            await this.#call(() => this.#client.register(registration, state.consulNamespace));
          } catch (err: unknown) {
            failures.push({ what: `registering ${this.#place(entry)} as Consul service ${body?.Name ?? '?'} (ID ${this.#serviceId(entry)})`, err });
          }
        },
      );
      await forEachBounded(deletes, this.#concurrency, async (entry) => {
        const id = this.#serviceId(entry);
        try {
          const state = this.#state(entry.registryNamespace);
          if (this.#dryRun) {
            this.#log.info({ dryRun: true, op: 'deregister', consulNamespace: state.consulNamespace, serviceId: id }, 'dry run: Consul deregistration skipped');
            return;
          }
          const existed = await this.#call(() => this.#client.deregister(id, state.consulNamespace));
          if (!existed) this.#log.debug({ serviceId: id }, 'Consul service to deregister was already gone');
        } catch (err: unknown) {
          failures.push({ what: `deregistering ${this.#place(entry)} (Consul service ID ${id})`, err });
        }
      });

      const total = namespaces.length + puts.length + deletes.length;
      if (failures.length > 0) {
        const shown = failures.slice(0, 3).map((f) => `${f.what} failed: ${this.#explain(f.err)}`);
        const more = failures.length > 3 ? `; and ${failures.length - 3} more` : '';
        const notTried = skipped > 0 ? ` ${skipped} registrations were not tried because their heartbeat is missing.` : '';
        throw new ConsulRegistryError(
          `${failures.length} of ${total} Consul calls failed; the others were applied and are kept, and a retry applies the rest.${notTried} ${shown.join('; ')}${more}`,
          { cause: new AggregateError(failures.map((f) => f.err)) },
        );
      }
      this.#log.debug({ registered: puts.length, deregistered: deletes.length, heartbeats: namespaces.length }, 'Consul changes applied');
    });
  }

  /** Stops passing heartbeats and waits for calls under way. Deregisters nothing: instances expire on their own. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    await this.#keeper.close();
    await Promise.allSettled([...this.#inFlight]);
  }

  async #track<T>(work: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new ConsulRegistryError('Consul registry is closed');
    const run = work();
    this.#inFlight.add(run);
    try {
      return await run;
    } finally {
      this.#inFlight.delete(run);
    }
  }

  /** One agent call, retried on transient failures until close. */
  #call<T>(fn: () => Promise<T>): Promise<T> {
    return this.#retry.execute(fn, this.#abort.signal);
  }

  /** Checks once that the agent is in the configured datacenter; registering elsewhere would be silent. */
  async #checkAgent(): Promise<void> {
    if (this.#datacenter === '') return;
    this.#agentChecked ??= (async () => {
      let actual: string;
      try {
        actual = await this.#call(() => this.#client.agentDatacenter());
      } catch (err: unknown) {
        if (err instanceof ConsulHttpError && err.status === 403) {
          this.#log.warn({ datacenter: this.#datacenter }, 'the ACL token lacks agent:read, so the agent\'s datacenter cannot be checked against spec.consul.datacenter');
          return;
        }
        this.#agentChecked = undefined;
        throw new ConsulRegistryError(`asking the Consul agent at ${this.#address} for its datacenter failed: ${this.#explain(err)}`, { cause: err });
      }
      if (actual !== this.#datacenter) {
        throw new ConsulRegistryError(
          `the Consul agent at ${this.#address} is in datacenter ${JSON.stringify(actual)}, but spec.consul.datacenter says ${JSON.stringify(this.#datacenter)}; ` +
            `agent registrations always land in the agent's own datacenter: point spec.consul.address at an agent of ${JSON.stringify(this.#datacenter)} or fix spec.consul.datacenter`,
        );
      }
    })();
    await this.#agentChecked;
  }

  #state(registryNamespace: string): NamespaceState {
    let state = this.#namespaces.get(registryNamespace);
    if (state === undefined) {
      const consulNamespace = renderTemplate(this.#namespaceTemplate, { namespace: registryNamespace }, { field: 'spec.consul.namespace', allowed: ['namespace'], allowEmpty: true });
      const heartbeatId = heartbeatServiceId(this.#clusterId, registryNamespace);
      state = {
        registryNamespace,
        consulNamespace,
        heartbeatServiceId: heartbeatId,
        heartbeatCheckId: heartbeatCheckId(heartbeatId),
        heartbeatName: this.#serviceName(registryNamespace, HEARTBEAT_SERVICE),
        present: false,
        current: false,
        ensuring: undefined,
        registrations: 0,
        usedAt: 0,
      };
      this.#namespaces.set(registryNamespace, state);
    }
    state.usedAt = Date.now();
    return state;
  }

  #serviceName(registryNamespace: string, service: string): string {
    return renderConsulServiceName(this.#serviceNameTemplate, { namespace: registryNamespace, service });
  }

  #serviceId(entry: RegistryEntry): string {
    return instanceServiceId(this.#clusterId, entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }

  #place(entry: RegistryEntry): string {
    return `${entry.registryNamespace}/${entry.endpoint.service}/${entry.endpoint.instanceId}`;
  }

  #registration(state: NamespaceState, entry: RegistryEntry): ServiceRegistration {
    return instanceRegistration(entry, {
      clusterId: this.#clusterId,
      name: this.#serviceName(entry.registryNamespace, entry.endpoint.service),
      heartbeatServiceId: state.heartbeatServiceId,
      deregisterAfterSeconds: this.#reapAfter,
    });
  }

  #isStale(state: NamespaceState, record: AgentServiceRecord, checks: readonly AgentCheckRecord[], entry: RegistryEntry): boolean {
    if (!state.present || !state.current) return true;
    try {
      return differsFromRegistration(record, checks, this.#registration(state, entry));
    } catch {
      // Cannot be encoded any more (limits): let the plan try, and fail with the encoding error.
      return true;
    }
  }

  /** Takes over a heartbeat found on the agent: passes it now and on every interval. */
  async #adopt(state: NamespaceState, record: AgentServiceRecord): Promise<void> {
    const wasPresent = state.present;
    state.present = true;
    state.current = heartbeatIsCurrent(record, this.#ttl, this.#reapAfter + HEARTBEAT_EXTRA_REAP_SECONDS);
    if (this.#dryRun || this.#keeper.has(state.registryNamespace)) return;
    if (!state.current) {
      // Another TTL than configured: register it again (its status carries over) and pass from now on.
      await this.#ensureHeartbeat(state);
      return;
    }
    try {
      await this.#call(() => this.#client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace));
    } catch (err: unknown) {
      if (err instanceof ConsulHttpError && err.status === 404) {
        // Reaped between our read and the pass.
        state.present = false;
        return;
      }
      state.present = wasPresent;
      throw err;
    }
    this.#keeper.add(state.registryNamespace);
    this.#passedAt.set(state.registryNamespace, Date.now());
    this.#log.info({ registryNamespace: state.registryNamespace, checkId: state.heartbeatCheckId }, 'adopted Consul heartbeat');
  }

  #forget(state: NamespaceState): void {
    state.present = false;
    state.current = false;
    this.#keeper.delete(state.registryNamespace);
  }

  /** Registers the namespace's heartbeat unless it is known to be there as configured and passed. */
  async #ensureHeartbeat(state: NamespaceState): Promise<void> {
    if (state.present && state.current && (this.#dryRun || this.#keeper.has(state.registryNamespace))) return;
    const body = heartbeatRegistration({
      clusterId: this.#clusterId,
      registryNamespace: state.registryNamespace,
      name: state.heartbeatName,
      ttlSeconds: this.#ttl,
      deregisterAfterSeconds: this.#reapAfter + HEARTBEAT_EXTRA_REAP_SECONDS,
    });
    if (this.#dryRun) {
      this.#log.info({ dryRun: true, op: 'register', consulNamespace: state.consulNamespace, service: body }, 'dry run: Consul heartbeat registration skipped');
      return;
    }
    state.ensuring ??= (async () => {
      try {
        await this.#call(() => this.#client.register(body, state.consulNamespace));
        state.registrations++;
        state.present = true;
        state.current = true;
        // Registering again keeps a check's current status; a heartbeat that had expired is
        // critical until passed, so pass it now rather than an interval from now.
        await this.#call(() => this.#client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace));
        this.#passedAt.set(state.registryNamespace, Date.now());
        this.#keeper.add(state.registryNamespace);
        this.#log.info({ registryNamespace: state.registryNamespace, checkId: state.heartbeatCheckId, ttl: this.#ttl }, 'registered Consul heartbeat');
      } finally {
        state.ensuring = undefined;
      }
    })();
    await state.ensuring;
  }

  #note(): string {
    return `kube-registrar of cluster ${this.#clusterId} is alive`;
  }

  async #beat(registryNamespace: string): Promise<void> {
    // Not #state(): passing a heartbeat is not a use of the namespace, or none would ever be idle.
    const state = this.#namespaces.get(registryNamespace);
    if (state === undefined) return;
    await this.#call(() => this.#client.passTtl(state.heartbeatCheckId, this.#note(), state.consulNamespace));
    this.#passedAt.set(registryNamespace, Date.now());
  }

  #onBeatFailure(registryNamespace: string, err: unknown): void {
    if (this.#closed) return;
    const state = this.#namespaces.get(registryNamespace);
    if (state === undefined) return;
    if (err instanceof ConsulHttpError && err.status === 404) {
      // The agent lost the heartbeat (restarted without its data, or someone deregistered it):
      // register it again at once so that instances still aliasing it recover.
      this.#log.warn({ registryNamespace, checkId: state.heartbeatCheckId }, 'Consul heartbeat vanished from the agent; registering it again');
      this.#forget(state);
      void this.#track(() => this.#ensureHeartbeat(state)).catch((again: unknown) => {
        this.#log.error({ err: again, registryNamespace }, 'could not register the Consul heartbeat again; the next write or resync retries');
      });
      return;
    }
    this.#log.error({ err, registryNamespace, checkId: state.heartbeatCheckId }, `passing the Consul heartbeat failed: ${this.#explain(err)}`);
  }

  /** The error's message, with what to do about the failures users can fix. */
  #explain(err: unknown): string {
    const message = describe(err);
    if (!(err instanceof ConsulHttpError)) return message;
    if (err.status === 403) {
      return (
        `${message}. The ACL token of this Registry (spec.consul.tokenSecretRef) is not allowed to do this: ` +
        `grant the permission named above in the token's policy, or change spec.consul.serviceName so that the names fall under what the token may write`
      );
    }
    if (err.status === 400 && /Namespaces are a Consul Enterprise feature/i.test(err.consulMessage)) {
      return (
        `${message}. spec.consul.namespace is set, but the agent runs open-source Consul, which has no namespaces: ` +
        `clear spec.consul.namespace and isolate registry namespaces through spec.consul.serviceName, e.g. "{namespace}-{service}"`
      );
    }
    return message;
  }
}

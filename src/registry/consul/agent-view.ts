/**
 * The backend's copy of what one Consul agent holds in one Consul namespace: every service and
 * every check, so that a reconcile reads its scope from memory instead of asking the agent.
 *
 * Why. `GET /v1/agent/services?filter=...` makes the agent evaluate the filter over every service
 * it holds, under the lock its registrations hold while they sync to the servers: at a few
 * thousand services one read cost about as much as the registration it preceded, so reading
 * doubled the time from a pod change to the change being visible. Neither `/v1/agent/services` nor
 * `/v1/agent/checks` supports blocking queries (Consul 1.14 sends no index or content hash for
 * them), so the view cannot be pushed; it is kept current instead:
 *
 * - write-through: every registration and deregistration this backend makes lands in the view as
 *   soon as the agent acknowledged it (this operator is the only writer of its service ids);
 * - verified in bulk: one unfiltered read of services and checks at first use and then whenever
 *   the view is older than the refresh period (in the background: reads go on from memory
 *   meanwhile), so foreign services and hand edits of owned ones show within that period;
 * - distrusted on trouble: a failed call, a heartbeat the agent no longer knows (a restarted dev
 *   agent comes back empty) or a write that did not land make the next read wait for a full read,
 *   which fails while the agent is away, so status says so and the retry rewrites what is missing.
 *
 * Ownership does not rest on the view being current: every id this backend writes or deregisters
 * is derived from its cluster id (see codec.ts), so a foreign service it has not seen yet is never
 * touched; the view only decides how soon such a service is reported as a collision.
 */
import type { RegistryLogger } from '../logger.ts';
import type { AgentCalls } from './agent-calls.ts';
import type { AgentCheckRecord, AgentServiceRecord, ServiceRegistration } from './client.ts';
import { META } from './codec.ts';
import type { HealthCheckUpdate } from './codec.ts';

/** Default age after which the view is read again in bulk. */
export const DEFAULT_VIEW_REFRESH_SECONDS = 30;

/** The services and checks of a scope, as the view holds them. */
export interface ViewedScope {
  readonly services: AgentServiceRecord[];
  /** Checks of those services, by service id. */
  readonly checks: ReadonlyMap<string, readonly AgentCheckRecord[]>;
}

/** Options of {@link AgentView}. */
export interface AgentViewOptions {
  readonly calls: AgentCalls;
  /** Consul Enterprise namespace; '' for the default (open-source Consul). */
  readonly consulNamespace: string;
  /** Age after which a read starts a bulk read in the background. */
  readonly refreshMs: number;
  readonly logger: RegistryLogger;
  /** Defaults to performance.now(). */
  readonly now?: () => number;
}

function scopeKey(registryNamespace: string, service: string): string {
  return `${registryNamespace}\u0000${service}`;
}

function addTo(index: Map<string, Set<string>>, key: string, id: string): void {
  let ids = index.get(key);
  if (ids === undefined) index.set(key, (ids = new Set()));
  ids.add(id);
}

function removeFrom(index: Map<string, Set<string>>, key: string, id: string): void {
  const ids = index.get(key);
  if (ids === undefined) return;
  ids.delete(id);
  if (ids.size === 0) index.delete(key);
}

/** One service and its checks. */
interface Held {
  readonly service: AgentServiceRecord;
  readonly checks: readonly AgentCheckRecord[];
}

/** The agent's services and checks in one Consul namespace, kept as the module comment says. */
export class AgentView {
  readonly #o: AgentViewOptions;
  readonly #now: () => number;
  readonly #held = new Map<string, Held>();
  readonly #byName = new Map<string, Set<string>>();
  readonly #byScope = new Map<string, Set<string>>();
  /** Sequence of write-throughs; a bulk read keeps what was written after it began. */
  #seq = 0;
  /** Service id → sequence number of its last write-through, until a bulk read begun later lands. */
  readonly #written = new Map<string, number>();
  /** Bumped by invalidate(): a bulk read begun before cannot make the view trusted again. */
  #epoch = 0;
  #trusted = false;
  #readAt = Number.NEGATIVE_INFINITY;
  #loading: Promise<void> | undefined;
  #bulkReads = 0;

  /** Sends nothing: the first {@link AgentView.ready} reads the agent. */
  constructor(options: AgentViewOptions) {
    this.#o = options;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Bulk reads made so far (for tests and the benchmarks' accounting). */
  get bulkReads(): number {
    return this.#bulkReads;
  }

  /**
   * Resolves once the view can be read: at once when it is trusted (starting a bulk read in the
   * background when it is older than the refresh period), else after a bulk read, which rejects
   * when the agent cannot be read.
   */
  async ready(): Promise<void> {
    if (!this.#trusted) {
      await this.#load();
      // That read may have begun before the view was last distrusted: one more, begun after.
      if (!this.#trusted) await this.#load();
      return;
    }
    if (this.#now() - this.#readAt >= this.#o.refreshMs && this.#loading === undefined && !this.#o.calls.closed) {
      void this.#o.calls
        .track(() => this.#load())
        .catch((err: unknown) => {
          this.#o.logger.warn({ err }, 'refreshing the view of the Consul agent failed; the next read tries again');
        });
    }
  }

  /**
   * The services a scope reads: those named `name`, the service `heartbeatId`, and those whose Meta
   * places them in (registryNamespace, service) under another name (an earlier serviceName
   * template), with their checks.
   */
  scope(name: string, heartbeatId: string, registryNamespace: string, service: string): ViewedScope {
    const ids = new Set([...(this.#byName.get(name) ?? []), ...(this.#byScope.get(scopeKey(registryNamespace, service)) ?? [])]);
    if (this.#held.has(heartbeatId)) ids.add(heartbeatId);
    const services: AgentServiceRecord[] = [];
    const checks = new Map<string, readonly AgentCheckRecord[]>();
    for (const id of ids) {
      const held = this.#held.get(id);
      if (held === undefined) continue;
      services.push(held.service);
      checks.set(id, held.checks);
    }
    return { services, checks };
  }

  /** The service `id` as the view holds it. */
  service(id: string): AgentServiceRecord | undefined {
    return this.#held.get(id)?.service;
  }

  /**
   * Takes in a registration the agent acknowledged (`replace-existing-checks`: the body's checks are
   * the whole set). The agent keeps the status and output of a check registered again, so those
   * carry over; `healthUpdate`, once acknowledged too, sets the health check's.
   */
  registered(body: ServiceRegistration, healthUpdate?: HealthCheckUpdate): void {
    const before = this.#held.get(body.ID);
    const checks: AgentCheckRecord[] = body.Checks.map((def) => {
      const old = before?.checks.find((c) => c.CheckID === def.CheckID);
      const held = healthUpdate?.checkId === def.CheckID;
      return {
        CheckID: def.CheckID,
        ServiceID: body.ID,
        Status: held ? healthUpdate.status : (old?.Status ?? def.Status ?? 'critical'),
        Type: def.AliasService !== undefined ? 'alias' : 'ttl',
        Output: held ? healthUpdate.output : (old?.Output ?? ''),
      };
    });
    const service: AgentServiceRecord = {
      ID: body.ID,
      Service: body.Name,
      Tags: [...body.Tags],
      Meta: { ...body.Meta },
      Address: body.Address,
      Port: body.Port,
      Weights: { ...body.Weights },
      ...(this.#o.consulNamespace !== '' ? { Namespace: this.#o.consulNamespace } : {}),
    };
    this.#written.set(body.ID, ++this.#seq);
    this.#put(service, checks);
  }

  /** Takes in a deregistration the agent acknowledged (or a service it no longer knew). */
  deregistered(id: string): void {
    this.#written.set(id, ++this.#seq);
    this.#drop(id);
  }

  /**
   * Stops trusting the view: the next {@link AgentView.ready} waits for a bulk read. Called when a
   * call failed or the agent lost something it should hold, so the view may differ from it.
   */
  invalidate(): void {
    this.#trusted = false;
    this.#epoch++;
  }

  /** Single flight of one bulk read. */
  #load(): Promise<void> {
    this.#loading ??= this.#bulkRead().finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  async #bulkRead(): Promise<void> {
    const { calls, consulNamespace } = this.#o;
    const seq = this.#seq;
    const epoch = this.#epoch;
    const [services, checks] = await Promise.all([
      calls.call(() => calls.client.services('', consulNamespace)),
      calls.call(() => calls.client.checks('', consulNamespace)),
    ]);
    this.#bulkReads++;
    const checksOf = new Map<string, AgentCheckRecord[]>();
    for (const check of checks) {
      if (check.ServiceID === '') continue;
      let list = checksOf.get(check.ServiceID);
      if (list === undefined) checksOf.set(check.ServiceID, (list = []));
      list.push(check);
    }
    // What this backend wrote after the read began is newer than the read: keep it.
    const newer = new Map<string, Held | undefined>();
    for (const [id, at] of this.#written) {
      if (at > seq) newer.set(id, this.#held.get(id));
      else this.#written.delete(id);
    }
    this.#held.clear();
    this.#byName.clear();
    this.#byScope.clear();
    for (const service of services) if (!newer.has(service.ID)) this.#put(service, checksOf.get(service.ID) ?? []);
    for (const held of newer.values()) if (held !== undefined) this.#put(held.service, held.checks);
    this.#readAt = this.#now();
    if (this.#epoch === epoch) this.#trusted = true;
  }

  #put(service: AgentServiceRecord, checks: readonly AgentCheckRecord[]): void {
    this.#drop(service.ID);
    this.#held.set(service.ID, { service, checks });
    addTo(this.#byName, service.Service, service.ID);
    const rn = service.Meta[META.registryNamespace];
    const svc = service.Meta[META.service];
    if (rn !== undefined && svc !== undefined) addTo(this.#byScope, scopeKey(rn, svc), service.ID);
  }

  #drop(id: string): void {
    const held = this.#held.get(id);
    if (held === undefined) return;
    this.#held.delete(id);
    removeFrom(this.#byName, held.service.Service, id);
    const rn = held.service.Meta[META.registryNamespace];
    const svc = held.service.Meta[META.service];
    if (rn !== undefined && svc !== undefined) removeFrom(this.#byScope, scopeKey(rn, svc), id);
  }
}

/** One {@link AgentView} per Consul namespace, created on first use. */
export class AgentViews {
  readonly #o: Omit<AgentViewOptions, 'consulNamespace'>;
  readonly #views = new Map<string, AgentView>();

  /** Views share the calls, refresh period and logger. */
  constructor(options: Omit<AgentViewOptions, 'consulNamespace'>) {
    this.#o = options;
  }

  /** The view of a Consul namespace ('' is the default). */
  of(consulNamespace: string): AgentView {
    let view = this.#views.get(consulNamespace);
    if (view === undefined) this.#views.set(consulNamespace, (view = new AgentView({ ...this.#o, consulNamespace })));
    return view;
  }

  /** Distrusts every view (see {@link AgentView.invalidate}). */
  invalidateAll(): void {
    for (const view of this.#views.values()) view.invalidate();
  }

  /** Bulk reads made so far by every view. */
  get bulkReads(): number {
    let n = 0;
    for (const view of this.#views.values()) n += view.bulkReads;
    return n;
  }
}

/**
 * The Consul agent from the harness's side: blocking queries that timestamp when services and
 * instances become visible (the benchmarks' clock for Consul), the raw agent registration rate
 * with the very bodies the operator sends, and the agent's own count of HTTP calls by path.
 */
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceRegistration } from '../../src/registry/consul/client.ts';
import { heartbeatRegistration, heartbeatServiceId, heartbeatCheckId, instanceRegistration } from '../../src/registry/consul/codec.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';
import { mapBounded } from './stats.ts';

async function consulGet(addr: string, path: string, signal: AbortSignal): Promise<{ index: string; body: unknown }> {
  const res = await fetch(`${addr}${path}`, { signal });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return { index: res.headers.get('X-Consul-Index') ?? '0', body: await res.json() };
}

async function consulPut(addr: string, path: string, body?: unknown): Promise<void> {
  const res = await fetch(`${addr}${path}`, {
    method: 'PUT',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(30_000),
  });
  if (!res.ok) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
}

/**
 * Follows `/v1/catalog/services` with blocking queries and records, for every service name that
 * passes `filter`, when it first appeared and when it last disappeared.
 */
export class CatalogWatch {
  readonly appeared = new Map<string, number>();
  readonly disappeared = new Map<string, number>();
  #present = new Set<string>();
  readonly #abort = new AbortController();
  readonly #loop: Promise<void>;

  constructor(addr: string, filter: (name: string) => boolean) {
    this.#loop = (async () => {
      let index = '0';
      while (!this.#abort.signal.aborted) {
        try {
          const { index: next, body } = await consulGet(addr, `/v1/catalog/services?index=${index}&wait=10s`, this.#abort.signal);
          const at = performance.now();
          index = Number(next) < Number(index) ? '0' : next;
          const now = new Set(Object.keys(body as Record<string, unknown>).filter(filter));
          for (const n of now) if (!this.#present.has(n) && !this.appeared.has(n)) this.appeared.set(n, at);
          for (const n of this.#present) if (!now.has(n)) this.disappeared.set(n, at);
          this.#present = now;
        } catch {
          if (!this.#abort.signal.aborted) await sleep(100);
        }
      }
    })();
  }

  /** Names present at the last answer. */
  get present(): ReadonlySet<string> {
    return this.#present;
  }

  /** Stops the blocking query. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}

/** An instance appearing in or leaving a service's passing results. */
export interface HealthEvent {
  readonly service: string;
  readonly address: string;
  readonly kind: 'up' | 'down';
  readonly at: number;
}

/** Follows `/v1/health/service/<name>?passing=true` for each name with blocking queries. */
export class PassingWatch {
  readonly events: HealthEvent[] = [];
  onEvent: ((e: HealthEvent) => void) | undefined;
  readonly #abort = new AbortController();
  readonly #loops: Promise<void>[];
  readonly #primed: Promise<void>[] = [];

  constructor(addr: string, services: readonly string[]) {
    this.#loops = services.map((service) => {
      let primed!: () => void;
      this.#primed.push(new Promise<void>((r) => (primed = r)));
      return (async () => {
        let index = '0';
        let present = new Set<string>();
        let first = true;
        while (!this.#abort.signal.aborted) {
          try {
            const { index: next, body } = await consulGet(
              addr,
              `/v1/health/service/${encodeURIComponent(service)}?passing=true&index=${index}&wait=30s`,
              this.#abort.signal,
            );
            const at = performance.now();
            index = Number(next) < Number(index) ? '0' : next;
            const now = new Set((body as { Service: { Address: string } }[]).map((e) => e.Service.Address));
            if (!first) {
              for (const a of now) if (!present.has(a)) this.#push({ service, address: a, kind: 'up', at });
              for (const a of present) if (!now.has(a)) this.#push({ service, address: a, kind: 'down', at });
            }
            present = now;
            if (first) primed();
            first = false;
          } catch {
            if (!this.#abort.signal.aborted) await sleep(100);
          }
        }
      })();
    });
  }

  #push(e: HealthEvent): void {
    this.events.push(e);
    this.onEvent?.(e);
  }

  /** Resolves once every service's first answer is in (changes are measured from there on). */
  async primed(): Promise<void> {
    await Promise.all(this.#primed);
  }

  /** Stops every blocking query. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.all(this.#loops);
  }
}

/** Result of {@link rawConsulRegister}. */
export interface RawConsulResult {
  readonly services: number;
  /** performance.now() of the first registration call. */
  readonly startedAt: number;
  /** From the first registration until the agent acknowledged the last. */
  readonly seconds: number;
  readonly servicesPerSecond: number;
  /** Service ids written, heartbeat included, for {@link deregisterAll}. */
  readonly ids: readonly string[];
}

/**
 * The raw limit for Consul: registers `entries` through the agent API, `concurrency` calls in
 * flight (the operator's default), with exactly the bodies the operator would send (a heartbeat
 * service and instances carrying an alias check on it).
 */
export async function rawConsulRegister(
  addr: string,
  entries: readonly RegistryEntry[],
  o: { clusterId: string; registryNamespace: string; name: (e: RegistryEntry) => string; ttlSeconds: number; concurrency: number },
): Promise<RawConsulResult> {
  const hbId = heartbeatServiceId(o.clusterId, o.registryNamespace);
  const hb = heartbeatRegistration({
    clusterId: o.clusterId,
    registryNamespace: o.registryNamespace,
    name: `${o.registryNamespace}-kube-registrar-heartbeat`,
    ttlSeconds: o.ttlSeconds,
    deregisterAfterSeconds: 120,
  });
  const bodies = entries.map((e) =>
    instanceRegistration(e, { clusterId: o.clusterId, name: o.name(e), heartbeatServiceId: hbId, deregisterAfterSeconds: 90 }),
  );
  await consulPut(addr, '/v1/agent/service/register?replace-existing-checks=true', hb);
  await consulPut(addr, `/v1/agent/check/pass/${encodeURIComponent(heartbeatCheckId(hbId))}`);
  const startedAt = performance.now();
  await mapBounded(bodies, o.concurrency, (b) => consulPut(addr, '/v1/agent/service/register?replace-existing-checks=true', b));
  const seconds = (performance.now() - startedAt) / 1000;
  return {
    services: entries.length,
    startedAt,
    seconds,
    servicesPerSecond: entries.length / seconds,
    ids: [...bodies.map((b) => b.ID), hbId],
  };
}

/** Deregisters services by id, `concurrency` at a time, so the next phase starts from an empty agent. */
export async function deregisterAll(addr: string, ids: readonly string[], concurrency: number): Promise<void> {
  await mapBounded(ids, concurrency, (id) => consulPut(addr, `/v1/agent/service/deregister/${encodeURIComponent(id)}`));
}

/** Length of the agent's telemetry intervals. */
const INTERVAL_MS = 10_000;

/**
 * Counts the agent's HTTP calls by `METHOD path` (Consul's normalised path, e.g.
 * `PUT v1_agent_check_pass_`) from its in-memory telemetry, which keeps 10-second intervals and
 * shows the last finished one; polling every few seconds sees each interval at least once.
 */
export class ConsulCallCounter {
  readonly #intervals = new Map<string, Map<string, number>>();
  readonly #abort = new AbortController();
  readonly #loop: Promise<void>;

  constructor(addr: string) {
    this.#loop = (async () => {
      while (!this.#abort.signal.aborted) {
        try {
          const { body } = await consulGet(addr, '/v1/agent/metrics', this.#abort.signal);
          const m = body as { Timestamp: string; Samples: { Name: string; Count: number; Labels: Record<string, string> }[] };
          const counts = new Map<string, number>();
          for (const s of m.Samples)
            if (s.Name === 'consul.api.http') counts.set(`${s.Labels['method'] ?? ''} ${s.Labels['path'] ?? ''}`, s.Count);
          this.#intervals.set(m.Timestamp, counts);
        } catch {
          // A missed poll is caught up by the next one within the same interval.
        }
        await sleep(3000, undefined, { signal: this.#abort.signal }).catch(() => undefined);
      }
    })();
  }

  /**
   * Calls in the finished intervals that lie wholly between two wall-clock times (Date.now()),
   * summed by `METHOD path`, and how many intervals that is.
   */
  callsBetween(fromMs: number, toMs: number): { intervals: number; seconds: number; counts: Map<string, number> } {
    const counts = new Map<string, number>();
    let intervals = 0;
    for (const [stamp, c] of this.#intervals) {
      // Go's time format, e.g. "2026-11-21 16:00:30 +0000 UTC".
      const start = Date.parse(stamp.replace(' +0000 UTC', 'Z').replace(' ', 'T'));
      if (!(start >= fromMs && start + INTERVAL_MS <= toMs)) continue;
      intervals++;
      for (const [k, v] of c) counts.set(k, (counts.get(k) ?? 0) + v);
    }
    return { intervals, seconds: (intervals * INTERVAL_MS) / 1000, counts };
  }

  /** Stops polling. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}

/**
 * The raw limit of scenario 2 for Consul: a pool of instances registered straight through the agent
 * with exactly the operator's bodies (alias check on a heartbeat of their own, whose TTL outlasts the
 * benchmark), each of which can be registered or deregistered one call at a time.
 */
export class RawConsulPool {
  /** Consul service names of the pool, for a {@link PassingWatch}. */
  readonly names: readonly string[];
  readonly #addr: string;
  readonly #bodies: ReadonlyMap<string, ReturnType<typeof instanceRegistration>>;

  private constructor(addr: string, bodies: ReadonlyMap<string, ReturnType<typeof instanceRegistration>>) {
    this.#addr = addr;
    this.#bodies = bodies;
    this.names = [...new Set([...bodies.values()].map((b) => b.Name))];
  }

  /**
   * Registers the heartbeat and every entry (`concurrency` calls in flight). Keys are
   * `<Consul name>|<address>`, what a {@link PassingWatch} event names.
   */
  static async create(
    addr: string,
    entries: readonly RegistryEntry[],
    o: { clusterId: string; registryNamespace: string; name: (e: RegistryEntry) => string; concurrency: number },
  ): Promise<RawConsulPool> {
    const hbId = heartbeatServiceId(o.clusterId, o.registryNamespace);
    const hb = heartbeatRegistration({
      clusterId: o.clusterId,
      registryNamespace: o.registryNamespace,
      name: `${o.registryNamespace}-kube-registrar-heartbeat`,
      ttlSeconds: 3600,
      deregisterAfterSeconds: 3720,
    });
    await consulPut(addr, '/v1/agent/service/register?replace-existing-checks=true', hb);
    await consulPut(addr, `/v1/agent/check/pass/${encodeURIComponent(heartbeatCheckId(hbId))}`);
    const bodies = new Map(
      entries.map((e) => {
        const body = instanceRegistration(e, {
          clusterId: o.clusterId,
          name: o.name(e),
          heartbeatServiceId: hbId,
          deregisterAfterSeconds: 90,
        });
        return [`${body.Name}|${body.Address}`, body] as const;
      }),
    );
    await mapBounded([...bodies.values()], o.concurrency, (b) =>
      consulPut(addr, '/v1/agent/service/register?replace-existing-checks=true', b),
    );
    return new RawConsulPool(addr, bodies);
  }

  /** Every key of the pool. */
  keys(): string[] {
    return [...this.#bodies.keys()];
  }

  /** One agent call: registers the instance `key` (the operator's body) or deregisters it. */
  async set(key: string, registered: boolean): Promise<void> {
    const body = this.#bodies.get(key);
    if (body === undefined) throw new Error(`no instance ${key} in the raw pool`);
    if (registered) await consulPut(this.#addr, '/v1/agent/service/register?replace-existing-checks=true', body);
    else await consulPut(this.#addr, `/v1/agent/service/deregister/${encodeURIComponent(body.ID)}`);
  }
}

/** One agent registration with the operator's query (`replace-existing-checks`), as the backend sends it. */
export async function agentRegister(addr: string, body: ServiceRegistration): Promise<void> {
  await consulPut(addr, '/v1/agent/service/register?replace-existing-checks=true', body);
}

/** Passes the TTL check `checkId`, as the operator's heartbeat does. */
export async function agentPassCheck(addr: string, checkId: string): Promise<void> {
  await consulPut(addr, `/v1/agent/check/pass/${encodeURIComponent(checkId)}`);
}

/**
 * Pid of the Consul agent started with `-node=<nodeName>` (the bed names its agent after its
 * directory), found in /proc because the bed does not hand its processes out; undefined when none is.
 */
export async function findConsulAgentPid(nodeName: string): Promise<number | undefined> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    // A process may exit between the listing and the read.
    const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[1] === 'agent' && argv.includes(`-node=${nodeName}`)) return Number(entry);
  }
  return undefined;
}

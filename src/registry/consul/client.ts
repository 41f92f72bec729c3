/**
 * The small slice of the Consul agent HTTP API the backend needs, on Node's global fetch.
 *
 * A hand-written client rather than the `consul` npm package, because that package drops fields
 * the backend writes and reads back (Weights, Namespace). Every call carries a deadline
 * (`AbortSignal.timeout`), and failures come back as {@link ConsulHttpError} with the HTTP status
 * and Consul's own message, which is usually the most useful part for a user (ACL denials name
 * the missing permission).
 */
import type { WriteFence } from '../fence.ts';

/** How to reach and authenticate to one Consul agent. */
export interface ConsulClientOptions {
  /** Agent URL, `http(s)://host:port`. */
  readonly address: string;
  /** ACL token sent as `X-Consul-Token`; absent when ACLs are off. */
  readonly token?: string;
  /** Deadline of every call in milliseconds. */
  readonly callTimeoutMs: number;
  /** Refuses every write (PUT) once closed (leadership lost). */
  readonly fence?: WriteFence;
}

/** Health check weights: how much traffic an instance gets while passing or warning. */
export interface ServiceWeights {
  readonly Passing: number;
  readonly Warning: number;
}

/** A service as `GET /v1/agent/services` returns it (the fields the backend uses). */
export interface AgentServiceRecord {
  readonly ID: string;
  readonly Service: string;
  readonly Tags: readonly string[];
  readonly Meta: Readonly<Record<string, string>>;
  readonly Address: string;
  readonly Port: number;
  readonly Weights: ServiceWeights;
  /** Consul Enterprise namespace; absent on open-source Consul. */
  readonly Namespace?: string;
}

/** A check as `GET /v1/agent/checks` returns it (the fields the backend uses). */
export interface AgentCheckRecord {
  readonly CheckID: string;
  readonly ServiceID: string;
  readonly Status: string;
  /** `ttl`, `alias`, `http`, ...; empty for checks Consul itself manages. */
  readonly Type: string;
  /** The agent's current output of the check (which it syncs to the catalog lazily, see updateTtl). */
  readonly Output: string;
}

/** A check in a service registration. */
export interface CheckDefinition {
  readonly CheckID: string;
  readonly Name: string;
  readonly Notes?: string;
  /** TTL check: critical unless passed within this duration, e.g. `30s`. */
  readonly TTL?: string;
  /** Alias check: mirrors the health of this service (on the same agent). */
  readonly AliasService?: string;
  /** Initial status; Consul keeps the current status when a check is registered again. */
  readonly Status?: 'passing' | 'warning' | 'critical';
  /** Reap the service once this check has been critical this long (at least `1m`). */
  readonly DeregisterCriticalServiceAfter?: string;
}

/** Body of `PUT /v1/agent/service/register`. */
export interface ServiceRegistration {
  readonly ID: string;
  readonly Name: string;
  readonly Tags: readonly string[];
  readonly Address: string;
  readonly Port: number;
  readonly Meta: Readonly<Record<string, string>>;
  readonly Weights: ServiceWeights;
  readonly Checks: readonly CheckDefinition[];
}

/** What the backend needs from a Consul agent. `namespace` '' means the default namespace. */
export interface ConsulAgentClient {
  /** The agent's datacenter (needs `agent:read`). */
  agentDatacenter(): Promise<string>;
  /** Local services matching a filter expression; `namespace` '*' means every namespace (Enterprise). */
  services(filter: string, namespace: string): Promise<AgentServiceRecord[]>;
  /** Local checks matching a filter expression. */
  checks(filter: string, namespace: string): Promise<AgentCheckRecord[]>;
  /** Registers or replaces a service with exactly the given checks. */
  register(service: ServiceRegistration, namespace: string): Promise<void>;
  /** Deregisters a service; resolves false when the agent did not know it. */
  deregister(serviceId: string, namespace: string): Promise<boolean>;
  /** Passes a TTL check; a check the agent does not know is a {@link ConsulHttpError} with status 404. */
  passTtl(checkId: string, note: string, namespace: string): Promise<void>;
  /**
   * Sets a TTL check's status and output (`PUT /v1/agent/check/update/<checkId>`). The agent shows
   * them at once; the catalog gets a new status at once but, when the status stays the same, the new
   * output only with the next registration or within the agent's check_update_interval.
   */
  updateTtl(checkId: string, status: 'passing' | 'warning' | 'critical', output: string, namespace: string): Promise<void>;
}

/**
 * A failed call: `status` is the HTTP status, or 0 when no answer came (connection refused,
 * timeout); `consulMessage` is the body Consul answered with.
 */
export class ConsulHttpError extends Error {
  override readonly name = 'ConsulHttpError';
  readonly status: number;
  readonly method: string;
  readonly path: string;
  readonly consulMessage: string;

  constructor(method: string, path: string, status: number, consulMessage: string, options?: { cause?: unknown }) {
    const what = status === 0 ? `got no answer (${consulMessage})` : `answered ${status}: ${consulMessage}`;
    super(`Consul ${method} ${path} ${what}`, options);
    this.method = method;
    this.path = path;
    this.status = status;
    this.consulMessage = consulMessage;
  }
}

/** Whether a failed call may succeed when simply tried again: no answer, throttling, or a server error. */
export function isTransientConsulError(err: unknown): boolean {
  return err instanceof ConsulHttpError && (err.status === 0 || err.status === 429 || err.status >= 500);
}

function asRecord(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function asString(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function asStringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(asRecord(value))) if (typeof v === 'string') out[k] = v;
  return out;
}

function toService(value: unknown): AgentServiceRecord {
  const s = asRecord(value);
  const w = asRecord(s['Weights']);
  const ns = s['Namespace'];
  return {
    ID: asString(s['ID']),
    Service: asString(s['Service']),
    Tags: Array.isArray(s['Tags']) ? s['Tags'].filter((t): t is string => typeof t === 'string') : [],
    Meta: asStringMap(s['Meta']),
    Address: asString(s['Address']),
    Port: typeof s['Port'] === 'number' ? s['Port'] : 0,
    Weights: { Passing: typeof w['Passing'] === 'number' ? w['Passing'] : 1, Warning: typeof w['Warning'] === 'number' ? w['Warning'] : 1 },
    ...(typeof ns === 'string' ? { Namespace: ns } : {}),
  };
}

function toCheck(value: unknown): AgentCheckRecord {
  const c = asRecord(value);
  return {
    CheckID: asString(c['CheckID']),
    ServiceID: asString(c['ServiceID']),
    Status: asString(c['Status']),
    Type: asString(c['Type']),
    Output: asString(c['Output']),
  };
}

/** Creates a {@link ConsulAgentClient} talking to `options.address`. */
export function createConsulAgentClient(options: ConsulClientOptions): ConsulAgentClient {
  let base: URL;
  try {
    base = new URL(options.address);
  } catch (err: unknown) {
    throw new RangeError(`Consul address ${JSON.stringify(options.address)} is not a URL: set spec.consul.address to http(s)://host:port`, {
      cause: err,
    });
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new RangeError(`Consul address ${JSON.stringify(options.address)} must start with http:// or https://`);
  }
  const root = base.href.replace(/\/+$/, '');
  const fence = options.fence;
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (options.token !== undefined && options.token !== '') headers['X-Consul-Token'] = options.token;

  async function call(method: 'GET' | 'PUT', path: string, query: Record<string, string>, body?: unknown): Promise<unknown> {
    const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== ''));
    const qs = q.size > 0 ? `?${q.toString()}` : '';
    if (method === 'PUT') fence?.check(`Consul ${method} ${path}`);
    let res: Response;
    try {
      res = await fetch(`${root}${path}${qs}`, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(options.callTimeoutMs),
      });
    } catch (err: unknown) {
      const why =
        err instanceof Error && err.name === 'TimeoutError'
          ? `no answer within ${options.callTimeoutMs} ms`
          : err instanceof Error
            ? err.cause instanceof Error
              ? err.cause.message
              : err.message
            : String(err);
      throw new ConsulHttpError(method, path, 0, `${why}; is the agent at ${root} reachable?`, { cause: err });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err: unknown) {
      throw new ConsulHttpError(method, path, 0, `the answer broke off: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
    if (!res.ok) throw new ConsulHttpError(method, path, res.status, text.trim() || res.statusText);
    if (text === '') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch (err: unknown) {
      throw new ConsulHttpError(method, path, res.status, `answer is not JSON: ${text.slice(0, 200)}`, { cause: err });
    }
  }

  const seg = encodeURIComponent;
  return {
    async agentDatacenter() {
      const self = asRecord(await call('GET', '/v1/agent/self', {}));
      return asString(asRecord(self['Config'])['Datacenter']);
    },
    async services(filter, namespace) {
      return Object.values(asRecord(await call('GET', '/v1/agent/services', { filter, ns: namespace }))).map(toService);
    },
    async checks(filter, namespace) {
      return Object.values(asRecord(await call('GET', '/v1/agent/checks', { filter, ns: namespace }))).map(toCheck);
    },
    async register(service, namespace) {
      // replace-existing-checks: the body's checks are the whole set, so a check we stopped
      // writing (e.g. the weight-0 drain check) goes away with the same call.
      await call('PUT', '/v1/agent/service/register', { 'replace-existing-checks': 'true', ns: namespace }, service);
    },
    async deregister(serviceId, namespace) {
      try {
        await call('PUT', `/v1/agent/service/deregister/${seg(serviceId)}`, { ns: namespace });
        return true;
      } catch (err: unknown) {
        if (err instanceof ConsulHttpError && err.status === 404) return false;
        throw err;
      }
    },
    async passTtl(checkId, note, namespace) {
      await call('PUT', `/v1/agent/check/pass/${seg(checkId)}`, { note, ns: namespace });
    },
    async updateTtl(checkId, status, output, namespace) {
      await call('PUT', `/v1/agent/check/update/${seg(checkId)}`, { ns: namespace }, { Status: status, Output: output });
    },
  };
}

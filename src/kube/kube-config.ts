/**
 * The KubeConfig the operator talks to the apiserver with: @kubernetes/client-node's, with three
 * changes every production client needs.
 *
 * - One connection pool, over HTTP/1.1. client-node builds a new undici Agent for every API
 *   request (applySecurityAuthentication → createDispatcher), and a new https.Agent without
 *   keep-alive for the `applyToHTTPSOptions` the operator's transport (transport.ts) uses, so every
 *   status patch, finalizer patch and event paid a fresh TLS handshake; at 10,000
 *   ServiceInstances that was most of the operator's CPU. Here the pool is kept per cluster and TLS
 *   material, and connections are kept alive; when the material changes (a rotated CA or client
 *   certificate is read from its file on every request), a new pool is built and the old one
 *   retired: its idle connections closed, its busy ones closed when their request is done.
 *   Both kinds are pooled: the https.Agent for the operator's own requests and watches, the undici
 *   dispatcher for anything that uses client-node's generated clients over this KubeConfig.
 * - A deadline on every request. Without one, a request caught on a connection that breaks at the
 *   wrong moment waits for ever (seen when the apiserver became unreachable mid-request), and the
 *   reconcile awaiting it keeps its key busy, so that ServiceInstance is never reconciled again.
 *   Watches keep their idle timeout instead (they pass their own signal).
 * - HTTP/1.1 only (see createDispatcherOptions).
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions } from 'node:https';
import type { Cluster, DispatcherOptions, RequestContext } from '@kubernetes/client-node';
import { KubeConfig } from './client.ts';

/** Deadline of every Kubernetes API request other than watches. */
export const KUBE_REQUEST_TIMEOUT_MS = 30_000;

/** An idle pooled connection to the apiserver is closed after this long (below common server and load-balancer idle timeouts). */
export const KUBE_IDLE_CONNECTION_MS = 15_000;

/** What client-node's KubeConfig.createDispatcher returns: an undici Dispatcher, or undefined for none. */
type Dispatcher = unknown;
type CreateDispatcher = (cluster: unknown, agentOptions: object) => Dispatcher;
/** client-node's KubeConfig.createAgent: the agent `applyToHTTPSOptions` hands out. */
type CreateAgent = (cluster: Cluster | null, agentOptions: AgentOptions) => HttpAgent;

/** What a dispatcher is built from: the cluster and the TLS options (key material included). */
interface DispatcherInputs {
  readonly cluster: string;
  readonly options: Readonly<Record<string, unknown>>;
}

function inputsOf(cluster: unknown, agentOptions: object): DispatcherInputs {
  return { cluster: JSON.stringify(cluster ?? null), options: { ...(agentOptions as Record<string, unknown>) } };
}

/** Whether two sets of inputs would build the same dispatcher; key material is compared byte by byte. */
export function sameDispatcherInputs(a: DispatcherInputs, b: DispatcherInputs): boolean {
  if (a.cluster !== b.cluster) return false;
  const keys = Object.keys(a.options);
  if (keys.length !== Object.keys(b.options).length) return false;
  return keys.every((k) => {
    const x = a.options[k];
    const y = b.options[k];
    if (Buffer.isBuffer(x) && Buffer.isBuffer(y)) return x.equals(y);
    return x === y || JSON.stringify(x ?? null) === JSON.stringify(y ?? null);
  });
}

/** Closes a dispatcher that is no longer handed out, once its requests in flight are done. */
function retire(dispatcher: Dispatcher): void {
  const closable = dispatcher as { close?: () => Promise<void> } | undefined;
  void closable?.close?.().catch(() => undefined);
}

/**
 * Retires an agent that is no longer handed out: its idle connections are closed now, and each
 * busy one when its request is done (an agent that keeps no free sockets closes them).
 */
function retireAgent(agent: HttpAgent): void {
  agent.maxFreeSockets = 0;
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
}

/** One pool in use, rebuilt (and the old one retired) when the inputs it was built from change. */
class PoolSlot<T> {
  #current: { readonly inputs: DispatcherInputs; readonly pool: T } | undefined;
  readonly #retire: (pool: T) => void;

  constructor(retire: (pool: T) => void) {
    this.#retire = retire;
  }

  get(inputs: DispatcherInputs, build: () => T): T {
    if (this.#current && sameDispatcherInputs(this.#current.inputs, inputs)) return this.#current.pool;
    const previous = this.#current;
    const pool = build();
    this.#current = { inputs, pool };
    if (previous) this.#retire(previous.pool);
    return pool;
  }
}

/** A KubeConfig with a shared connection pool and a deadline on every request (see the module comment). */
export class OperatorKubeConfig extends KubeConfig {
  readonly #dispatchers = new PoolSlot<Dispatcher>(retire);
  readonly #agents = new PoolSlot<HttpAgent>(retireAgent);
  readonly #timeoutMs: number;

  constructor(timeoutMs = KUBE_REQUEST_TIMEOUT_MS) {
    super();
    this.#timeoutMs = timeoutMs;
    // createDispatcher and createAgent are private in client-node's typings, so they are wrapped
    // on the instance rather than overridden; test/integration/kube-client.test.ts fails if
    // client-node stops calling them.
    const self = this as unknown as { createDispatcher: CreateDispatcher; createAgent: CreateAgent };
    const build = self.createDispatcher.bind(this);
    self.createDispatcher = (cluster, agentOptions) =>
      this.#dispatchers.get(inputsOf(cluster, agentOptions), () => build(cluster, agentOptions));
    const buildAgent = self.createAgent.bind(this);
    self.createAgent = (cluster, agentOptions) =>
      // Proxies keep client-node's own agents (hpagent, socks-proxy-agent).
      cluster?.proxyUrl ? buildAgent(cluster, agentOptions) : this.#sharedAgent(cluster, agentOptions);
  }

  /** The deadline of every request other than watches, in milliseconds. */
  get requestTimeoutMs(): number {
    return this.#timeoutMs;
  }

  #sharedAgent(cluster: Cluster | null, agentOptions: AgentOptions): HttpAgent {
    const defined = Object.fromEntries(Object.entries(agentOptions).filter(([, v]) => v !== undefined)) as AgentOptions;
    return this.#agents.get(inputsOf(cluster, defined), () => {
      const pooled = { keepAlive: true, keepAliveMsecs: 30_000, timeout: KUBE_IDLE_CONNECTION_MS, scheduling: 'lifo' as const };
      return cluster?.server.startsWith('http:') ? new HttpAgent(pooled) : new HttpsAgent({ ...defined, ...pooled });
    });
  }

  /**
   * HTTP/1.1 only. Over HTTP/2 every request shares one connection, and a connection that went
   * half-open in a network partition is never given up (an aborted request only resets its own
   * stream): after the partition healed, every request still waited for its deadline, for good.
   * Over HTTP/1.1 a request that hits its deadline takes its connection down with it.
   */
  override createDispatcherOptions(cluster: Cluster | null, agentOptions: AgentOptions): DispatcherOptions {
    const options = super.createDispatcherOptions(cluster, agentOptions);
    if (options.type !== 'agent') return options;
    return { ...options, connect: { ...options.connect, allowH2: false } as typeof options.connect };
  }

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    if (context.getSignal() === undefined) context.setSignal(AbortSignal.timeout(this.#timeoutMs));
  }
}

/**
 * The KubeConfig the operator talks to the apiserver with: @kubernetes/client-node's, with two
 * changes every production client needs.
 *
 * - One connection pool, over HTTP/1.1 (see createDispatcherOptions). client-node 2.0 builds a new undici Agent for every API request
 *   (applySecurityAuthentication → createDispatcher), so every status patch, finalizer patch and
 *   event paid a fresh TLS handshake and left an idle socket behind; at 10,000 ServiceInstances
 *   that was most of the operator's CPU. Here the dispatcher is kept per cluster and TLS material,
 *   so connections are reused; when the material changes (a rotated CA or client certificate is
 *   read from its file on every request), a new pool is built and the old one closed.
 * - A deadline on every request. Without one, a request caught on a connection that breaks at the
 *   wrong moment waits for ever (seen when the apiserver became unreachable mid-request), and the
 *   reconcile awaiting it keeps its key busy, so that ServiceInstance is never reconciled again.
 *   Watches keep client-node's idle timeout instead (they pass their own signal).
 */
import type { AgentOptions } from 'node:https';
import type { Cluster, DispatcherOptions, RequestContext } from '@kubernetes/client-node';
import { KubeConfig } from './client.ts';

/** Deadline of every Kubernetes API request other than watches. */
export const KUBE_REQUEST_TIMEOUT_MS = 30_000;

/** What client-node's KubeConfig.createDispatcher returns: an undici Dispatcher, or undefined for none. */
type Dispatcher = unknown;
type CreateDispatcher = (cluster: unknown, agentOptions: object) => Dispatcher;

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

/** A KubeConfig with a shared connection pool and a deadline on every request (see the module comment). */
export class OperatorKubeConfig extends KubeConfig {
  #current: { readonly inputs: DispatcherInputs; readonly dispatcher: Dispatcher } | undefined;
  readonly #timeoutMs: number;

  constructor(timeoutMs = KUBE_REQUEST_TIMEOUT_MS) {
    super();
    this.#timeoutMs = timeoutMs;
    // createDispatcher is private in client-node's typings, so it is wrapped on the instance
    // rather than overridden; test/integration/kube-client.test.ts fails if client-node stops calling it.
    const self = this as unknown as { createDispatcher: CreateDispatcher };
    const build = self.createDispatcher.bind(this);
    self.createDispatcher = (cluster, agentOptions) => this.#shared(build, cluster, agentOptions);
  }

  #shared(build: CreateDispatcher, cluster: unknown, agentOptions: object): Dispatcher {
    const inputs = inputsOf(cluster, agentOptions);
    if (this.#current && sameDispatcherInputs(this.#current.inputs, inputs)) return this.#current.dispatcher;
    const previous = this.#current;
    const dispatcher = build(cluster, agentOptions);
    this.#current = { inputs, dispatcher };
    if (previous) retire(previous.dispatcher);
    return dispatcher;
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

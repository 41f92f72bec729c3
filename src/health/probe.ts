/**
 * One probe of one endpoint: HTTP(S), TCP or gRPC health, always to the endpoint's own address,
 * always bounded by a timeout, never throwing.
 */
import { performance } from 'node:perf_hooks';
import { inspect } from 'node:util';

import { probeGrpc } from './grpc-probe.ts';
import { probeHttp } from './http-probe.ts';
import type { ProbeVerdict } from './probe-verdict.ts';
import type { EndpointAddress } from './state.ts';
import { probeTcp } from './tcp-probe.ts';
import type { ResolvedHealthCheck } from './types.ts';

/** The outcome of one probe. */
export interface ProbeResult {
  readonly healthy: boolean;
  /** Why, for status conditions and events: `status 503, want 200-399`, `timed out after 1000 ms`. */
  readonly message: string;
  /** How long the probe took, in milliseconds. */
  readonly durationMs: number;
  /** True when the probe failed because it had no answer within its timeout. */
  readonly timedOut: boolean;
}

/** How one probe is bounded and measured. */
export interface ProbeOptions {
  /** Cancels the probe (e.g. on shutdown or loss of leadership); the result is then unhealthy. */
  readonly signal?: AbortSignal;
  /** Overrides `check.timeoutSeconds`; tests use it to stay fast. */
  readonly timeoutMs?: number;
  /** Monotonic milliseconds, injected so tests can control time; default performance.now. */
  readonly now?: () => number;
}

/**
 * Probes `endpoint` as `check` says and reports whether it is healthy.
 *
 * A probe that has no answer within the timeout is a failure saying so. Every error (refused
 * connection, TLS failure, bad body, cancellation) becomes an unhealthy result with a message;
 * the returned promise never rejects.
 */
export async function probe(endpoint: EndpointAddress, check: ResolvedHealthCheck, options: ProbeOptions = {}): Promise<ProbeResult> {
  const now = options.now ?? (() => performance.now());
  const timeoutMs = options.timeoutMs ?? check.timeoutSeconds * 1000;
  const started = now();
  // One controller and one timer per probe (cheaper than AbortSignal.timeout and .any, which
  // matters at a hundred probes a second): aborted by the timeout or by the caller's signal.
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new Error(`timed out after ${timeoutMs} ms`));
  }, timeoutMs);
  const cancel = (): void => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) cancel();
  else options.signal?.addEventListener('abort', cancel, { once: true });
  const port = check.probe.port ?? endpoint.port;
  let verdict: ProbeVerdict;
  try {
    verdict = await untilAborted(runProbe(endpoint.address, port, check, timeoutMs, controller.signal), controller.signal);
  } catch (error: unknown) {
    verdict = { healthy: false, message: describeFailure(error, timedOut, timeoutMs, options.signal?.aborted ?? false) };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', cancel);
  }
  return { ...verdict, durationMs: Math.max(0, now() - started), timedOut: !verdict.healthy && timedOut };
}

function runProbe(host: string, port: number, check: ResolvedHealthCheck, timeoutMs: number, signal: AbortSignal): Promise<ProbeVerdict> {
  switch (check.probe.kind) {
    case 'http':
      return probeHttp(host, port, check.probe, signal);
    case 'tcp':
      return probeTcp(host, port, signal);
    case 'grpc':
      return probeGrpc(host, port, check.probe.service, timeoutMs, signal);
  }
}

/**
 * Settles with `work`, or rejects as soon as `signal` aborts even if `work` ignores it, so a timeout
 * is a failure whatever the protocol code does. Each protocol still closes its own socket on abort.
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      work.catch(() => undefined);
      return;
    }
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function describeFailure(error: unknown, timedOut: boolean, timeoutMs: number, cancelled: boolean): string {
  if (timedOut) return `timed out after ${timeoutMs} ms without an answer`;
  if (cancelled) return 'probe cancelled before it finished';
  return describeError(error);
}

/** Joins the messages of an error and its causes: `fetch failed: connect ECONNREFUSED 127.0.0.1:9`. */
function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    const message = current instanceof Error ? current.message : inspect(current);
    if (message !== '' && !parts.includes(message)) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.length === 0 ? 'probe failed for an unknown reason' : parts.join(': ');
}

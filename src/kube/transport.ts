/**
 * Requests and watches to the Kubernetes API over `node:http(s)`, with client-node's KubeConfig
 * for everything else: `applyToHTTPSOptions` adds the credentials of every auth provider, the TLS
 * material and the agent (a proxy agent when the kubeconfig names a proxy).
 *
 * Why not client-node's own transport: its requests and its Watch go through undici's `fetch`,
 * whose code and WHATWG streams cost the operator about 15 MB of memory for the life of the
 * process, and every watch event passes a web stream, a readline interface and a string copy. The
 * operator makes plain JSON requests and reads newline-delimited watch events; `node:https`,
 * already loaded for TLS, does both. Only HTTP/1.1 is spoken: a request that hits its deadline
 * destroys its connection, so a connection left half-open by a partition is never used again
 * (over HTTP/2 every request shared one such connection for good).
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { exchange, retryOnStaleConnection } from '../http-exchange.ts';
import type { KubeConfig } from './client.ts';

/** One request, before credentials are added. */
export interface KubeHttpRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Absolute API path with its query, e.g. `/api/v1/pods?limit=500`; segments already encoded. */
  readonly pathAndQuery: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  /** Aborts the request (and destroys its connection). */
  readonly signal?: AbortSignal;
}

/** The answer: status, headers and the body as a stream not yet read. */
export interface KubeHttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: IncomingMessage;
}

/** Methods sent again after a stale kept-alive connection; a POST is not (it may create twice). */
const RETRIED = new Set(['GET', 'PUT', 'PATCH', 'DELETE']);

/** Sends one request with the current credentials and resolves when the status line arrived. */
export function kubeHttp(kc: KubeConfig, req: KubeHttpRequest): Promise<KubeHttpResponse> {
  return retryOnStaleConnection(
    () => sendOnce(kc, req),
    () => RETRIED.has(req.method) && !req.signal?.aborted,
  );
}

async function sendOnce(kc: KubeConfig, req: KubeHttpRequest): Promise<KubeHttpResponse> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster: set current-context, or pass --kubeconfig');
  const url = new URL(cluster.server.replace(/\/+$/, '') + req.pathAndQuery);
  const options: RequestOptions & { headers: Record<string, string> } = {
    method: req.method,
    headers: { Accept: 'application/json', ...req.headers },
  };
  // Credentials (every auth provider), TLS material and the agent, as client-node sets them.
  await kc.applyToHTTPSOptions(options);
  if (req.body !== undefined) options.headers['Content-Length'] = String(Buffer.byteLength(req.body));
  if (req.signal) options.signal = req.signal;
  const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
  const res = await exchange((onResponse) => send(url, options, onResponse), req.body);
  return { status: res.statusCode ?? 0, headers: res.headers, body: res };
}

/** A watch that has been silent this long is ended with a TimeoutError, as client-node's Watch does. */
export const WATCH_IDLE_TIMEOUT_MS = 30_000;

/**
 * Starts a watch as client-node's `Watch.watch` does, over {@link kubeHttp}: `onEvent` gets every
 * event's type and object, `done` is called once when the watch ends (null for a clean end by the
 * server, a TimeoutError after {@link WATCH_IDLE_TIMEOUT_MS} of silence, an AbortError when
 * aborted, an error with `statusCode` when the server refused the watch), and the returned
 * controller aborts it.
 */
export async function watchOverHttp(
  kc: KubeConfig,
  path: string,
  params: Readonly<Record<string, string | number | boolean>>,
  onEvent: (phase: string, obj: unknown) => void,
  done: (err: unknown) => void,
  idleTimeoutMs = WATCH_IDLE_TIMEOUT_MS,
): Promise<AbortController> {
  const query = new URLSearchParams({ watch: 'true' });
  for (const [k, v] of Object.entries(params)) query.set(k, String(v));
  const controller = new AbortController();
  let ended = false;
  let timer: NodeJS.Timeout | undefined;
  const end = (err: unknown): void => {
    if (ended) return;
    ended = true;
    if (timer !== undefined) clearTimeout(timer);
    controller.abort();
    done(err);
  };
  const idle = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => end(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), idleTimeoutMs);
    timer.unref();
  };
  controller.signal.addEventListener('abort', () => end(new DOMException('This operation was aborted', 'AbortError')), { once: true });
  idle();
  let res: KubeHttpResponse;
  try {
    res = await kubeHttp(kc, { method: 'GET', pathAndQuery: `${path}?${query.toString()}`, signal: controller.signal });
  } catch (err: unknown) {
    end(err);
    return controller;
  }
  if (res.status !== 200) {
    res.body.resume();
    const err = new Error(`watch ${path}: HTTP ${res.status}`) as Error & { statusCode: number };
    err.statusCode = res.status;
    end(err);
    return controller;
  }
  idle();
  let partial = '';
  res.body.setEncoding('utf8');
  res.body.on('data', (chunk: string) => {
    if (ended) return;
    idle();
    let start: number;
    let nl = chunk.indexOf('\n');
    if (nl < 0) {
      partial += chunk;
      return;
    }
    let line = partial + chunk.slice(0, nl);
    partial = '';
    for (;;) {
      deliver(line, onEvent);
      if (ended) return;
      start = nl + 1;
      nl = chunk.indexOf('\n', start);
      if (nl < 0) break;
      line = chunk.slice(start, nl);
    }
    partial = chunk.slice(start);
  });
  res.body.once('end', () => {
    if (partial) deliver(partial, onEvent);
    end(null);
  });
  res.body.once('error', (err) => end(err));
  res.body.once('close', () => end(null));
  return controller;
}

/** Parses one line of a watch stream and hands its event on; a line that is not an event is skipped. */
function deliver(line: string, onEvent: (phase: string, obj: unknown) => void): void {
  if (line.trim() === '') return;
  let event: { type?: unknown; object?: unknown };
  try {
    event = JSON.parse(line) as { type?: unknown; object?: unknown };
  } catch {
    return;
  }
  if (typeof event.type === 'string') onEvent(event.type, event.object);
}

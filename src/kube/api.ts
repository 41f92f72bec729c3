/**
 * Kubernetes API requests as plain JSON, over client-node's KubeConfig (its authentication and TLS
 * material) and the operator's own HTTP transport (transport.ts). Errors are client-node's
 * ApiException, with the HTTP status in `code`.
 *
 * Why not the generated clients: loading them costs tens of MB for the life of the process (see
 * client.ts), and they turn every response into instances of model classes (a page of 500 pods
 * becomes some 20,000 objects and Dates) that the informers throw away at once for the few fields
 * they keep. Plain JSON is what the watch already delivers, so listed and watched objects are now
 * the same shape.
 */
import { ApiException } from '@kubernetes/client-node/dist/gen/apis/exception.js';
import type { KubeConfig } from './client.ts';
import { KUBE_REQUEST_TIMEOUT_MS, OperatorKubeConfig } from './kube-config.ts';
import { readBody } from '../http-exchange.ts';
import { kubeHttp } from './transport.ts';

/** Content types of PATCH bodies. */
export const PatchType = {
  Merge: 'application/merge-patch+json',
  Json: 'application/json-patch+json',
} as const;

/** One request. */
export interface KubeRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Absolute API path, e.g. `/api/v1/namespaces/default/pods`; path segments already encoded. */
  readonly path: string;
  /** Query parameters; undefined ones are left out. */
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly body?: unknown;
  /** Content type of the body; JSON unless a patch type is given. */
  readonly contentType?: string;
  /** Ends the request early, on top of KubeConfig's own deadline. */
  readonly signal?: AbortSignal;
}

/** A path segment, encoded (names come from objects and user input). */
export function seg(s: string): string {
  return encodeURIComponent(s);
}

/**
 * Sends one request and returns the parsed JSON body; throws ApiException on a status outside 2xx.
 * Every request has a deadline (the OperatorKubeConfig's, else {@link KUBE_REQUEST_TIMEOUT_MS}): a
 * request caught on a connection that broke would otherwise wait for ever.
 */
export async function kubeRequest<T>(kc: KubeConfig, req: KubeRequest): Promise<T> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) query.set(k, String(v));
  const qs = query.toString();
  const deadline = AbortSignal.timeout(kc instanceof OperatorKubeConfig ? kc.requestTimeoutMs : KUBE_REQUEST_TIMEOUT_MS);
  const body = req.body === undefined ? undefined : JSON.stringify(req.body);
  const res = await kubeHttp(kc, {
    method: req.method,
    pathAndQuery: qs ? `${req.path}?${qs}` : req.path,
    headers: body === undefined ? {} : { 'Content-Type': req.contentType ?? 'application/json' },
    ...(body === undefined ? {} : { body }),
    signal: req.signal ? AbortSignal.any([deadline, req.signal]) : deadline,
  });
  const text = await readBody(res.body);
  if (res.status < 200 || res.status > 299) {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    throw new ApiException(res.status, statusMessage(text) ?? 'request failed', text, headers);
  }
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

/** The message of a Status body, if the body is one. */
function statusMessage(text: string): string | undefined {
  try {
    const status = JSON.parse(text) as { message?: unknown };
    return typeof status.message === 'string' ? status.message : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Kubernetes API requests as plain JSON, over client-node's KubeConfig: its authentication, TLS
 * and connection pool (applySecurityAuthentication, as its generated clients and its Watch use)
 * and its HTTP library. Errors are client-node's ApiException, with the HTTP status in `code`.
 *
 * Why not the generated clients: loading them costs tens of MB for the life of the process (see
 * client.ts), and they turn every response into instances of model classes (a page of 500 pods
 * becomes some 20,000 objects and Dates) that the informers throw away at once for the few fields
 * they keep. Plain JSON is what the watch already delivers, so listed and watched objects are now
 * the same shape.
 */
import { ApiException } from '@kubernetes/client-node/dist/gen/apis/exception.js';
import { HttpMethod, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';
import { IsomorphicFetchHttpLibrary } from '@kubernetes/client-node/dist/gen/http/isomorphic-fetch.js';
import type { KubeConfig } from './client.ts';

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

const http = new IsomorphicFetchHttpLibrary();

/** A path segment, encoded (names come from objects and user input). */
export function seg(s: string): string {
  return encodeURIComponent(s);
}

/** Sends one request and returns the parsed JSON body; throws ApiException on a status outside 2xx. */
export async function kubeRequest<T>(kc: KubeConfig, req: KubeRequest): Promise<T> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster: set current-context, or pass --kubeconfig');
  const ctx = new RequestContext(cluster.server + req.path, HttpMethod[req.method]);
  for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) ctx.setQueryParam(k, String(v));
  ctx.setHeaderParam('Accept', 'application/json');
  if (req.body !== undefined) {
    ctx.setHeaderParam('Content-Type', req.contentType ?? 'application/json');
    ctx.setBody(JSON.stringify(req.body));
  }
  await kc.applySecurityAuthentication(ctx);
  if (req.signal) {
    const own = ctx.getSignal();
    ctx.setSignal(own ? AbortSignal.any([own, req.signal]) : req.signal);
  }
  const res = await http.send(ctx).toPromise();
  const text = await res.body.text();
  if (res.httpStatusCode < 200 || res.httpStatusCode > 299) {
    throw new ApiException(res.httpStatusCode, statusMessage(text) ?? 'request failed', text, res.headers);
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

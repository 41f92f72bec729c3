/**
 * One connection pool per KubeConfig instead of one per request.
 *
 * @kubernetes/client-node 2.0 builds a new undici Agent for every API request
 * (KubeConfig.applySecurityAuthentication → createDispatcher), so every request pays a fresh TLS
 * handshake with a client certificate and leaves an idle socket behind. That costs the harness
 * most of its CPU at 50-100 requests per second and would distort every latency it measures;
 * memoising the dispatcher per cluster and TLS options restores keep-alive connection reuse.
 */
import { createHash } from 'node:crypto';

type CreateDispatcher = (cluster: unknown, agentOptions: Record<string, unknown>) => unknown;

function fingerprint(cluster: unknown, options: Record<string, unknown>): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(cluster ?? null));
  for (const k of Object.keys(options).sort()) {
    const v = options[k];
    h.update(`\0${k}=`);
    if (Buffer.isBuffer(v)) h.update(v);
    else h.update(JSON.stringify(v ?? null));
  }
  return h.digest('hex');
}

/**
 * Replaces `createDispatcher` on `target` (a KubeConfig, or KubeConfig.prototype to cover every
 * instance) with a version that returns the same dispatcher for the same cluster and TLS options.
 */
export function shareDispatchers(target: object): void {
  const t = target as { createDispatcher: CreateDispatcher };
  const original = t.createDispatcher;
  const cache = new WeakMap<object, Map<string, unknown>>();
  t.createDispatcher = function createSharedDispatcher(this: object, cluster: unknown, agentOptions: Record<string, unknown>): unknown {
    let perConfig = cache.get(this);
    if (!perConfig) cache.set(this, (perConfig = new Map<string, unknown>()));
    const key = fingerprint(cluster, agentOptions);
    if (!perConfig.has(key)) perConfig.set(key, original.call(this, cluster, agentOptions));
    return perConfig.get(key);
  };
}

/**
 * HTTP endpoints for operations: /metrics (Prometheus), /healthz (the process is alive) and
 * /readyz (caches are synced: leader or standby).
 */
import { createServer, type Server } from 'node:http';
import type { Registry as PromRegistry } from 'prom-client';

/** Options of {@link startOpsServer}. */
export interface OpsServerOptions {
  readonly host: string | undefined;
  readonly port: number;
  readonly metrics?: PromRegistry;
  readonly ready?: () => boolean;
}

/** Starts a server for the given endpoints; resolves once listening. */
export async function startOpsServer(o: OpsServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz' && o.ready) {
      const ok = o.ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'caches not synced\n');
    } else if (path === '/metrics' && o.metrics) {
      const registry = o.metrics;
      registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body))
        .catch((err: unknown) => res.writeHead(500).end(String(err)));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolveListen());
  });
  return server;
}

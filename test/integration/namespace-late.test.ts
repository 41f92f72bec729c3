/**
 * A ServiceInstance reconciled before the operator has seen its namespace. The namespace and the
 * ServiceInstance reach the operator on separate watches, so right after `kubectl create ns` and
 * `kubectl apply`, the ServiceInstance can be reconciled while the namespace's labels are unknown,
 * and be refused by a Registry that admits the namespace. That race is won or lost in
 * milliseconds; to lose it every time, the operator talks to the bed's kube-apiserver through a
 * proxy that holds back the bytes of its namespace watch until the test releases them. Nothing
 * else is changed: the apiserver, etcd and the operator process are the real ones.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent, request, type RequestOptions } from 'node:https';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { freePort } from '../../testbed/processes.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { startOperatorOn, type FaultOperator } from '../support/faults.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, getServiceInstance, installCrds } from '../support/kube.ts';

/** Far beyond the test's patience: an entry that appears was not written by the periodic resync. */
const RESYNC_SECONDS = 600;

/** Headers that belong to one hop and are not forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

function forwardable(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase())));
}

/**
 * A plain-HTTP proxy in front of the bed's kube-apiserver, authenticating as the bed's admin.
 * While held, the body of every namespace watch is kept back, in order, and passed on when
 * released; everything else, the namespace list included, goes straight through.
 */
class NamespaceWatchGate {
  readonly #server: Server;
  readonly #upstream: URL;
  readonly #agent: Agent;
  readonly port: number;
  #gate: Promise<void> | undefined;
  #open: (() => void) | undefined;
  /** Text of the namespace watch events held back so far. */
  held = '';

  private constructor(server: Server, port: number, upstream: URL, agent: Agent) {
    this.#server = server;
    this.port = port;
    this.#upstream = upstream;
    this.#agent = agent;
  }

  /** Starts the proxy in front of `kc`'s cluster, using `kc`'s client certificate. */
  static async start(kc: KubeConfig): Promise<NamespaceWatchGate> {
    const tls: RequestOptions = {};
    await kc.applyToHTTPSOptions(tls);
    const agent = new Agent({
      keepAlive: true,
      ...(tls.ca ? { ca: tls.ca } : {}),
      ...(tls.cert ? { cert: tls.cert } : {}),
      ...(tls.key ? { key: tls.key } : {}),
    });
    const port = await freePort();
    const server = createServer();
    const gate = new NamespaceWatchGate(server, port, new URL(kc.getCurrentCluster()?.server ?? ''), agent);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => gate.#forward(req, res));
    await new Promise<void>((resolveListen, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolveListen());
    });
    return gate;
  }

  /** Writes a kubeconfig that reaches the apiserver through this proxy; returns its path. */
  async kubeconfig(): Promise<string> {
    const file = join(await mkdtemp(join(tmpdir(), 'kr-namespace-late-')), 'kubeconfig');
    const yaml = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: gate',
      '  cluster:',
      `    server: http://127.0.0.1:${this.port}`,
      // client-node refuses http:// unless TLS verification is off; there is no TLS on this hop.
      '    insecure-skip-tls-verify: true',
      'users:',
      '- name: gate',
      '  user: {}',
      'contexts:',
      '- name: gate',
      '  context: {cluster: gate, user: gate}',
      'current-context: gate',
      '',
    ].join('\n');
    await writeFile(file, yaml, { mode: 0o600 });
    return file;
  }

  /** From now on, namespace watch events are held back. */
  hold(): void {
    if (this.#gate) return;
    this.#gate = new Promise<void>((resolveGate) => (this.#open = resolveGate));
  }

  /** Passes on everything held back, and everything after it. */
  release(): void {
    this.#open?.();
    this.#open = undefined;
    this.#gate = undefined;
  }

  async close(): Promise<void> {
    this.release();
    this.#server.closeAllConnections();
    await new Promise<void>((resolveClose) => this.#server.close(() => resolveClose()));
    this.#agent.destroy();
  }

  #forward(req: IncomingMessage, res: ServerResponse): void {
    const target = new URL(req.url ?? '/', this.#upstream);
    const namespaceWatch = target.pathname === '/api/v1/namespaces' && target.searchParams.get('watch') === 'true';
    const headers = { ...forwardable(req.headers), host: target.host };
    // Held text must be readable: a watch stream is not compressed, but say so.
    if (namespaceWatch) delete headers['accept-encoding'];
    const upstream = request(target, { method: req.method ?? 'GET', headers, agent: this.#agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, forwardable(answer.headers));
      answer.on('error', () => res.destroy());
      if (!namespaceWatch) {
        answer.pipe(res);
        return;
      }
      res.flushHeaders();
      let chain = Promise.resolve();
      const pass = (step: () => void): void => {
        chain = chain.then(() => this.#gate).then(step);
      };
      answer.on('data', (chunk: Buffer) => {
        if (this.#gate) this.held += chunk.toString('utf8');
        pass(() => res.write(chunk));
      });
      answer.on('end', () => pass(() => res.end()));
    });
    upstream.on('error', () => res.destroy());
    // A client that went away (an aborted watch) takes its upstream request with it.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }
}

const sfx = uniqueSuffix();
const ns = `late-${sfx}`;
const registry = `late-${sfx}`;
const prefix = `/namespace-late-${sfx}`;

let kc: KubeConfig;
let etcd: Etcd3 | undefined;
let gate: NamespaceWatchGate | undefined;
let operator: FaultOperator | undefined;

describe('a ServiceInstance whose namespace the operator has not seen yet', () => {
  before(async () => {
    kc = adminKubeConfig();
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    await installCrds(kc);
    await createRegistry(kc, registry, {
      type: 'etcd',
      namespaceSelector: { matchLabels: { 'namespace-late': sfx } },
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
    });
    gate = await NamespaceWatchGate.start(kc);
    // Watching a namespace that does not exist yet is allowed: its lists are empty until then.
    operator = await startOperatorOn({
      kubeconfig: await gate.kubeconfig(),
      flags: [`--cluster-id=namespace-late-${sfx}`, `--watch-namespaces=${ns}`, `--resync-period=${RESYNC_SECONDS}`],
    });
  });

  after(async () => {
    await operator?.process.stop();
    await gate?.close();
    etcd?.close();
  });

  test('is refused while its namespace is unknown, and registered as soon as the namespace reaches the operator, not at the next resync', async () => {
    const proxy = gate;
    const store = etcd;
    assert.ok(proxy && store, 'set up by before()');
    const key = `${prefix}/${ns}/web/192.0.2.10:80`;
    proxy.hold();
    try {
      await createNamespace(kc, ns, { 'namespace-late': sfx });
      await createServiceInstance(kc, ns, 'web', {
        service: 'web',
        registries: [registry],
        endpoints: [{ address: '192.0.2.10', port: 80 }],
      });
      await eventually('the namespace ADDED event to be held back from the operator', async () =>
        proxy.held.includes(`"name":"${ns}"`) ? true : undefined,
      );
      const refused = await eventually('the ServiceInstance to be reconciled without its namespace, and refused', async () => {
        const si = await getServiceInstance(kc, ns, 'web');
        return si?.status?.conditions?.find((c) => c.type === 'Registered' && c.reason === 'NamespaceNotAdmitted');
      });
      assert.equal(refused.status, 'False');
      assert.equal(await store.get(key).string(), null, 'nothing is written while the Registry refuses the namespace');
    } finally {
      proxy.release();
    }
    // The reconcile that refused it asked for the next one a resync period later; only the
    // namespace arriving can bring it sooner.
    const value = await eventually(
      'the entry to be written once the namespace reaches the operator',
      async () => (await store.get(key).string()) ?? undefined,
      60_000,
    );
    assert.equal((JSON.parse(value) as { address?: unknown }).address, '192.0.2.10');
    const registered = await eventually('the Registered condition to turn True', async () => {
      const si = await getServiceInstance(kc, ns, 'web');
      return si?.status?.conditions?.find((c) => c.type === 'Registered' && c.status === 'True');
    });
    assert.equal(registered.reason, 'Synced');
  });
});

/**
 * The consumer side end to end on the real bed: ServiceInstance → operator → etcd / Consul →
 * @kube-registrar/discovery. What a service owner relies on when calling another service through
 * the client: it sees what the operator registered in every format, follows pods becoming ready
 * and unready, filters by tags, balances as documented, routes around failing instances, keeps
 * serving through a registry outage and a compaction, and a process's own registration is never
 * touched by the operator.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import {
  consulDiscovery,
  consulSource,
  DiscoveryClient,
  etcdRegistrar,
  etcdSource,
  seededRandom,
  type DiscoverySource,
  type Instance,
} from '../../packages/discovery/src/index.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  agentServices,
  countServiceInstances,
  startOwnEtcd,
  TcpProxy,
  waitForResyncs,
  type AgentService,
  type OwnEtcd,
} from '../support/faults.ts';
import {
  createNamespace,
  createPod,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  eventsFor,
  eventually,
  installCrds,
  patchServiceInstance,
  setPodReady,
} from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const sfx = uniqueSuffix();
const ns = `disc-${sfx}`;
const prefix = `/disc-e2e-${sfx}`;
const grpcPrefix = `disc-e2e-${sfx}-grpc`;
const LEASE_TTL = 15;
/**
 * The OSS isolation template, as the other files on this bed use: the operator keys a Consul
 * heartbeat by cluster and registry namespace, not by Registry, so a Registry left with another
 * template would rename the heartbeats of later files' namespaces on the same agent.
 */
const CONSUL_SERVICE_NAME = '{namespace}-{service}';
const RESYNCS_MS = 120_000;
const WAIT_MS = 60_000;

const REGISTRIES = {
  json: `disc-json-${sfx}`,
  grpc: `disc-grpc-${sfx}`,
  hostport: `disc-hostport-${sfx}`,
  consul: `disc-consul-${sfx}`,
  own: `disc-own-${sfx}`,
} as const;

let kc: KubeConfig;
let etcd: Etcd3;
let operator: OperatorProcess | undefined;
let ownEtcd: OwnEtcd | undefined;
const clients: DiscoveryClient[] = [];

function etcdClient(source: DiscoverySource, extra: Partial<ConstructorParameters<typeof DiscoveryClient>[0]> = {}): DiscoveryClient {
  const client = new DiscoveryClient({ source, initialReadTimeoutMs: WAIT_MS, ...extra });
  clients.push(client);
  return client;
}

function jsonClient(extra: Partial<ConstructorParameters<typeof DiscoveryClient>[0]> = {}): DiscoveryClient {
  return etcdClient(etcdSource({ hosts: bedEnv('ETCD_ENDPOINTS'), prefix: `${prefix}/json`, namespace: ns }), extra);
}

/** A stable, comparable view of instances: what a consumer would use from them. */
function view(instances: readonly Instance[]): string[] {
  return instances
    .map(
      (i) =>
        `${i.address}:${i.port} w=${i.weight ?? 1} tags=${JSON.stringify(sorted(i.tags ?? {}))} meta=${JSON.stringify(sorted(i.metadata ?? {}))}`,
    )
    .sort();
}

function sorted(map: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(map).sort(([a], [b]) => (a < b ? -1 : 1)));
}

function addresses(instances: readonly Instance[]): string {
  return instances
    .map((i) => `${i.address}:${i.port}`)
    .sort()
    .join(' ');
}

/** Waits until the client's instances of `service` (with `tags`) are exactly `expected` (host:port, any order). */
async function waitForInstances(client: DiscoveryClient, service: string, expected: readonly string[], what: string): Promise<Instance[]> {
  const want = [...expected].sort().join(' ');
  return eventually(
    what,
    async () => {
      const got = await client.instances(service);
      return addresses(got) === want ? got : undefined;
    },
    WAIT_MS,
  );
}

async function resyncs(rounds: number): Promise<void> {
  assert.ok(operator, 'an operator runs');
  await waitForResyncs(operator.metricsUrl, await countServiceInstances(kc), rounds, RESYNCS_MS);
}

describe('discovery client end to end', () => {
  before(async () => {
    kc = adminKubeConfig();
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    ownEtcd = await startOwnEtcd();
    await installCrds(kc);
    await createNamespace(kc, ns, { env: ns });
    const common = { namespaceSelector: { matchLabels: { env: ns } }, namespace: '{namespace}', leaseTTLSeconds: LEASE_TTL };
    for (const format of ['json', 'grpc', 'hostport'] as const) {
      await createRegistry(kc, REGISTRIES[format], {
        ...common,
        type: 'etcd',
        default: format === 'json',
        etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix: format === 'grpc' ? grpcPrefix : `${prefix}/${format}`, format },
      });
    }
    await createRegistry(kc, REGISTRIES.consul, {
      ...common,
      type: 'consul',
      consul: { address: bedEnv('CONSUL_HTTP_ADDR'), serviceName: CONSUL_SERVICE_NAME },
    });
    await createRegistry(kc, REGISTRIES.own, { ...common, type: 'etcd', etcd: { endpoints: [ownEtcd.clientUrl], prefix, format: 'json' } });
    operator = await startOperator(['--resync-period=3']);
  });

  after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await operator?.process.stop();
    await ownEtcd?.close();
    etcd.close();
  });

  test('a pod turning unready leaves the picks, a new pod joins them', async () => {
    await createServiceInstance(kc, ns, 'users', {
      service: 'users',
      selector: { matchLabels: { app: 'users' } },
      port: 'http',
      tags: { version: '1' },
    });
    for (const [name, ip] of [
      ['users-0', '10.20.0.1'],
      ['users-1', '10.20.0.2'],
    ] as const) {
      await createPod(kc, ns, name, { labels: { app: 'users' }, ports: [{ name: 'http', containerPort: 8080 }] });
      await setPodReady(kc, ns, name, ip, true);
    }
    const client = jsonClient({ strategy: 'round-robin' });
    await waitForInstances(client, 'users', ['10.20.0.1:8080', '10.20.0.2:8080'], 'both ready pods in the client');

    await setPodReady(kc, ns, 'users-1', '10.20.0.2', false);
    await waitForInstances(client, 'users', ['10.20.0.1:8080'], 'the unready pod to leave the client');
    const picks = new Set<string>();
    for (let k = 0; k < 20; k++) picks.add((await client.pick('users')).address);
    assert.deepEqual([...picks], ['10.20.0.1'], 'no pick goes to the unready pod');

    await createPod(kc, ns, 'users-2', { labels: { app: 'users' }, ports: [{ name: 'http', containerPort: 8080 }] });
    await setPodReady(kc, ns, 'users-2', '10.20.0.3', true);
    await waitForInstances(client, 'users', ['10.20.0.1:8080', '10.20.0.3:8080'], 'the new pod to join');
    const after = new Set<string>();
    for (let k = 0; k < 20; k++) after.add((await client.pick('users')).address);
    assert.deepEqual([...after].sort(), ['10.20.0.1', '10.20.0.3'], 'round robin reaches the new pod');
  });

  test('every etcd format and Consul give the client the same instances, tags and weights', async () => {
    await createServiceInstance(kc, ns, 'catalog', {
      service: 'catalog',
      registries: [REGISTRIES.json, REGISTRIES.grpc, REGISTRIES.hostport, REGISTRIES.consul],
      endpoints: [
        { address: '10.30.0.1', port: 8080, weight: 5, tags: { zone: 'a' } },
        { address: '10.30.0.2', port: 8080, tags: { zone: 'b' } },
        { address: '10.30.0.3', port: 8080, tags: { zone: 'a' } },
        { address: '10.30.0.4', port: 8080, weight: 0, tags: { zone: 'a' } },
      ],
      tags: { version: '2' },
      metadata: { team: 'core' },
    });
    const sources = {
      json: etcdSource({ hosts: bedEnv('ETCD_ENDPOINTS'), prefix: `${prefix}/json`, namespace: ns }),
      grpc: etcdSource({ hosts: bedEnv('ETCD_ENDPOINTS'), prefix: grpcPrefix, namespace: ns }),
      hostport: etcdSource({ hosts: bedEnv('ETCD_ENDPOINTS'), prefix: `${prefix}/hostport`, namespace: ns }),
      consul: consulSource({ address: bedEnv('CONSUL_HTTP_ADDR'), namespace: ns, serviceName: CONSUL_SERVICE_NAME }),
    };
    const expected = [
      '10.30.0.1:8080 w=5 tags={"version":"2","zone":"a"} meta={"team":"core"}',
      '10.30.0.2:8080 w=1 tags={"version":"2","zone":"b"} meta={"team":"core"}',
      '10.30.0.3:8080 w=1 tags={"version":"2","zone":"a"} meta={"team":"core"}',
    ];
    for (const [format, source] of Object.entries(sources)) {
      const client = etcdClient(source);
      // Weight 0 is out of rotation: Consul leaves it out of ?passing, etcd carries it with weight 0.
      const got = await waitForInstances(
        client,
        'catalog',
        ['10.30.0.1:8080', '10.30.0.2:8080', '10.30.0.3:8080'],
        `catalog through ${format}`,
      );
      assert.deepEqual(view(got), expected, `${format}: the instances as the ServiceInstance describes them`);
      assert.equal(addresses(await client.instances('catalog', { zone: 'a' })), '10.30.0.1:8080 10.30.0.3:8080', `${format}: tag filter`);
      assert.equal(addresses(await client.instances('catalog', { zone: 'a', version: '2' })), '10.30.0.1:8080 10.30.0.3:8080');
      assert.equal((await client.instances('catalog', { zone: 'c' })).length, 0, `${format}: a filter nothing matches`);
    }
  });

  test('each strategy distributes over what the operator registered as documented', async () => {
    await createServiceInstance(kc, ns, 'pricing', {
      service: 'pricing',
      endpoints: [
        { address: '10.40.0.1', port: 80, weight: 5 },
        { address: '10.40.0.2', port: 80, weight: 1 },
        { address: '10.40.0.3', port: 80, weight: 1 },
      ],
    });
    const client = jsonClient({ strategy: 'weighted-round-robin', random: seededRandom(7) });
    await waitForInstances(client, 'pricing', ['10.40.0.1:80', '10.40.0.2:80', '10.40.0.3:80'], 'pricing registered');
    const name = (i: Instance): string => ({ '10.40.0.1': 'a', '10.40.0.2': 'b', '10.40.0.3': 'c' })[i.address] ?? '?';
    const sequence: string[] = [];
    for (let k = 0; k < 14; k++) sequence.push(name(await client.pick('pricing')));
    assert.equal(sequence.join(' '), 'a a b a c a a a a b a c a a', "smooth WRR's exact sequence for weights 5/1/1, twice");

    const counts = async (n: number, pick: () => Promise<Instance>): Promise<Record<string, number>> => {
      const out: Record<string, number> = { a: 0, b: 0, c: 0 };
      for (let k = 0; k < n; k++) out[name(await pick())]!++;
      return out;
    };
    client.setStrategy('round-robin');
    assert.deepEqual(await counts(300, () => client.pick('pricing')), { a: 100, b: 100, c: 100 }, 'round robin ignores weights');
    client.setStrategy('random');
    const random = await counts(3000, () => client.pick('pricing'));
    for (const id of ['a', 'b', 'c']) assert.ok(random[id]! > 800 && random[id]! < 1200, `random is uniform: ${JSON.stringify(random)}`);
    client.setStrategy('least-connections');
    const selector = client.selector('pricing');
    const held = await counts(21, async () => selector.acquire());
    assert.deepEqual(held, { a: 15, b: 3, c: 3 }, 'least connections holds calls in flight in proportion to weight');
    for (const s of selector.inspect()) for (let k = 0; k < s.inFlight; k++) selector.release(s.instance, { ok: true });
    client.setStrategy('p2c-peak-ewma');
    for (let k = 0; k < 90; k++) {
      const i = selector.acquire();
      selector.release(i, { ok: true, latencyMs: name(i) === 'b' ? 200 : 5 });
    }
    const p2c = await counts(300, async () => {
      const i = selector.acquire();
      selector.release(i, { ok: true, latencyMs: name(i) === 'b' ? 200 : 5 });
      return i;
    });
    assert.ok(p2c.b! < 30, `P2C over peak EWMA keeps away from the slow instance: ${JSON.stringify(p2c)}`);
  });

  test('a failing instance is ejected and comes back; when all fail, calls still go out', async () => {
    const servers = await Promise.all([0, 1, 2].map(() => FlakyServer.start()));
    try {
      await createServiceInstance(kc, ns, 'orders', {
        service: 'orders',
        endpoints: servers.map((s) => ({ address: '127.0.0.1', port: s.port })),
      });
      const client = jsonClient({
        strategy: 'round-robin',
        outlier: { consecutiveFailures: 3, baseEjectionMs: 2000, maxEjectionMs: 2000, maxEjectionPercent: 100 },
      });
      await waitForInstances(
        client,
        'orders',
        servers.map((s) => `127.0.0.1:${s.port}`),
        'orders registered',
      );
      const call = (): Promise<string> =>
        client.call(
          'orders',
          async (instance, signal) => {
            const res = await fetch(`http://${instance.address}:${instance.port}/`, { signal });
            if (!res.ok) throw new Error(`HTTP ${res.status}`);
            return res.text();
          },
          { attempts: 1 },
        );

      const bad = servers[1]!;
      bad.failing = true;
      await eventually(
        'the failing instance to be ejected',
        async () => {
          await call().catch(() => undefined);
          return client
            .selector('orders')
            .inspect()
            .find((s) => s.instance.port === bad.port)?.ejected
            ? true
            : undefined;
        },
        WAIT_MS,
      );
      const before = bad.requests;
      for (let k = 0; k < 20; k++) assert.notEqual(await call(), String(bad.port), 'calls avoid the ejected instance');
      assert.equal(bad.requests, before, 'the ejected instance got no call');

      bad.failing = false;
      await eventually(
        'the recovered instance to get calls again after its ejection',
        async () => {
          const answers = new Set<string>();
          for (let k = 0; k < 6; k++) answers.add(await call().catch(() => 'failed'));
          return answers.has(String(bad.port)) ? true : undefined;
        },
        WAIT_MS,
      );

      for (const s of servers) s.failing = true;
      await eventually(
        'every instance to be ejected',
        async () => {
          await call().catch(() => undefined);
          return client
            .selector('orders')
            .inspect()
            .every((s) => s.ejected)
            ? true
            : undefined;
        },
        WAIT_MS,
      );
      const total = (): number => servers.reduce((n, s) => n + s.requests, 0);
      const sent = total();
      for (let k = 0; k < 6; k++)
        await assert.rejects(call(), /HTTP 500/, 'panic mode calls the instances rather than failing without trying');
      assert.equal(total(), sent + 6, 'every call reached a server');
    } finally {
      await Promise.all(servers.map((s) => s.close()));
    }
  });

  test('through a registry outage the client keeps serving, then catches up', async () => {
    assert.ok(ownEtcd);
    await createServiceInstance(kc, ns, 'billing', {
      service: 'billing',
      registries: [REGISTRIES.own],
      endpoints: [
        { address: '10.50.0.1', port: 80 },
        { address: '10.50.0.2', port: 80 },
      ],
    });
    const client = etcdClient(etcdSource({ hosts: ownEtcd.clientUrl, prefix, namespace: ns }));
    await waitForInstances(client, 'billing', ['10.50.0.1:80', '10.50.0.2:80'], 'billing registered');

    await ownEtcd.server.stop();
    await eventually('the client to notice the outage', async () => (client.staleness('billing').inSync ? undefined : true), WAIT_MS);
    await patchServiceInstance(kc, ns, 'billing', {
      endpoints: [
        { address: '10.50.0.1', port: 80 },
        { address: '10.50.0.3', port: 80 },
      ],
    });
    assert.equal(addresses(await client.instances('billing')), '10.50.0.1:80 10.50.0.2:80', 'the last known instances are served');
    assert.ok((await client.pick('billing')).address.startsWith('10.50.0.'));
    const stale = client.staleness('billing');
    assert.equal(stale.inSync, false);
    assert.ok(stale.staleForMs > 0, `stale for ${stale.staleForMs} ms since the outage was noticed`);

    await ownEtcd.server.start();
    await waitForInstances(
      client,
      'billing',
      ['10.50.0.1:80', '10.50.0.3:80'],
      'the client to catch up with the change made during the outage',
    );
    await eventually('the cache to be in sync again', async () => (client.staleness('billing').inSync ? true : undefined), WAIT_MS);
  });

  test('a compaction while the watch is cut off loses no delete', async () => {
    assert.ok(ownEtcd);
    await createServiceInstance(kc, ns, 'ledger', {
      service: 'ledger',
      registries: [REGISTRIES.own],
      endpoints: [
        { address: '10.60.0.1', port: 80 },
        { address: '10.60.0.2', port: 80 },
      ],
    });
    const proxy = await TcpProxy.start(ownEtcd.clientUrl);
    try {
      const client = etcdClient(etcdSource({ hosts: proxy.url('http'), prefix, namespace: ns }));
      await waitForInstances(client, 'ledger', ['10.60.0.1:80', '10.60.0.2:80'], 'ledger registered');
      proxy.cut('close');
      await eventually('the client to lose its watch', async () => (client.staleness('ledger').inSync ? undefined : true), WAIT_MS);
      await patchServiceInstance(kc, ns, 'ledger', { endpoints: [{ address: '10.60.0.1', port: 80 }] });
      const direct = new Etcd3({ hosts: ownEtcd.clientUrl });
      try {
        const key = `${prefix}/${ns}/ledger/10.60.0.2:80`;
        await eventually(
          'the operator to delete the entry',
          async () => ((await direct.get(key).string()) === null ? true : undefined),
          WAIT_MS,
        );
        for (let k = 0; k < 5; k++) await direct.put(`${prefix}-filler/${k}`).value(String(k));
        const revision = (await direct.get(`${prefix}-filler/4`).exec()).header.revision;
        await ownEtcd.ctl(['compaction', revision]);
      } finally {
        direct.close();
      }
      assert.equal(addresses(await client.instances('ledger')), '10.60.0.1:80 10.60.0.2:80', 'still the set from before the cut');
      proxy.heal();
      await waitForInstances(client, 'ledger', ['10.60.0.1:80'], 'the delete behind the compaction to reach the client');
    } finally {
      await proxy.close();
    }
  });

  test("a process's own etcd registration is never touched by the operator", async () => {
    const registrar = etcdRegistrar({ hosts: bedEnv('ETCD_ENDPOINTS'), prefix: `${prefix}/json`, namespace: ns, leaseTtlSeconds: 10 });
    const client = etcdClient(etcdSource({ hosts: bedEnv('ETCD_ENDPOINTS'), prefix: `${prefix}/json`, namespace: ns }), { registrar });
    const registration = await client.register({ service: 'search', address: '10.70.0.1', port: 9000, tags: { host: 'vm-1' } });
    const key = `${prefix}/json/${ns}/search/10.70.0.1:9000`;
    const original = await etcd.get(key).exec();
    assert.equal(original.kvs.length, 1, 'the process registered itself');

    // A ServiceInstance claims the same endpoint and one more.
    await createServiceInstance(kc, ns, 'search', {
      service: 'search',
      endpoints: [
        { address: '10.70.0.1', port: 9000 },
        { address: '10.70.0.2', port: 9000 },
      ],
    });
    await waitForInstances(client, 'search', ['10.70.0.1:9000', '10.70.0.2:9000'], "the operator's endpoint beside the process's own");
    await eventually('the operator to report the conflict', async () =>
      (await eventsFor(kc, ns, 'search')).some((e) => e.reason === 'OwnershipConflict' && e.message.includes('10.70.0.1:9000'))
        ? true
        : undefined,
    );
    await resyncs(3);
    const now = await etcd.get(key).exec();
    assert.equal(now.kvs[0]?.value.toString(), original.kvs[0]?.value.toString(), "the value is the process's, unchanged");
    assert.equal(now.kvs[0]?.lease, original.kvs[0]?.lease, "it still hangs on the process's lease");
    assert.equal(now.kvs[0]?.mod_revision, original.kvs[0]?.mod_revision, 'never rewritten');

    await deleteServiceInstance(kc, ns, 'search');
    await waitForInstances(
      client,
      'search',
      ['10.70.0.1:9000'],
      "the operator's endpoint to go with its ServiceInstance, the process's to stay",
    );
    await registration.close();
    assert.equal((await etcd.get(key).exec()).kvs.length, 0, 'closing the registration removes the entry at once');
    await waitForInstances(client, 'search', [], 'the client to see it go');
  });

  test("a process's own Consul registration is never touched by the operator", async () => {
    const consul = bedEnv('CONSUL_HTTP_ADDR');
    const client = consulDiscovery({
      address: consul,
      namespace: ns,
      serviceName: CONSUL_SERVICE_NAME,
      ttlSeconds: 10,
      initialReadTimeoutMs: WAIT_MS,
    });
    clients.push(client);
    const registration = await client.register({ service: 'lookup', address: '10.71.0.1', port: 9000, tags: { host: 'vm-2' } });
    const mine = async (): Promise<AgentService | undefined> => (await agentServices(consul)).find((s) => s.id === registration.id);
    const original = await mine();
    assert.ok(original, 'the process registered itself on the agent');

    await createServiceInstance(kc, ns, 'lookup', {
      service: 'lookup',
      registries: [REGISTRIES.consul],
      endpoints: [{ address: '10.71.0.2', port: 9000 }],
    });
    await waitForInstances(client, 'lookup', ['10.71.0.1:9000', '10.71.0.2:9000'], "the operator's instance beside the process's own");
    await resyncs(3);
    assert.deepEqual(await mine(), original, 'unchanged after the operator resynced the service three times');

    await deleteServiceInstance(kc, ns, 'lookup');
    await waitForInstances(
      client,
      'lookup',
      ['10.71.0.1:9000'],
      "the operator's instance to go with its ServiceInstance, the process's to stay",
    );
    assert.deepEqual(await mine(), original);
    await registration.close();
    assert.equal(await mine(), undefined, 'closing the registration deregisters it at once');
    await waitForInstances(client, 'lookup', [], 'the client to see it go');
  });
});

/** An HTTP server that answers with its port, or 500 while `failing`. */
class FlakyServer {
  failing = false;
  requests = 0;
  port = 0;
  readonly #server = createServer((_req, res) => {
    this.requests++;
    res.statusCode = this.failing ? 500 : 200;
    res.end(String(this.port));
  });

  static async start(): Promise<FlakyServer> {
    const server = new FlakyServer();
    await new Promise<void>((resolve) => server.#server.listen(0, '127.0.0.1', resolve));
    const address = server.#server.address();
    assert.ok(address !== null && typeof address === 'object');
    server.port = address.port;
    return server;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

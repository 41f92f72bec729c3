/**
 * Per-namespace state does not only grow: on the shared bed, 200 short-lived namespaces each get a
 * ServiceInstance written to etcd and Consul and then go away; afterwards the operator keeps alive
 * exactly what the remaining namespaces need (keepalives, lease id keys, heartbeat services).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { agentServices, etcdKeys } from '../support/faults.ts';
import {
  createNamespace,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  eventually,
  getServiceInstance,
  installCrds,
} from '../support/kube.ts';
import { metricValue, requireMetric, startOperator, type OperatorProcess } from '../support/operator.ts';

const CHURN = 200;

/** Runs `work` over `items`, `limit` at a time. */
async function bounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await work(items[next++] as T);
    }),
  );
}

const operators: OperatorProcess[] = [];
after(async () => {
  for (const op of operators) await op.process.stop();
});

test('after 200 short-lived namespaces come and go, keepalives, lease id keys and heartbeat services are back to what the remaining namespace needs', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const prefix = `/release-${sfx}`;
  const consul = bedEnv('CONSUL_HTTP_ADDR');
  const token = process.env['CONSUL_HTTP_TOKEN'];
  const clusterId = `release-${sfx}`;
  await installCrds(kc);
  const selector = { matchLabels: { release: sfx } };
  const etcdRegistry = `release-etcd-${sfx}`;
  const consulRegistry = `release-consul-${sfx}`;
  await createRegistry(kc, etcdRegistry, {
    type: 'etcd',
    default: true,
    namespaceSelector: selector,
    leaseTTLSeconds: 30,
    etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
  });
  await createRegistry(kc, consulRegistry, {
    type: 'consul',
    default: true,
    namespaceSelector: selector,
    leaseTTLSeconds: 30,
    consul: { address: consul, serviceName: '{namespace}-{service}' },
  });
  const stay = `rel-stay-${sfx}`;
  await createNamespace(kc, stay, { release: sfx });
  await createServiceInstance(kc, stay, 'api', { service: 'api', endpoints: [{ address: '192.0.2.1', port: 80 }] });

  // Its own cluster id: only this test's entries, leases and heartbeats count as this operator's.
  const op = await startOperator(['--resync-period=3', `--cluster-id=${clusterId}`]);
  operators.push(op);
  const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
  const leaseKeys = async (): Promise<string[]> =>
    (await etcdKeys(etcd, `${prefix}/_kube-registrar/leases/${clusterId}/`)).map((k) => k.key.slice(k.key.lastIndexOf('/') + 1)).sort();
  const heartbeats = async (): Promise<string[]> =>
    (await agentServices(consul, token))
      .filter((s) => s.meta['kr-owner-cluster'] === clusterId && s.meta['kr-role'] === 'heartbeat')
      .map((s) => s.meta['kr-registry-namespace'] ?? '')
      // The bed is shared: ServiceInstances other tests left behind are this operator's too, in
      // their own namespaces; only this test's namespaces count.
      .filter((ns) => ns.startsWith('rel-') && ns.endsWith(sfx))
      .sort();
  try {
    await eventually(
      'the remaining namespace registered in both registries',
      async () => ((await leaseKeys()).length === 1 && (await heartbeats()).length === 1 ? true : undefined),
      180_000,
    );
    // Counted per Registry: the bed is shared, and what other tests left behind has keepalives of its own.
    const keepalives = async (): Promise<number> =>
      ((await metricValue(op, 'kube_registrar_registry_keepalives', `registry="${etcdRegistry}"`)) ?? 0) +
      ((await metricValue(op, 'kube_registrar_registry_keepalives', `registry="${consulRegistry}"`)) ?? 0);
    const baseKeepalives = await keepalives();
    assert.equal(baseKeepalives, 2, 'one etcd keepalive and one Consul heartbeat for the remaining namespace');
    const baseHeap = await requireMetric(op, 'kube_registrar_nodejs_heap_size_used_bytes');

    // Two rounds of short-lived namespaces: state that leaked would grow from one round to the next.
    const heaps = [baseHeap];
    for (const round of [1, 2]) {
      const churn = Array.from({ length: CHURN / 2 }, (_, i) => `rel-${round}-${i}-${sfx}`);
      await bounded(churn, 8, async (ns) => {
        await createNamespace(kc, ns, { release: sfx });
        await createServiceInstance(kc, ns, 'api', { service: 'api', endpoints: [{ address: '192.0.2.2', port: 80 }] });
      });
      // Every short-lived namespace really got its lease and heartbeat before going away.
      const peak = churn.length + 1;
      await eventually(
        `${peak} lease id keys and heartbeats`,
        async () => ((await leaseKeys()).length === peak && (await heartbeats()).length === peak ? true : undefined),
        300_000,
      );
      assert.equal(
        await keepalives(),
        baseKeepalives + 2 * churn.length,
        'one etcd keepalive and one Consul heartbeat per short-lived namespace',
      );

      await bounded(churn, 8, async (ns) => {
        await deleteServiceInstance(kc, ns, 'api');
        await kc.makeApiClient(CoreV1Api).deleteNamespace({ name: ns });
      });
      await bounded(churn, 8, async (ns) => {
        await eventually(
          `ServiceInstance ${ns}/api to be finalized`,
          async () => ((await getServiceInstance(kc, ns, 'api')) === undefined ? true : undefined),
          120_000,
        );
      });

      await eventually(
        'lease id keys back to the remaining namespace',
        async () => ((await leaseKeys()).join() === stay ? true : undefined),
        120_000,
      );
      await eventually(
        'heartbeat services back to the remaining namespace',
        async () => ((await heartbeats()).join() === stay ? true : undefined),
        120_000,
      );
      await eventually('keepalives back to the baseline', async () => ((await keepalives()) === baseKeepalives ? true : undefined), 60_000);
      heaps.push(await requireMetric(op, 'kube_registrar_nodejs_heap_size_used_bytes'));
    }
    const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
    t.diagnostic(
      `heap used: ${heaps.map(mib).join(' → ')} MiB (before, after round 1, after round 2 of ${CHURN / 2} namespaces each); keepalives back to ${baseKeepalives} after each round`,
    );
  } finally {
    etcd.close();
  }
});

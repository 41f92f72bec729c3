/**
 * What keeps entries alive, and for how long: on the shared bed, an operator process with many
 * workers and the registry etcd behind a proxy.
 *
 * What a user relies on: however the first connection to a registry fails, the operator ends up
 * with exactly one backend per Registry and one lease keepalive per registry namespace (a forgotten
 * backend would keep leases alive for ever), and a deleted Registry's entries expire within its
 * lease TTL because nothing of this process keeps them alive any more.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { deleteRegistry, etcdKeys, TcpProxy } from '../support/faults.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, getServiceInstance, installCrds } from '../support/kube.ts';
import { metricValue, startOperator, type OperatorProcess } from '../support/operator.ts';

const operators: OperatorProcess[] = [];
const proxies: TcpProxy[] = [];
after(async () => {
  for (const op of operators) await op.process.stop();
  for (const p of proxies) await p.close();
});

test('a registry unreachable at start-up, then reachable, ends with one backend and one keepalive per registry namespace, and a deleted Registry lets its entries expire', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const namespaces = ['a', 'b', 'c'].map((n) => `bl-${n}-${sfx}`);
  const prefix = `/backend-lifecycle-${sfx}`;
  const ttl = 6;
  const perNamespace = 8;
  await installCrds(kc);
  for (const ns of namespaces) await createNamespace(kc, ns, { lifecycle: sfx });
  const proxy = await TcpProxy.start(bedEnv('ETCD_ENDPOINTS').split(',')[0] ?? '');
  proxies.push(proxy);
  // Every connection is refused while the workers keep asking for the backend.
  proxy.cut('close');
  const registry = `bl-${sfx}`;
  await createRegistry(kc, registry, {
    type: 'etcd',
    default: true,
    namespaceSelector: { matchLabels: { lifecycle: sfx } },
    leaseTTLSeconds: ttl,
    etcd: { endpoints: [proxy.url('http')], prefix },
  });
  for (const ns of namespaces) {
    for (let i = 0; i < perNamespace; i++)
      await createServiceInstance(kc, ns, `svc-${i}`, { service: `svc-${i}`, endpoints: [{ address: `192.0.2.${10 + i}`, port: 80 }] });
  }
  const op = await startOperator([
    '--concurrency=16',
    '--registry-timeout=2',
    '--resync-period=30',
    `--watch-namespaces=${namespaces.join(',')}`,
  ]);
  operators.push(op);

  // The outage is real: reconciles fail and say so before the link heals.
  await eventually(
    'a ServiceInstance to report the unreachable registry',
    async () =>
      (await getServiceInstance(kc, namespaces[0] ?? '', 'svc-0'))?.status?.conditions?.find(
        (c) => c.type === 'Registered' && c.status === 'False',
      )
        ? true
        : undefined,
    60_000,
  );
  proxy.heal();

  const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
  try {
    const entries = await eventually(
      'every entry to be written once etcd is reachable',
      async () => {
        const keys = (await etcdKeys(etcd, `${prefix}/`)).filter((k) => !k.key.includes('/_kube-registrar/'));
        return keys.length === namespaces.length * perNamespace ? keys : undefined;
      },
      120_000,
    );
    // One lease per registry namespace, shared by all its entries and equal to the stored id.
    for (const ns of namespaces) {
      const leases = new Set(entries.filter((k) => k.key.startsWith(`${prefix}/${ns}/`)).map((k) => k.lease));
      assert.equal(leases.size, 1, `entries of ${ns} hang on one lease, not ${[...leases].join(', ')}`);
    }
    const stored = (await etcdKeys(etcd, `${prefix}/_kube-registrar/leases/`)).map((k) => k.key.slice(k.key.lastIndexOf('/') + 1)).sort();
    assert.deepEqual(stored, [...namespaces].sort(), 'one stored lease id per registry namespace');
    assert.equal(await metricValue(op, 'kube_registrar_registry_backends'), 1, 'exactly one live backend for the one Registry');
    assert.equal(
      await metricValue(op, 'kube_registrar_registry_keepalives', `registry="${registry}"`),
      namespaces.length,
      'exactly one keepalive per registry namespace',
    );

    await deleteRegistry(kc, registry);
    const deletedAt = Date.now();
    await eventually(
      'the deleted Registry’s entries to expire',
      async () =>
        (await etcdKeys(etcd, `${prefix}/`)).filter((k) => !k.key.includes('/_kube-registrar/')).length === 0 ? true : undefined,
      (ttl + 20) * 1000,
    );
    t.diagnostic(`entries of the deleted Registry expired ${Date.now() - deletedAt} ms after the deletion (lease TTL ${ttl} s)`);
    assert.equal(await metricValue(op, 'kube_registrar_registry_backends'), 0, 'no backend outlives its Registry');
    assert.equal(
      await metricValue(op, 'kube_registrar_registry_keepalives', `registry="${registry}"`),
      undefined,
      'no keepalive outlives its Registry',
    );
  } finally {
    etcd.close();
  }
});

/**
 * Nothing outlives its owner: on the shared bed, entries whose ServiceInstance is gone or no
 * longer wants them are removed even when the operator lost track of them, and deleting a
 * ServiceInstance never hangs for ever on a registry that is gone.
 *
 * The orphans here share their registry namespace (and so their lease) with entries that are
 * still wanted, so they cannot simply expire: only the owner-wide sweep can remove them.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { etcdChildren, TcpProxy } from '../support/faults.ts';
import {
  createNamespace,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  eventsFor,
  eventually,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
} from '../support/kube.ts';
import { metricValue, startOperator, type OperatorProcess } from '../support/operator.ts';

const G = { group: 'registrar.dev', version: 'v1alpha1', plural: 'serviceinstances' };

/** Merge-patches a ServiceInstance's metadata or status (status through its subresource). */
async function mergePatch(kc: KubeConfig, namespace: string, name: string, body: Record<string, unknown>, status = false): Promise<void> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const opts = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  if (status) await api.patchNamespacedCustomObjectStatus({ ...G, namespace, name, body }, opts);
  else await api.patchNamespacedCustomObject({ ...G, namespace, name, body }, opts);
}

const operators: OperatorProcess[] = [];
const proxies: TcpProxy[] = [];
const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
after(async () => {
  for (const op of operators) await op.process.stop();
  for (const p of proxies) await p.close();
  etcd.close();
});

test('entries an operator lost track of (status lost after a rename, finalizer removed by hand while it was down) are collected after a restart; wanted and foreign entries stay', async () => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `gc-${sfx}`;
  const prefix = `/gc-${sfx}`;
  const registry = `gc-${sfx}`;
  await installCrds(kc);
  await createNamespace(kc, ns, { gc: sfx });
  await createRegistry(kc, registry, {
    type: 'etcd',
    default: true,
    namespaceSelector: { matchLabels: { gc: sfx } },
    leaseTTLSeconds: 30,
    etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
  });
  await createServiceInstance(kc, ns, 'keep', { service: 'keep', endpoints: [{ address: '192.0.2.1', port: 80 }] });
  await createServiceInstance(kc, ns, 'renamed', { service: 'first', endpoints: [{ address: '192.0.2.2', port: 80 }] });
  await createServiceInstance(kc, ns, 'unfinalized', { service: 'gone', endpoints: [{ address: '192.0.2.3', port: 80 }] });
  // Someone else's entry in the same registry namespace: never touched.
  const foreignKey = `${prefix}/${ns}/manual/192.0.2.9:80`;
  const foreignValue = JSON.stringify({
    serviceName: 'manual',
    address: '192.0.2.9',
    port: 80,
    owner: { clusterId: 'another-cluster', namespace: ns, name: 'manual' },
  });
  await etcd.put(foreignKey).value(foreignValue);

  const dir = `${prefix}/${ns}/`;
  const flags = ['--resync-period=4', `--watch-namespaces=${ns}`];
  let op = await startOperator(flags);
  operators.push(op);
  await eventually('the first entries', async () => ((await etcdChildren(etcd, dir)).length === 4 ? true : undefined), 60_000);
  await op.process.stop();

  // While no operator runs: a rename whose status never got written, and a finalizer removed by hand.
  await patchServiceInstance(kc, ns, 'renamed', { service: 'second' });
  await mergePatch(kc, ns, 'renamed', { status: { registrations: [] } }, true);
  await mergePatch(kc, ns, 'unfinalized', { metadata: { finalizers: null } });
  await deleteServiceInstance(kc, ns, 'unfinalized');
  await eventually('the ServiceInstance without finalizer to be gone', async () =>
    (await getServiceInstance(kc, ns, 'unfinalized')) === undefined ? true : undefined,
  );

  op = await startOperator(flags);
  operators.push(op);
  await eventually(
    'the renamed service written under its new name',
    async () => ((await etcdChildren(etcd, dir)).includes('second/192.0.2.2:80') ? true : undefined),
    60_000,
  );
  const children = await eventually(
    'the orphans to be collected',
    async () => {
      const now = await etcdChildren(etcd, dir);
      return now.includes('first/192.0.2.2:80') || now.includes('gone/192.0.2.3:80') ? undefined : now;
    },
    60_000,
  );
  assert.deepEqual(children.sort(), ['keep/192.0.2.1:80', 'manual/192.0.2.9:80', 'second/192.0.2.2:80']);
  assert.equal((await etcd.get(foreignKey).string()) ?? '', foreignValue, 'the foreign entry is untouched');
  assert.equal(
    (await metricValue(op, 'kube_registrar_garbage_collected_total', `registry="${registry}"`)) ?? 0,
    2,
    'the metric counts what the sweep collected',
  );
});

test('a ServiceInstance whose registry has been unreachable past the lease TTL is let go, and nothing of it comes back with the registry', async () => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `lapse-${sfx}`;
  const prefix = `/lapse-${sfx}`;
  const ttl = 5;
  await installCrds(kc);
  await createNamespace(kc, ns, { lapse: sfx });
  const proxy = await TcpProxy.start(bedEnv('ETCD_ENDPOINTS').split(',')[0] ?? '');
  proxies.push(proxy);
  await createRegistry(kc, `lapse-${sfx}`, {
    type: 'etcd',
    default: true,
    namespaceSelector: { matchLabels: { lapse: sfx } },
    leaseTTLSeconds: ttl,
    etcd: { endpoints: [proxy.url('http')], prefix },
  });
  await createServiceInstance(kc, ns, 'stay', { service: 'stay', endpoints: [{ address: '192.0.2.20', port: 80 }] });
  await createServiceInstance(kc, ns, 'doomed', { service: 'doomed', endpoints: [{ address: '192.0.2.21', port: 80 }] });
  const op = await startOperator(['--resync-period=3', '--registry-timeout=2', `--watch-namespaces=${ns}`]);
  operators.push(op);
  const dir = `${prefix}/${ns}/`;
  await eventually('both entries', async () => ((await etcdChildren(etcd, dir)).length === 2 ? true : undefined), 60_000);
  // Entries land before the finalizer (it is written behind them): this case is about an object
  // that has it, whose deletion the operator holds until its entries are gone or expired.
  await eventually(
    'the finalizer on the ServiceInstance about to be deleted',
    async () =>
      (await getServiceInstance(kc, ns, 'doomed'))?.metadata?.finalizers?.includes('registrar.dev/finalizer') ? true : undefined,
    60_000,
  );

  proxy.cut('close');
  await deleteServiceInstance(kc, ns, 'doomed');
  const gone = Date.now();
  await eventually(
    'the deleted ServiceInstance to be let go once its entries must have expired',
    async () => ((await getServiceInstance(kc, ns, 'doomed')) === undefined ? true : undefined),
    120_000,
  );
  assert.ok(Date.now() - gone >= ttl * 1000, 'not before the lease TTL ran out');
  const events = await eventsFor(kc, ns, 'doomed');
  assert.ok(
    events.some((e) => e.reason === 'EntriesExpired'),
    `an event says why: ${JSON.stringify(events)}`,
  );
  await eventually(
    'the unrenewed entries to expire in etcd',
    async () => ((await etcdChildren(etcd, dir)).length === 0 ? true : undefined),
    30_000,
  );

  const puts: string[] = [];
  const watcher = await etcd.watch().prefix(dir).create();
  watcher.on('put', (kv) => puts.push(kv.key.toString()));
  try {
    proxy.heal();
    // The lease recovery (and the next resyncs) rewrote what is still wanted ...
    await eventually(
      'the wanted entry to be written back',
      async () => ((await etcdChildren(etcd, dir)).includes('stay/192.0.2.20:80') ? true : undefined),
      120_000,
    );
    // ... and a few resyncs later still nothing of the deleted ServiceInstance.
    const before = (await metricValue(op, 'kube_registrar_reconcile_total', 'outcome="requeue"')) ?? 0;
    await eventually(
      'two more resyncs of the remaining ServiceInstance',
      async () => (((await metricValue(op, 'kube_registrar_reconcile_total', 'outcome="requeue"')) ?? 0) >= before + 2 ? true : undefined),
      60_000,
    );
    assert.deepEqual(await etcdChildren(etcd, dir), ['stay/192.0.2.20:80']);
    assert.deepEqual(
      puts.filter((k) => k.includes('/doomed/')),
      [],
      'the deleted ServiceInstance’s entry never reappeared',
    );
  } finally {
    await watcher.cancel();
  }
});

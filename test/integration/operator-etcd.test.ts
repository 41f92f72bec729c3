/**
 * The lifecycles of DESIGN §2 against the real bed: kube-apiserver, the registry etcd and the
 * operator as its own process. Each test states what a user relies on and checks it in etcd.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { countServiceInstances, getRegistry, waitForResyncs } from '../support/faults.ts';
import {
  createNamespace,
  createPod,
  createRegistry,
  createServiceInstance,
  deletePod,
  deleteServiceInstance,
  eventsFor,
  eventually,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
  setPodReady,
} from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const sfx = uniqueSuffix();
const prod = `prod-${sfx}`;
const dev = `dev-${sfx}`;
const prefix = `/lifecycle-${sfx}`;
// Long enough for a restart of the operator on a busy machine, short enough to watch expire.
const LEASE_TTL = 10;
// Deadline for the operator to resync every ServiceInstance on the bed (3 s apart) a few times.
const RESYNCS_MS = 120_000;

let kc: KubeConfig;
let etcd: Etcd3;
let operator: OperatorProcess | undefined;

async function entries(path: string): Promise<Record<string, string>> {
  return etcd.getAll().prefix(path).strings();
}

/**
 * Waits until the running operator has resynced every ServiceInstance on the bed `rounds` times
 * since the call: the operator watches every namespace, so that includes those of other files.
 */
async function resyncs(rounds: number): Promise<void> {
  assert.ok(operator, 'an operator runs');
  await waitForResyncs(operator.metricsUrl, await countServiceInstances(kc), rounds, RESYNCS_MS);
}

async function waitForKeys(path: string, expected: readonly string[], what: string): Promise<Record<string, string>> {
  return eventually(what, async () => {
    const got = await entries(path);
    return JSON.stringify(Object.keys(got).sort()) === JSON.stringify([...expected].sort()) ? got : undefined;
  });
}

describe('operator on etcd', () => {
  before(async () => {
    kc = adminKubeConfig();
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    await installCrds(kc);
    await createNamespace(kc, prod, { env: prod });
    await createNamespace(kc, dev, { env: dev });
    for (const [name, format] of [
      [`main-${sfx}`, 'json'],
      [`grpc-${sfx}`, 'grpc'],
      [`hostport-${sfx}`, 'hostport'],
    ] as const) {
      await createRegistry(kc, name, {
        type: 'etcd',
        default: format === 'json',
        namespaceSelector: { matchLabels: { env: prod } },
        namespace: '{namespace}',
        leaseTTLSeconds: LEASE_TTL,
        etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix: `${prefix}/${format}`, format },
      });
    }
    operator = await startOperator(['--resync-period=3']);
  });

  after(async () => {
    await operator?.process.stop();
    etcd.close();
  });

  test('a pod that becomes Ready is registered with the json value, and leaves when it stops being Ready', async () => {
    await createServiceInstance(kc, prod, 'users', {
      service: 'users',
      selector: { matchLabels: { app: 'users' } },
      port: 'http',
      tags: { version: '1.0' },
      weight: 3,
      metadata: { team: 'core' },
    });
    await createPod(kc, prod, 'users-0', { labels: { app: 'users' }, ports: [{ name: 'http', containerPort: 8080 }] });
    await setPodReady(kc, prod, 'users-0', '10.1.0.1', true);
    const key = `${prefix}/json/${prod}/users/10.1.0.1:8080`;
    const got = await waitForKeys(`${prefix}/json/${prod}/users/`, [key], 'the ready pod to be registered');
    const value = JSON.parse(got[key] ?? '{}') as Record<string, unknown>;
    assert.equal(value['serviceName'], 'users');
    assert.equal(value['ip'], '10.1.0.1');
    assert.equal(value['address'], '10.1.0.1');
    assert.equal(value['port'], 8080);
    assert.equal(value['weight'], 3);
    assert.deepEqual(value['tags'], { version: '1.0' });
    assert.deepEqual(value['metadata'], { team: 'core' });
    assert.equal(value['namespace'], prod);
    assert.equal(value['source'], `pod/${prod}/users-0`);
    const owner = value['owner'] as Record<string, string>;
    assert.equal(owner['namespace'], prod);
    assert.equal(owner['name'], 'users');
    assert.ok(owner['clusterId'], 'the owner names the cluster');

    const lease = await etcd.get(key).exec();
    assert.notEqual(lease.kvs[0]?.lease, '0', 'the entry hangs on a lease');

    const si = await eventually('status to report the registration', async () => {
      const s = await getServiceInstance(kc, prod, 'users');
      return s?.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True') ? s : undefined;
    });
    assert.deepEqual(si.status?.endpoints, { total: 1, ready: 1, registered: 1 });
    assert.equal(si.status?.observedGeneration, si.metadata.generation);
    const reg = si.status?.registrations?.find((r) => r.registry === `main-${sfx}`);
    assert.equal(reg?.entries, 1);
    assert.equal(reg?.namespace, prod);
    assert.equal(Object.hasOwn(reg ?? {}, 'leaseID'), false, 'the lease is not repeated on every ServiceInstance');
    const registry = await eventually('the Registry status to name the lease', async () => {
      const r = await getRegistry(kc, `main-${sfx}`);
      return r?.status?.leases?.some((l) => l.namespace === prod) ? r : undefined;
    });
    assert.deepEqual(
      registry.status?.leases?.find((l) => l.namespace === prod),
      { namespace: prod, leaseID: BigInt(lease.kvs[0]?.lease ?? '0').toString(16) },
      'the Registry status names the lease the entries hang on',
    );
    assert.ok(si.metadata.finalizers?.includes('registrar.dev/finalizer'));
    const events = await eventsFor(kc, prod, 'users');
    assert.ok(
      events.some((e) => e.reason === 'Registered'),
      `a Registered event was recorded: ${JSON.stringify(events)}`,
    );

    await setPodReady(kc, prod, 'users-0', '10.1.0.1', false);
    await waitForKeys(`${prefix}/json/${prod}/users/`, [], 'the unready pod to be deregistered');
  });

  test('a terminating pod leaves the registry before it is gone, and a deleted pod leaves it too', async () => {
    await createServiceInstance(kc, prod, 'orders', { service: 'orders', selector: { matchLabels: { app: 'orders' } }, port: 9000 });
    await createPod(kc, prod, 'orders-0', { labels: { app: 'orders' }, nodeName: 'node-a' });
    await createPod(kc, prod, 'orders-1', { labels: { app: 'orders' } });
    await setPodReady(kc, prod, 'orders-0', '10.1.1.1', true);
    await setPodReady(kc, prod, 'orders-1', '10.1.1.2', true);
    const dir = `${prefix}/json/${prod}/orders/`;
    await waitForKeys(dir, [`${dir}10.1.1.1:9000`, `${dir}10.1.1.2:9000`], 'both pods to be registered');

    await deletePod(kc, prod, 'orders-0', 30);
    await waitForKeys(dir, [`${dir}10.1.1.2:9000`], 'the terminating pod to be deregistered');
    await deletePod(kc, prod, 'orders-1', 0);
    await waitForKeys(dir, [], 'the deleted pod to be deregistered');
    await deletePod(kc, prod, 'orders-0', 0);
  });

  test('updating tags and port of a ServiceInstance rewrites its entries', async () => {
    await createServiceInstance(kc, prod, 'static', {
      service: 'static',
      endpoints: [
        { address: '192.0.2.10', port: 80 },
        { address: 'vm1.example.com', port: 81, weight: 5, tags: { zone: 'b' } },
      ],
      tags: { tier: 'web' },
    });
    const dir = `${prefix}/json/${prod}/static/`;
    const first = await waitForKeys(dir, [`${dir}192.0.2.10:80`, `${dir}vm1.example.com:81`], 'static endpoints to be registered');
    const vm = JSON.parse(first[`${dir}vm1.example.com:81`] ?? '{}') as Record<string, unknown>;
    assert.equal(vm['address'], 'vm1.example.com');
    assert.ok(!vm['ip'], 'a host name has no ip');
    assert.deepEqual(vm['tags'], { tier: 'web', zone: 'b' });
    assert.equal(vm['weight'], 5);

    await patchServiceInstance(kc, prod, 'static', { endpoints: [{ address: '192.0.2.10', port: 8080 }], tags: { tier: 'api' } });
    const second = await waitForKeys(dir, [`${dir}192.0.2.10:8080`], 'entries to follow the new port');
    assert.deepEqual((JSON.parse(second[`${dir}192.0.2.10:8080`] ?? '{}') as { tags: unknown }).tags, { tier: 'api' });
  });

  test('deleting a ServiceInstance removes its entries before the object goes', async () => {
    await createServiceInstance(kc, prod, 'doomed', { service: 'doomed', endpoints: [{ address: '192.0.2.20', port: 80 }] });
    const dir = `${prefix}/json/${prod}/doomed/`;
    await waitForKeys(dir, [`${dir}192.0.2.20:80`], 'the entry to be registered');
    await eventually('the finalizer', async () =>
      (await getServiceInstance(kc, prod, 'doomed'))?.metadata.finalizers?.length ? true : undefined,
    );
    await deleteServiceInstance(kc, prod, 'doomed');
    await eventually('the object to be gone', async () =>
      (await getServiceInstance(kc, prod, 'doomed')) === undefined ? true : undefined,
    );
    assert.deepEqual(await entries(dir), {}, 'no entry outlives its ServiceInstance');
  });

  test('an owned entry deleted or edited by hand is repaired within the resync period, and foreign entries are never touched', async () => {
    await createServiceInstance(kc, prod, 'repair', {
      service: 'repair',
      endpoints: [
        { address: '192.0.2.30', port: 80 },
        { address: '192.0.2.31', port: 80 },
      ],
    });
    const dir = `${prefix}/json/${prod}/repair/`;
    const keys = [`${dir}192.0.2.30:80`, `${dir}192.0.2.31:80`];
    const original = await waitForKeys(dir, keys, 'entries to be registered');
    const foreignKey = `${dir}192.0.2.99:80`;
    const foreignValue = JSON.stringify({
      serviceName: 'repair',
      ip: '192.0.2.99',
      address: '192.0.2.99',
      port: 80,
      owner: { clusterId: 'other-cluster', namespace: prod, name: 'repair' },
    });
    await etcd.put(foreignKey).value(foreignValue);
    await etcd.put(`${dir}handwritten`).value('192.0.2.98:80');
    await etcd.delete().key(keys[0] ?? '');
    await etcd.put(keys[1] ?? '').value('{"tampered":true}');
    await eventually('the deleted and the tampered entries to be repaired', async () => {
      const now = await entries(dir);
      return now[keys[0] ?? ''] === original[keys[0] ?? ''] && now[keys[1] ?? ''] === original[keys[1] ?? ''] ? true : undefined;
    });
    // Two resyncs later the foreign entries are still as they were.
    await resyncs(2);
    const now = await entries(dir);
    assert.equal(now[foreignKey], foreignValue, "another cluster's entry is untouched");
    assert.equal(now[`${dir}handwritten`], '192.0.2.98:80', 'an entry with no owner is untouched');
    await deleteServiceInstance(kc, prod, 'repair');
    await eventually('owned entries to be removed', async () => {
      const left = Object.keys(await entries(dir)).sort();
      return JSON.stringify(left) === JSON.stringify([`${dir}192.0.2.99:80`, `${dir}handwritten`].sort()) ? true : undefined;
    });
  });

  test('a ServiceInstance naming a Registry that does not admit its namespace is refused and nothing is written', async () => {
    await createServiceInstance(kc, dev, 'sneaky', {
      service: 'sneaky',
      registries: [`main-${sfx}`],
      endpoints: [{ address: '192.0.2.40', port: 80 }],
    });
    const si = await eventually('the refusal in status', async () => {
      const s = await getServiceInstance(kc, dev, 'sneaky');
      return s?.status?.conditions?.find((c) => c.type === 'Registered' && c.status === 'False') ? s : undefined;
    });
    const cond = si.status?.conditions?.find((c) => c.type === 'Registered');
    assert.equal(cond?.reason, 'NamespaceNotAdmitted');
    assert.match(cond?.message ?? '', /does not admit namespace/);
    const events = await eventually('a warning event', async () => {
      const e = await eventsFor(kc, dev, 'sneaky');
      return e.some((x) => x.type === 'Warning' && x.reason === 'NamespaceNotAdmitted') ? e : undefined;
    });
    assert.ok(events.length > 0);
    assert.deepEqual(await entries(`${prefix}/json/${dev}/`), {}, 'nothing written for dev');
    assert.deepEqual(
      Object.keys(await entries(prefix)).filter((k) => k.includes('sneaky')),
      [],
      'nothing written anywhere',
    );
  });

  test('the grpc and hostport formats are written as etcd naming-resolver updates and plain host:port', async () => {
    await createServiceInstance(kc, prod, 'formats', {
      service: 'formats',
      registries: [`grpc-${sfx}`, `hostport-${sfx}`],
      endpoints: [{ address: '192.0.2.50', port: 7000 }],
      tags: { region: 'eu' },
    });
    const grpcKey = `${prefix}/grpc/${prod}/formats/192.0.2.50:7000`;
    const grpc = await waitForKeys(`${prefix}/grpc/${prod}/formats/`, [grpcKey], 'the grpc entry');
    const update = JSON.parse(grpc[grpcKey] ?? '{}') as { Op: number; Addr: string; Metadata?: unknown };
    assert.equal(update.Op, 0, 'Op 0 is Add in the resolver protocol');
    assert.equal(update.Addr, '192.0.2.50:7000');
    assert.equal('Metadata' in update, false, 'no Metadata for grpc-go to compare');
    const indexKey = `${prefix}/grpc/_kube-registrar/owners/${prod}/formats/192.0.2.50:7000`;
    const index = JSON.parse((await entries(indexKey))[indexKey] ?? '{}') as { owner?: { name?: string }; tags?: unknown };
    assert.equal(index.owner?.name, 'formats', 'the owner is kept in the index');
    assert.deepEqual(index.tags, { region: 'eu' });
    const hpKey = `${prefix}/hostport/${prod}/formats/192.0.2.50:7000`;
    const hp = await waitForKeys(`${prefix}/hostport/${prod}/formats/`, [hpKey], 'the hostport entry');
    assert.equal(hp[hpKey], '192.0.2.50:7000');
  });

  test('Registry status says whether the registry is usable and how many entries the operator holds there', async () => {
    const custom = kc.makeApiClient(CustomObjectsApi);
    const get = async (
      name: string,
    ): Promise<{ status?: { entries?: number; conditions?: { type: string; status: string; reason: string; message: string }[] } }> =>
      (await custom.getClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'registries', name })) as never;
    const main = await eventually('the main Registry to be Ready with its entries counted', async () => {
      const r = await get(`main-${sfx}`);
      const ready = r.status?.conditions?.find((c) => c.type === 'Ready');
      return ready?.status === 'True' && (r.status?.entries ?? 0) > 0 ? r : undefined;
    });
    assert.equal(main.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'Connected');

    await createRegistry(kc, `nosecret-${sfx}`, {
      type: 'etcd',
      namespaceSelector: { matchLabels: { env: prod } },
      etcd: {
        endpoints: [bedEnv('ETCD_ENDPOINTS')],
        prefix: `${prefix}/nosecret`,
        credentialsSecretRef: { name: 'missing', namespace: 'default' },
      },
    });
    const broken = await eventually('the Registry with a missing Secret to say so', async () => {
      const r = await get(`nosecret-${sfx}`);
      return r.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'False') ? r : undefined;
    });
    const cond = broken.status?.conditions?.find((c) => c.type === 'Ready');
    assert.equal(cond?.reason, 'CredentialsNotFound');
    assert.match(cond?.message ?? '', /Secret default\/missing/);
  });

  test('a dryRun Registry writes nothing and says so in status; an upsert-only Registry never deletes', async () => {
    const dryNs = `dry-${sfx}`;
    await createNamespace(kc, dryNs, { dry: sfx });
    await createRegistry(kc, `dry-${sfx}`, {
      type: 'etcd',
      default: true,
      dryRun: true,
      namespaceSelector: { matchLabels: { dry: sfx } },
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix: `${prefix}/dry` },
    });
    await createRegistry(kc, `upsert-${sfx}`, {
      type: 'etcd',
      default: true,
      policy: 'upsert-only',
      namespaceSelector: { matchLabels: { dry: sfx } },
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix: `${prefix}/upsert` },
    });
    await createServiceInstance(kc, dryNs, 'ghost', {
      service: 'ghost',
      endpoints: [
        { address: '192.0.2.80', port: 80 },
        { address: '192.0.2.81', port: 80 },
      ],
    });
    const si = await eventually('status of both registrations', async () => {
      const s = await getServiceInstance(kc, dryNs, 'ghost');
      return (s?.status?.registrations?.length ?? 0) === 2 ? s : undefined;
    });
    assert.match(si.status?.registrations?.find((r) => r.registry === `dry-${sfx}`)?.message ?? '', /dry run/);
    const upsertDir = `${prefix}/upsert/${dryNs}/ghost/`;
    await waitForKeys(upsertDir, [`${upsertDir}192.0.2.80:80`, `${upsertDir}192.0.2.81:80`], 'the upsert-only entries');
    assert.deepEqual(await entries(`${prefix}/dry/`), {}, 'the dry-run registry got nothing but reads');

    await patchServiceInstance(kc, dryNs, 'ghost', { endpoints: [{ address: '192.0.2.80', port: 80 }] });
    await eventually('the spec change to be observed', async () =>
      (await getServiceInstance(kc, dryNs, 'ghost'))?.status?.observedGeneration === 2 ? true : undefined,
    );
    await resyncs(1);
    assert.deepEqual(
      Object.keys(await entries(upsertDir)).sort(),
      [`${upsertDir}192.0.2.80:80`, `${upsertDir}192.0.2.81:80`],
      'upsert-only kept the endpoint that left the spec',
    );
  });

  test('/metrics counts reconciles and registry operations and shows entries per Registry; /healthz and /readyz answer', async () => {
    assert.ok(operator);
    await createServiceInstance(kc, prod, 'metered', { service: 'metered', endpoints: [{ address: '192.0.2.90', port: 80 }] });
    const text = await eventually('entries per Registry in /metrics', async () => {
      const t = await (await fetch(operator?.metricsUrl ?? '')).text();
      return new RegExp(`kube_registrar_registry_entries\\{registry="main-${sfx}"\\} [1-9]`).test(t) ? t : undefined;
    });
    assert.match(text, /kube_registrar_reconcile_total\{outcome="(success|requeue)"\} [1-9]/);
    assert.match(text, /kube_registrar_registry_operations_total\{backend="etcd",operation="apply",outcome="success"\} [1-9]/);
    assert.match(text, /kube_registrar_reconcile_duration_seconds_bucket/);
    assert.match(text, /kube_registrar_workqueue_depth \d/);
    assert.match(text, /kube_registrar_leader 1/);
    assert.equal((await fetch(`${operator.healthUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${operator.healthUrl}/readyz`)).status, 200);
  });

  test('rejects invalid ServiceInstances at admission with a message a person understands', async () => {
    await assert.rejects(
      createServiceInstance(kc, prod, 'both', {
        service: 'both',
        selector: { matchLabels: { a: 'b' } },
        port: 80,
        endpoints: [{ address: '192.0.2.1', port: 80 }],
      }),
      (err: unknown) => /exactly one of/i.test(String((err as { body?: unknown }).body ?? err)),
    );
    await assert.rejects(
      createServiceInstance(kc, prod, 'badport', { service: 'badport', endpoints: [{ address: '192.0.2.1', port: 70000 }] }),
      (err: unknown) => /65535/.test(String((err as { body?: unknown }).body ?? err)),
    );
  });

  test('a restarted operator deletes nothing: not one delete event in etcd across the restart', async () => {
    const first = operator;
    assert.ok(first);
    await createServiceInstance(kc, prod, 'steady', {
      service: 'steady',
      endpoints: [
        { address: '192.0.2.60', port: 80 },
        { address: '192.0.2.61', port: 80 },
      ],
    });
    const dir = `${prefix}/json/${prod}/steady/`;
    await waitForKeys(dir, [`${dir}192.0.2.60:80`, `${dir}192.0.2.61:80`], 'entries to be registered');
    const deletes: string[] = [];
    const puts: string[] = [];
    const watcher = await etcd.watch().prefix(prefix).create();
    watcher.on('delete', (kv) => deletes.push(kv.key.toString()));
    watcher.on('put', (kv) => puts.push(kv.key.toString()));
    try {
      const leaseId = (await etcd.get(`${dir}192.0.2.60:80`).exec()).kvs[0]?.lease;
      assert.ok(leaseId && leaseId !== '0', 'the entries hang on a lease');
      await first.process.stop();
      const stoppedAt = Date.now();
      operator = await startOperator(['--resync-period=3']);
      // Two resyncs of the new process, and more than the lease TTL since the old one stopped:
      // the lease is still alive only if the new process adopted it and kept it alive.
      await resyncs(2);
      await sleep(Math.max(0, stoppedAt + (LEASE_TTL + 4) * 1000 - Date.now()));
      const { TTL: secondsLeft } = await etcd.leaseClient.leaseTimeToLive({ ID: leaseId });
      assert.ok(
        Number(secondsLeft) > 0,
        `the lease outlived its ${LEASE_TTL} s TTL after the old process stopped: the new one keeps it alive`,
      );
      assert.deepEqual(deletes, [], 'no entry was deleted across the restart');
      assert.deepEqual(
        puts.filter((k) => !k.includes('_kube-registrar')),
        [],
        'no entry was rewritten: the lease was adopted',
      );
      assert.deepEqual(Object.keys(await entries(dir)).sort(), [`${dir}192.0.2.60:80`, `${dir}192.0.2.61:80`]);
    } finally {
      await watcher.cancel();
    }
  });

  test('a killed operator leaves no ghosts: every entry expires within the lease TTL', async () => {
    const current = operator;
    assert.ok(current);
    const dir = `${prefix}/json/${prod}/`;
    assert.ok(Object.keys(await entries(dir)).length > 0, 'there are entries before the kill');
    await current.process.kill();
    operator = undefined;
    await eventually(
      'every entry to expire',
      async () => {
        const left = Object.entries(await entries(dir)).filter(([k]) => !k.includes('192.0.2.99') && !k.endsWith('handwritten'));
        return left.length === 0 ? true : undefined;
      },
      // The TTL plus etcd's lease-expiry granularity.
      (LEASE_TTL + 10) * 1000,
    );
  });
});

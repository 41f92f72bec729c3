/**
 * Control-plane faults and an operator crash, on a bed of this file's own (its kube-apiserver is
 * restarted and its etcd compacted, so the shared bed stays out of it). The operator reaches the
 * apiserver through a TCP proxy, so a test can cut it off from the control plane for as long as it
 * needs while the test itself keeps changing things through the apiserver. The watch-expiry test
 * black-holes the link: requests in flight then hang on half-open connections for good, which only
 * a client with a deadline on every call survives (without one, a status write hung for ever and
 * its ServiceInstance was never reconciled again).
 *
 * What a user relies on: informers resume after the apiserver comes back, changes made while the
 * operator could not see them all land, a watch that expired (410 Gone) relists without losing an
 * update, nothing that should stay registered flaps meanwhile, and an operator killed halfway
 * through a large change leaves, after its restart, exactly the desired state and no orphans.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { startBed, type Bed } from '../../testbed/bed.ts';
import { uniqueSuffix } from '../support/env.ts';
import {
  agentServices,
  consulNamespace,
  converge,
  crashLines,
  etcdChildren,
  etcdctl,
  FaultTally,
  kubeconfigVia,
  operatorAlive,
  passingInstances,
  startOperatorOn,
  TcpProxy,
  waitFor,
  type FaultOperator,
} from '../support/faults.ts';
import {
  createNamespace,
  createPod,
  createRegistry,
  createServiceInstance,
  deletePod,
  deleteServiceInstance,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
  setPodReady,
} from '../support/kube.ts';

const sfx = uniqueSuffix();
const CONVERGE_MS = 120_000;
const OPERATOR_FLAGS = ['--resync-period=2', '--registry-timeout=5', '--cluster-id=faults-control-plane'];

const tally = new FaultTally('faults-control-plane');
let bed: Bed | undefined;
let kc: KubeConfig;
let etcd: Etcd3;
let apiProxy: TcpProxy | undefined;
let slowEtcd: TcpProxy | undefined;
let slowConsul: TcpProxy | undefined;
let proxiedKubeconfig: string;
let operator: FaultOperator | undefined;
let operatorLog: string | undefined;

async function etcdNamespace(prefix: string, ns: string): Promise<string[]> {
  return etcdChildren(etcd, `${prefix}/${ns}/`);
}

function consulAddress(): string {
  assert.ok(bed, 'the bed is up');
  return bed.consulAddr;
}

async function startOperator(): Promise<FaultOperator> {
  const op = await startOperatorOn({
    kubeconfig: proxiedKubeconfig,
    flags: OPERATOR_FLAGS,
    ...(operatorLog ? { logFile: operatorLog } : {}),
  });
  operatorLog ??= op.process.logFile;
  return op;
}

/** Builds the baseline of a namespace: static services, a pod-backed one, one to edit and one to delete. */
async function baseline(ns: string, net: number): Promise<string[]> {
  await createServiceInstance(kc, ns, 'steady', {
    service: 'steady',
    endpoints: [1, 2, 3].map((i) => ({ address: `10.${net}.0.${i}`, port: 80 })),
  });
  await createServiceInstance(kc, ns, 'web', { service: 'web', selector: { matchLabels: { app: 'web' } }, port: 8080 });
  await createServiceInstance(kc, ns, 'edit', { service: 'edit', endpoints: [{ address: `10.${net}.2.1`, port: 80 }] });
  await createServiceInstance(kc, ns, 'doomed', { service: 'doomed', endpoints: [{ address: `10.${net}.3.1`, port: 80 }] });
  for (const i of [1, 2]) {
    await createPod(kc, ns, `web-${i}`, { labels: { app: 'web' } });
    await setPodReady(kc, ns, `web-${i}`, `10.${net}.1.${i}`, true);
  }
  return [
    `steady/10.${net}.0.1:80`,
    `steady/10.${net}.0.2:80`,
    `steady/10.${net}.0.3:80`,
    `web/10.${net}.1.1:8080`,
    `web/10.${net}.1.2:8080`,
    `edit/10.${net}.2.1:80`,
    `doomed/10.${net}.3.1:80`,
  ];
}

describe('control-plane faults and an operator crash', () => {
  before(async () => {
    bed = await startBed({ log: () => undefined });
    kc = new KubeConfig();
    kc.loadFromFile(bed.kubeconfig);
    etcd = new Etcd3({ hosts: bed.registryEtcd.clientUrl });
    apiProxy = await TcpProxy.start(bed.apiserverUrl);
    slowEtcd = await TcpProxy.start(bed.registryEtcd.clientUrl);
    slowConsul = await TcpProxy.start(bed.consulAddr);
    proxiedKubeconfig = await kubeconfigVia(bed.kubeconfig, apiProxy.url('https'));
    await installCrds(kc);
    for (const name of [`restart-${sfx}`, `expire-${sfx}`]) await createNamespace(kc, name, { faults: 'cp' });
    await createNamespace(kc, `bulk-${sfx}`, { faults: 'bulk' });
    await createRegistry(kc, 'etcd-cp', {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { faults: 'cp' } },
      leaseTTLSeconds: 10,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: '/cp' },
    });
    await createRegistry(kc, 'consul-cp', {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { faults: 'cp' } },
      leaseTTLSeconds: 10,
      consul: { address: bed.consulAddr, serviceName: '{namespace}-{service}' },
    });
    await createRegistry(kc, 'etcd-bulk', {
      type: 'etcd',
      namespaceSelector: { matchLabels: { faults: 'bulk' } },
      leaseTTLSeconds: 10,
      etcd: { endpoints: [slowEtcd.url('http')], prefix: '/bulk' },
    });
    await createRegistry(kc, 'consul-bulk', {
      type: 'consul',
      namespaceSelector: { matchLabels: { faults: 'bulk' } },
      leaseTTLSeconds: 10,
      consul: { address: slowConsul.url('http'), serviceName: '{namespace}-{service}' },
    });
    operator = await startOperator();
  });

  after(async () => {
    console.log(tally.line());
    await operator?.process.stop();
    etcd?.close();
    await apiProxy?.close();
    await slowEtcd?.close();
    await slowConsul?.close();
    await bed?.stop();
  });

  test('kube-apiserver restarted while the operator is cut off: the registry is kept meanwhile, informers resume, every change made meanwhile lands, and nothing flaps', async () => {
    assert.ok(bed && apiProxy && operator);
    const consulAddr = bed.consulAddr;
    const ns = `restart-${sfx}`;
    const services = ['steady', 'web', 'edit', 'doomed', 'fresh'];
    const before = await baseline(ns, 30);
    await converge(tally, 'the baseline in etcd', () => etcdNamespace('/cp', ns), before, 60_000);
    await converge(tally, 'the baseline in Consul', () => consulNamespace(consulAddress(), ns, services), before, 60_000);

    // Watch for flapping: deletes in etcd and dips in Consul's passing results of what stays.
    const deletes: string[] = [];
    const watcher = await etcd.watch().prefix(`/cp/${ns}/`).create();
    watcher.on('delete', (kv) => deletes.push(kv.key.toString()));
    let minSteadyPassing = Infinity;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        minSteadyPassing = Math.min(minSteadyPassing, (await passingInstances(consulAddr, `${ns}-steady`).catch(() => [])).length);
        await sleep(250);
      }
    })();

    try {
      apiProxy.cut('close');
      tally.fault();
      await bed.restartApiserver();
      tally.fault();
      // Changes the operator cannot see yet.
      await createServiceInstance(kc, ns, 'fresh', { service: 'fresh', endpoints: [{ address: '10.30.4.1', port: 80 }] });
      await patchServiceInstance(kc, ns, 'edit', { endpoints: [{ address: '10.30.2.2', port: 81 }] });
      await setPodReady(kc, ns, 'web-1', '10.30.1.1', false);
      await deletePod(kc, ns, 'web-2', 0);
      await createPod(kc, ns, 'web-3', { labels: { app: 'web' } });
      await setPodReady(kc, ns, 'web-3', '10.30.1.3', true);
      await deleteServiceInstance(kc, ns, 'doomed');

      // Without the control plane the operator still keeps the registry in step with what it last
      // knew: an entry deleted by hand is repaired by the resync.
      const handDeleted = `/cp/${ns}/steady/10.30.0.1:80`;
      await etcd.delete().key(handDeleted);
      await waitFor(
        'the hand-deleted entry to be repaired while the apiserver is unreachable',
        async () => ((await etcd.get(handDeleted).string()) !== null ? true : undefined),
        30_000,
      );
      assert.ok(await operatorAlive(operator), 'the operator is alive while cut off from the control plane');

      apiProxy.heal();
      const after = [
        'steady/10.30.0.1:80',
        'steady/10.30.0.2:80',
        'steady/10.30.0.3:80',
        'web/10.30.1.3:8080',
        'edit/10.30.2.2:81',
        'fresh/10.30.4.1:80',
      ];
      await converge(
        tally,
        'etcd to hold every change made while the operator was cut off',
        () => etcdNamespace('/cp', ns),
        after,
        CONVERGE_MS,
      );
      await converge(
        tally,
        'Consul to hold every change made while the operator was cut off',
        () => consulNamespace(consulAddress(), ns, services),
        after,
        CONVERGE_MS,
      );
      await waitFor(
        'the deleted ServiceInstance to be finalized',
        async () => ((await getServiceInstance(kc, ns, 'doomed')) === undefined ? true : undefined),
        CONVERGE_MS,
      );
      const edit = await waitFor(
        'status of the edited ServiceInstance to catch up',
        async () => {
          const si = await getServiceInstance(kc, ns, 'edit');
          return si?.status?.observedGeneration === si?.metadata.generation &&
            si?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
            ? si
            : undefined;
        },
        CONVERGE_MS,
      );
      assert.equal(edit.status?.endpoints?.registered, 1);

      const stayed = ['10.30.0.1:80', '10.30.0.2:80', '10.30.0.3:80'].map((i) => `/cp/${ns}/steady/${i}`);
      const flapped = deletes.filter((k) => stayed.includes(k) && k !== handDeleted);
      tally.checked(stayed.length, flapped.length);
      assert.deepEqual(flapped, [], 'no entry that stayed desired was deleted in etcd');
      assert.equal(minSteadyPassing, 3, 'the unchanged service stayed passing in Consul throughout');
    } finally {
      polling = false;
      await poller;
      await watcher.cancel();
      apiProxy.heal();
    }
    assert.deepEqual(crashLines(await operator.log()), []);
  });

  test('watches expired by an etcd compaction (410 Gone) relist without losing any update', async () => {
    assert.ok(bed && apiProxy && operator);
    const ns = `expire-${sfx}`;
    const services = ['steady', 'web', 'edit', 'doomed', 'late', 'gone'];
    const before = await baseline(ns, 40);
    await converge(tally, 'the baseline in etcd', () => etcdNamespace('/cp', ns), before, 60_000);
    const logBefore = (await operator.log()).length;

    apiProxy.cut('blackhole');
    tally.fault();
    // A burst of updates the operator's watches miss, ending in a known state.
    for (let i = 0; i < 6; i++) await setPodReady(kc, ns, 'web-1', '10.40.1.1', i % 2 === 1);
    await setPodReady(kc, ns, 'web-2', '10.40.1.2', false);
    for (const port of [81, 82, 83]) await patchServiceInstance(kc, ns, 'edit', { endpoints: [{ address: '10.40.2.1', port }] });
    await patchServiceInstance(kc, ns, 'steady', { endpoints: [1, 2, 3, 4].map((i) => ({ address: `10.40.0.${i}`, port: 80 })) });
    await createPod(kc, ns, 'web-9', { labels: { app: 'web' } });
    await setPodReady(kc, ns, 'web-9', '10.40.1.9', true);
    await deletePod(kc, ns, 'web-9', 0);
    // Created and deleted unseen: it never had a finalizer, so it must never be registered.
    await createServiceInstance(kc, ns, 'gone', { service: 'gone', endpoints: [{ address: '10.40.5.1', port: 80 }] });
    await deleteServiceInstance(kc, ns, 'gone');
    await createServiceInstance(kc, ns, 'late', { service: 'late', endpoints: [{ address: '10.40.4.1', port: 80 }] });
    await deleteServiceInstance(kc, ns, 'doomed');

    // Compact the apiserver's etcd to its current revision, and restart the apiserver so that its
    // watch cache starts after the compaction: every resourceVersion the operator holds is gone.
    const status = JSON.parse(await etcdctl(bed.toolchain.etcdctl, bed.apiserverEtcd.clientUrl, ['endpoint', 'status', '-w', 'json'])) as {
      Status: { header: { revision: number } };
    }[];
    const revision = status[0]?.Status.header.revision;
    assert.ok(revision);
    await etcdctl(bed.toolchain.etcdctl, bed.apiserverEtcd.clientUrl, ['compact', String(revision), '--physical']);
    tally.fault();
    await bed.restartApiserver();
    tally.fault();
    apiProxy.heal();

    const after = [
      'steady/10.40.0.1:80',
      'steady/10.40.0.2:80',
      'steady/10.40.0.3:80',
      'steady/10.40.0.4:80',
      'web/10.40.1.1:8080',
      'edit/10.40.2.1:83',
      'late/10.40.4.1:80',
    ];
    await converge(
      tally,
      'etcd to hold the last state of every object updated while the watches were expired',
      () => etcdNamespace('/cp', ns),
      after,
      CONVERGE_MS,
    );
    await converge(tally, 'Consul to hold the same', () => consulNamespace(consulAddress(), ns, services), after, CONVERGE_MS);
    await waitFor(
      'the deleted ServiceInstance to be finalized',
      async () => ((await getServiceInstance(kc, ns, 'doomed')) === undefined ? true : undefined),
      CONVERGE_MS,
    );
    const log = (await operator.log()).slice(logBefore);
    assert.match(
      log,
      /watch expired \(410 Gone\); relisting|"code":410|too old resource version/,
      'the informers saw their watches expire and relisted',
    );
    assert.ok(await operatorAlive(operator));
    assert.deepEqual(crashLines(log), []);
  });

  test('an operator killed with SIGKILL in the middle of a large change leaves, after its restart, exactly the desired state and no orphans', async () => {
    assert.ok(bed && slowEtcd && slowConsul && operator);
    const ns = `bulk-${sfx}`;
    const ETCD_COUNT = 1000;
    const CONSUL_COUNT = 300;
    const addresses = (n: number): string[] => Array.from({ length: n }, (_, i) => `10.50.${Math.floor(i / 250)}.${(i % 250) + 1}`);
    const etcdOld = addresses(ETCD_COUNT).map((a) => `bulk/${a}:8000`);
    const etcdNew = addresses(ETCD_COUNT).map((a) => `bulk/${a}:9000`);
    const consulOld = addresses(CONSUL_COUNT).map((a) => `bulk/${a}:8000`);
    const consulNew = addresses(CONSUL_COUNT).map((a) => `bulk2/${a}:9000`);
    const consulRead = (): Promise<string[]> => consulNamespace(consulAddress(), ns, ['bulk', 'bulk2']);

    await createServiceInstance(kc, ns, 'bulk-etcd', {
      service: 'bulk',
      registries: ['etcd-bulk'],
      endpoints: addresses(ETCD_COUNT).map((address) => ({ address, port: 8000 })),
    });
    await createServiceInstance(kc, ns, 'bulk-consul', {
      service: 'bulk',
      registries: ['consul-bulk'],
      endpoints: addresses(CONSUL_COUNT).map((address) => ({ address, port: 8000 })),
    });
    await converge(tally, 'the 1,000 etcd entries', () => etcdNamespace('/bulk', ns), etcdOld, CONVERGE_MS);
    await converge(tally, 'the 300 Consul instances', consulRead, consulOld, CONVERGE_MS);

    // Slow both links so each change takes several seconds, then change every
    // entry: a new port for the etcd one (deletes and puts), a new name and port for the Consul one
    // (new services, then the old ones cleaned up).
    slowEtcd.slow(80);
    slowConsul.slow(80);
    tally.fault();
    await patchServiceInstance(kc, ns, 'bulk-etcd', { endpoints: addresses(ETCD_COUNT).map((address) => ({ address, port: 9000 })) });
    await patchServiceInstance(kc, ns, 'bulk-consul', {
      service: 'bulk2',
      endpoints: addresses(CONSUL_COUNT).map((address) => ({ address, port: 9000 })),
    });
    const partial = (now: readonly string[], from: readonly string[], to: readonly string[]): boolean => {
      const s = JSON.stringify([...now].sort());
      return s !== JSON.stringify([...from].sort()) && s !== JSON.stringify([...to].sort());
    };
    const midway = await waitFor(
      'both registries to be halfway through the change',
      async () => {
        const [e, c] = await Promise.all([etcdNamespace('/bulk', ns), consulRead()]);
        return partial(e, etcdOld, etcdNew) && partial(c, consulOld, consulNew) ? { etcd: e, consul: c } : undefined;
      },
      60_000,
      50,
    );
    await operator.process.kill();
    tally.fault();
    operator = undefined;
    slowEtcd.slow(0);
    slowConsul.slow(0);
    const [etcdAtKill, consulAtKill] = await Promise.all([etcdNamespace('/bulk', ns), consulRead()]);
    console.log(
      `crash mid-batch: killed with etcd at ${midway.etcd.filter((k) => k.endsWith(':9000')).length}/${ETCD_COUNT} new and ${midway.etcd.filter((k) => k.endsWith(':8000')).length} old entries, ` +
        `Consul at ${midway.consul.filter((k) => k.startsWith('bulk2/')).length}/${CONSUL_COUNT} new and ${midway.consul.filter((k) => k.startsWith('bulk/')).length} old instances; ` +
        `${etcdAtKill.length} etcd keys and ${consulAtKill.length} passing instances once the process was gone`,
    );

    operator = await startOperator();
    await converge(
      tally,
      'etcd to hold exactly the new 1,000 entries and none of the old',
      () => etcdNamespace('/bulk', ns),
      etcdNew,
      CONVERGE_MS,
    );
    await converge(tally, 'Consul to pass exactly the 300 renamed instances and none of the old', consulRead, consulNew, CONVERGE_MS);
    // Passing results hide critical services: the agent must hold no other service of ours either.
    const ours = (
      await agentServices(
        bed.consulAddr,
        undefined,
        `Meta["kr-owner-cluster"] == "faults-control-plane" and Meta["kr-k8s-namespace"] == "${ns}"`,
      )
    ).map((s) => `${s.name}/${s.address}:${s.port}`);
    assert.deepEqual(ours.sort(), consulNew.map((k) => `${ns}-${k}`).sort(), 'no orphaned service is left on the agent');
    for (const name of ['bulk-etcd', 'bulk-consul']) {
      await waitFor(
        `${name} to be Ready`,
        async () =>
          (await getServiceInstance(kc, ns, name))?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
            ? true
            : undefined,
        CONVERGE_MS,
      );
    }
    assert.ok(await operatorAlive(operator));
  });
});

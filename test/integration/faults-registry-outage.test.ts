/**
 * Registry outages on a bed of this file's own (its servers are stopped and cut off, so the shared
 * bed stays out of it): the registry etcd and a Consul agent stopped for 30 s while things change
 * in Kubernetes, and both registries cut off from the operator for longer than the lease TTL.
 *
 * What a user relies on: the operator never crashes, status says what is wrong meanwhile, entries
 * whose owner cannot vouch for them disappear (no ghosts), and once the registry is back it holds
 * exactly the desired state again, every entry rewritten if its lease expired meanwhile.
 *
 * etcd refreshes every lease when it starts (a stopped etcd cannot expire anything), so a lease
 * only expires while etcd runs and the operator cannot reach it: the second test cuts the link with
 * a proxy instead of stopping the server. A Consul dev agent loses its whole state on restart, so
 * the first test also proves that Consul entries are all rewritten.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { startBed, type Bed } from '../../testbed/bed.ts';
import { uniqueSuffix } from '../support/env.ts';
import {
  consulNamespace,
  converge,
  crashLines,
  etcdChildren,
  etcdKeys,
  FaultTally,
  operatorAlive,
  RestartableConsul,
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
  deleteServiceInstance,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
  setPodReady,
} from '../support/kube.ts';

const sfx = uniqueSuffix();
const OUTAGE_MS = 30_000;
const PARTITION_MS = 15_000;
/** How long entries may take to expire once cut off: the 5 s TTL plus etcd's and Consul's check granularity, on a busy machine. */
const EXPIRY_MS = 30_000;
/** Generous: after a 30 s outage gRPC and the informers may be deep in their back-off. */
const CONVERGE_MS = 120_000;

const tally = new FaultTally('faults-registry-outage');
let bed: Bed | undefined;
let kc: KubeConfig;
let etcd: Etcd3;
let consul: RestartableConsul | undefined;
let etcdProxy: TcpProxy | undefined;
let consulProxy: TcpProxy | undefined;
let operator: FaultOperator | undefined;

/** `address:port` of the keys under one service directory: the instances a gRPC client would see. */
async function etcdInstances(prefix: string, ns: string, service: string): Promise<string[]> {
  return etcdChildren(etcd, `${prefix}/${ns}/${service}/`);
}

/** Every instance of every service of a registry namespace, as `service/address:port`. */
async function etcdNamespace(prefix: string, ns: string): Promise<string[]> {
  return etcdChildren(etcd, `${prefix}/${ns}/`);
}

async function statusCondition(
  ns: string,
  name: string,
  type: string,
): Promise<{ status: string; reason: string; message: string } | undefined> {
  return (await getServiceInstance(kc, ns, name))?.status?.conditions?.find((c) => c.type === type);
}

describe('registry outages', () => {
  before(async () => {
    bed = await startBed({ log: () => undefined });
    kc = new KubeConfig();
    kc.loadFromFile(bed.kubeconfig);
    etcd = new Etcd3({ hosts: bed.registryEtcd.clientUrl });
    consul = await RestartableConsul.start();
    etcdProxy = await TcpProxy.start(bed.registryEtcd.clientUrl);
    consulProxy = await TcpProxy.start(consul.address);
    await installCrds(kc);
    await createNamespace(kc, `outage-${sfx}`, { faults: 'outage' });
    await createNamespace(kc, `split-${sfx}`, { faults: 'split' });
    const common = { default: true, namespace: '{namespace}' };
    await createRegistry(kc, 'etcd-outage', {
      ...common,
      type: 'etcd',
      namespaceSelector: { matchLabels: { faults: 'outage' } },
      leaseTTLSeconds: 10,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: '/outage' },
    });
    await createRegistry(kc, 'consul-outage', {
      ...common,
      type: 'consul',
      namespaceSelector: { matchLabels: { faults: 'outage' } },
      leaseTTLSeconds: 10,
      consul: { address: consul.address, serviceName: '{namespace}-{service}' },
    });
    await createRegistry(kc, 'etcd-split', {
      ...common,
      type: 'etcd',
      namespaceSelector: { matchLabels: { faults: 'split' } },
      leaseTTLSeconds: 5,
      etcd: { endpoints: [etcdProxy.url('http')], prefix: '/split' },
    });
    await createRegistry(kc, 'consul-split', {
      ...common,
      type: 'consul',
      namespaceSelector: { matchLabels: { faults: 'split' } },
      leaseTTLSeconds: 5,
      consul: { address: consulProxy.url('http'), serviceName: '{namespace}-{service}' },
    });
    operator = await startOperatorOn({
      kubeconfig: bed.kubeconfig,
      flags: ['--resync-period=2', '--registry-timeout=3', '--cluster-id=faults-outage'],
    });
  });

  after(async () => {
    console.log(tally.line());
    await operator?.process.stop();
    etcd?.close();
    await etcdProxy?.close();
    await consulProxy?.close();
    await consul?.close();
    await bed?.stop();
  });

  test('etcd and Consul stopped for 30 s while things change: no crash, status says so, and everything converges once they are back', async () => {
    assert.ok(bed && consul && operator);
    const ns = `outage-${sfx}`;
    await createServiceInstance(kc, ns, 'steady', {
      service: 'steady',
      endpoints: [1, 2, 3].map((i) => ({ address: `10.10.0.${i}`, port: 80 })),
    });
    await createServiceInstance(kc, ns, 'web', { service: 'web', selector: { matchLabels: { app: 'web' } }, port: 8080 });
    await createServiceInstance(kc, ns, 'edit', { service: 'edit', endpoints: [{ address: '10.10.2.1', port: 80 }] });
    await createServiceInstance(kc, ns, 'doomed', {
      service: 'doomed',
      endpoints: [
        { address: '10.10.3.1', port: 80 },
        { address: '10.10.3.2', port: 80 },
      ],
    });
    for (const [i, ip] of ['10.10.1.1', '10.10.1.2'].entries()) {
      await createPod(kc, ns, `web-${i}`, { labels: { app: 'web' } });
      await setPodReady(kc, ns, `web-${i}`, ip, true);
    }
    const services = ['steady', 'web', 'edit', 'doomed', 'fresh'];
    const before = [
      'steady/10.10.0.1:80',
      'steady/10.10.0.2:80',
      'steady/10.10.0.3:80',
      'web/10.10.1.1:8080',
      'web/10.10.1.2:8080',
      'edit/10.10.2.1:80',
      'doomed/10.10.3.1:80',
      'doomed/10.10.3.2:80',
    ];
    await converge(tally, 'the baseline in etcd', () => etcdNamespace('/outage', ns), before, 60_000);
    const consulAddr = consul.address;
    await converge(tally, 'the baseline in Consul', () => consulNamespace(consulAddr, ns, services), before, 60_000);
    // Entries land before the finalizer (it is written behind them); the deletion below is held
    // only once it is there.
    await waitFor(
      'the finalizer on the ServiceInstance to be deleted',
      async () =>
        (await getServiceInstance(kc, ns, 'doomed'))?.metadata?.finalizers?.includes('registrar.dev/finalizer') ? true : undefined,
      60_000,
    );
    const steadyLease = (await etcdKeys(etcd, `/outage/${ns}/steady/`))[0]?.lease;
    assert.ok(steadyLease && steadyLease !== '0');

    const started = Date.now();
    await Promise.all([bed.registryEtcd.stop(), consul.pause()]);
    tally.fault();
    tally.fault();

    // Changes while both registries are gone.
    await createServiceInstance(kc, ns, 'fresh', { service: 'fresh', endpoints: [{ address: '10.10.4.1', port: 80 }] });
    await patchServiceInstance(kc, ns, 'edit', { endpoints: [{ address: '10.10.2.2', port: 81 }] });
    await setPodReady(kc, ns, 'web-0', '10.10.1.1', false);
    await createPod(kc, ns, 'web-2', { labels: { app: 'web' } });
    await setPodReady(kc, ns, 'web-2', '10.10.1.3', true);
    await deleteServiceInstance(kc, ns, 'doomed');

    // Meanwhile status says what is wrong, and the deleted ServiceInstance waits for its cleanup.
    const failed = await waitFor(
      'status of the edited ServiceInstance to report the failed registration',
      async () => {
        const c = await statusCondition(ns, 'edit', 'Registered');
        return c?.status === 'False' && c.reason === 'RegistrationFailed' ? c : undefined;
      },
      OUTAGE_MS - 5_000,
    );
    assert.match(failed.message, /etcd|Consul/, `the message names the registry that failed: ${failed.message}`);
    assert.ok(await getServiceInstance(kc, ns, 'doomed'), 'the deleted ServiceInstance waits for its entries to be removed');
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - started)));
    assert.ok(await operatorAlive(operator), 'the operator is alive and healthy throughout the outage');

    await Promise.all([bed.registryEtcd.start(), consul.resume()]);
    const after = [
      'steady/10.10.0.1:80',
      'steady/10.10.0.2:80',
      'steady/10.10.0.3:80',
      'web/10.10.1.2:8080',
      'web/10.10.1.3:8080',
      'edit/10.10.2.2:81',
      'fresh/10.10.4.1:80',
    ];
    await converge(tally, 'etcd to hold exactly the desired state', () => etcdNamespace('/outage', ns), after, CONVERGE_MS);
    // The agent came back empty: every passing instance here was registered again.
    await converge(
      tally,
      'Consul to hold exactly the desired state, every entry rewritten',
      () => consulNamespace(consulAddr, ns, services),
      after,
      CONVERGE_MS,
    );
    await waitFor(
      'the deleted ServiceInstance to go once its entries are removed',
      async () => ((await getServiceInstance(kc, ns, 'doomed')) === undefined ? true : undefined),
      CONVERGE_MS,
    );
    for (const name of ['steady', 'web', 'edit', 'fresh']) {
      await waitFor(
        `${name} to be Ready again`,
        async () => ((await statusCondition(ns, name, 'Ready'))?.status === 'True' ? true : undefined),
        CONVERGE_MS,
      );
    }
    const steady = await etcdKeys(etcd, `/outage/${ns}/steady/`);
    assert.deepEqual(
      steady.map((kv) => kv.lease),
      [steadyLease, steadyLease, steadyLease],
      'etcd refreshed the lease on restart and the operator kept it: unchanged entries were not rewritten',
    );
    assert.deepEqual(await etcdInstances('/outage', ns, 'doomed'), []);
    assert.ok(await operatorAlive(operator));
    assert.deepEqual(crashLines(await operator.log()), []);
  });

  test('both registries cut off for longer than the lease TTL: entries expire meanwhile (no ghosts), and all are rewritten when the link heals', async () => {
    assert.ok(consul && etcdProxy && consulProxy && operator);
    const ns = `split-${sfx}`;
    await createServiceInstance(kc, ns, 'steady', {
      service: 'steady',
      endpoints: [1, 2, 3].map((i) => ({ address: `10.20.0.${i}`, port: 80 })),
    });
    await createServiceInstance(kc, ns, 'web', { service: 'web', selector: { matchLabels: { app: 'web' } }, port: 8080 });
    await createServiceInstance(kc, ns, 'edit', { service: 'edit', endpoints: [{ address: '10.20.2.1', port: 80 }] });
    for (const [i, ip] of ['10.20.1.1', '10.20.1.2'].entries()) {
      await createPod(kc, ns, `web-${i}`, { labels: { app: 'web' } });
      await setPodReady(kc, ns, `web-${i}`, ip, true);
    }
    const services = ['steady', 'web', 'edit'];
    const before = [
      'steady/10.20.0.1:80',
      'steady/10.20.0.2:80',
      'steady/10.20.0.3:80',
      'web/10.20.1.1:8080',
      'web/10.20.1.2:8080',
      'edit/10.20.2.1:80',
    ];
    await converge(tally, 'the baseline in etcd', () => etcdNamespace('/split', ns), before, 60_000);
    const consulAddr = consul.address;
    await converge(tally, 'the baseline in Consul', () => consulNamespace(consulAddr, ns, services), before, 60_000);
    const oldLease = (await etcdKeys(etcd, `/split/${ns}/steady/`))[0]?.lease;

    const started = Date.now();
    etcdProxy.cut('blackhole');
    consulProxy.cut('blackhole');
    tally.fault();
    tally.fault();
    await patchServiceInstance(kc, ns, 'edit', { endpoints: [{ address: '10.20.2.2', port: 81 }] });
    await setPodReady(kc, ns, 'web-0', '10.20.1.1', false);

    // Nobody vouches for the entries any more: they leave etcd and Consul's passing results.
    await waitFor(
      'every etcd entry to expire with its lease',
      async () => ((await etcdNamespace('/split', ns)).length === 0 ? true : undefined),
      EXPIRY_MS,
    );
    await waitFor(
      'every Consul instance to leave the passing results',
      async () => ((await consulNamespace(consulAddr, ns, services)).length === 0 ? true : undefined),
      EXPIRY_MS,
    );
    await sleep(Math.max(0, PARTITION_MS - (Date.now() - started)));
    assert.ok(await operatorAlive(operator), 'the operator is alive and healthy throughout the partition');

    etcdProxy.heal();
    consulProxy.heal();
    const after = ['steady/10.20.0.1:80', 'steady/10.20.0.2:80', 'steady/10.20.0.3:80', 'web/10.20.1.2:8080', 'edit/10.20.2.2:81'];
    await converge(tally, 'etcd to hold exactly the desired state again', () => etcdNamespace('/split', ns), after, CONVERGE_MS);
    await converge(
      tally,
      'Consul to pass exactly the desired state again',
      () => consulNamespace(consulAddr, ns, services),
      after,
      CONVERGE_MS,
    );
    const rewritten = await etcdKeys(etcd, `/split/${ns}/`);
    assert.ok(
      rewritten.every((kv) => kv.lease !== '0' && kv.lease !== oldLease),
      'every entry was rewritten on a new lease',
    );
    assert.ok(await operatorAlive(operator));
    assert.deepEqual(crashLines(await operator.log()), []);
  });
});

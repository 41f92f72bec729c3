/**
 * Zero-downtime rollouts under real controllers (a bed with kube-controller-manager, the
 * scheduler and kwok): a Deployment of 10 replicas behind a ServiceInstance, its etcd entries
 * observed by an etcd watch while the Deployment rolls with maxUnavailable 0.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { AppsV1Api, CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { Etcd3, type Watcher } from 'etcd3';

import { startBed, type Bed } from '../../testbed/bed.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, installCrds } from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const sfx = randomUUID().slice(0, 8);
const ns = `roll-${sfx}`;
const PREFIX = `/roll-${sfx}`;
const ENTRIES = `${PREFIX}/${ns}/web/`;
const REPLICAS = 10;
/**
 * How long after a pod's deletionTimestamp is seen its entry may still be there: the operator's
 * reaction (watch event, reconcile, one transaction), generous for a loaded 2-core machine.
 */
const PROPAGATION_BOUND_MS = 5_000;

let bed: Bed;
let kc: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let etcd: Etcd3;
let operator: OperatorProcess | undefined;

/** The entry keys under ENTRIES as an etcd watch delivers them, with the smallest count seen since `mark()`. */
class EntryWatch {
  readonly keys = new Set<string>();
  /** When each key was deleted (ms since the epoch), by IP. */
  readonly deletedAt = new Map<string, number>();
  min = Number.POSITIVE_INFINITY;
  #watcher: Watcher | undefined;

  async start(): Promise<void> {
    for (const key of await etcd.getAll().prefix(ENTRIES).keys()) this.keys.add(key);
    this.#watcher = await etcd.watch().prefix(ENTRIES).create();
    this.#watcher.on('put', (kv) => {
      this.keys.add(kv.key.toString());
    });
    this.#watcher.on('delete', (kv) => {
      const key = kv.key.toString();
      this.keys.delete(key);
      this.deletedAt.set(ipOf(key), Date.now());
      this.min = Math.min(this.min, this.keys.size);
    });
  }

  mark(): void {
    this.min = this.keys.size;
  }

  ips(): string[] {
    return [...this.keys].map(ipOf).sort();
  }

  async stop(): Promise<void> {
    await this.#watcher?.cancel();
  }
}

function ipOf(key: string): string {
  return key.slice(ENTRIES.length).replace(/:\d+$/, '');
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && !pod.metadata?.deletionTimestamp;
}

async function pods(): Promise<V1Pod[]> {
  return (await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' })).items;
}

void describe('rollouts under real controllers, etcd', () => {
  before(async () => {
    bed = await startBed({ controlPlane: true, log: () => undefined });
    kc = new KubeConfig();
    kc.loadFromFile(bed.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    etcd = new Etcd3({ hosts: bed.registryEtcd.clientUrl });
    await installCrds(kc);
    for (const name of ['a', 'b'])
      await core.createNode({ body: { metadata: { name: `kwok-${name}-${sfx}`, annotations: { 'kwok.x-k8s.io/node': 'fake' } } } });
    await createNamespace(kc, ns, { rollout: sfx });
    await createRegistry(kc, `roll-${sfx}`, {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { rollout: sfx } },
      namespace: '{namespace}',
      leaseTTLSeconds: 10,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX, format: 'json' },
    });
    operator = await startOperator([], {}, bed.kubeconfig);
  });
  after(async () => {
    await operator?.process.stop();
    etcd?.close();
    await bed?.stop();
  });

  void it('a rolling update with maxUnavailable 0 never leaves fewer than 10 entries, and each replaced pod’s entry goes within the bound of its deletion', async () => {
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: REPLICAS,
          selector: { matchLabels: { app: 'web' } },
          strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 2 } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: {
              containers: [{ name: 'app', image: 'registry.invalid/web:1', ports: [{ name: 'http', containerPort: 8080 }] }],
              terminationGracePeriodSeconds: 10,
            },
          },
        },
      },
    });
    await createServiceInstance(kc, ns, 'web', { service: 'web', selector: { matchLabels: { app: 'web' } }, port: 'http' });
    const watch = new EntryWatch();
    await watch.start();
    const before = await eventually(
      '10 entries, one per Ready pod',
      async () => {
        const ready = (await pods()).filter(isReady);
        const ips = ready.map((p) => p.status?.podIP ?? '').sort();
        return ready.length === REPLICAS && JSON.stringify(watch.ips()) === JSON.stringify(ips) ? ips : undefined;
      },
      120_000,
    );

    const oldHashes = new Set((await pods()).map((p) => p.metadata?.labels?.['pod-template-hash'] ?? ''));
    // Deletion timestamps as a watch of the pods sees them, by pod IP.
    const deletionSeen = new Map<string, number>();
    const poll = setInterval(() => {
      void pods().then((list) => {
        for (const p of list)
          if (p.metadata?.deletionTimestamp && p.status?.podIP && !deletionSeen.has(p.status.podIP))
            deletionSeen.set(p.status.podIP, Date.now());
      });
    }, 100);
    watch.mark();
    // Old pods' IPs that kwok gave to new pods: their keys now hold the new pods' entries.
    const reused: string[] = [];
    try {
      await apps.patchNamespacedDeployment(
        {
          namespace: ns,
          name: 'web',
          body: { spec: { template: { metadata: { annotations: { restartedAt: new Date().toISOString() } } } } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      const after = await eventually(
        'the rollout done: 10 new Ready pods, their 10 entries',
        async () => {
          const list = await pods();
          const ready = list.filter(isReady);
          const ips = ready.map((p) => p.status?.podIP ?? '').sort();
          // kwok recycles pod IPs, so the new pods are told from the old by their template hash.
          const done =
            list.length === REPLICAS &&
            ready.length === REPLICAS &&
            ready.every((p) => !oldHashes.has(p.metadata?.labels?.['pod-template-hash'] ?? ''));
          return done && JSON.stringify(watch.ips()) === JSON.stringify(ips) ? ips : undefined;
        },
        180_000,
      );
      assert.equal(after.length, REPLICAS);
      reused.push(...before.filter((ip) => after.includes(ip)));
    } finally {
      clearInterval(poll);
      await watch.stop();
    }

    assert.ok(watch.min >= REPLICAS, `the registry held ${watch.min} entries at its lowest during the rollout`);
    for (const ip of before) {
      const deleted = watch.deletedAt.get(ip);
      if (deleted === undefined && reused.includes(ip)) continue;
      assert.ok(deleted !== undefined, `the entry of replaced pod ${ip} was deleted`);
      const seen = deletionSeen.get(ip);
      if (seen !== undefined)
        assert.ok(
          deleted - seen <= PROPAGATION_BOUND_MS,
          `the entry of ${ip} went ${deleted - seen} ms after its pod was seen terminating`,
        );
    }
    assert.ok(deletionSeen.size >= REPLICAS / 2, `most replaced pods were seen terminating (${deletionSeen.size})`);
  });
});

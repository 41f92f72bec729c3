/**
 * Zero-downtime rollouts under real controllers (a bed with kube-controller-manager, the
 * scheduler and kwok): a Deployment of 10 replicas on three kwok nodes behind a ServiceInstance,
 * registered in etcd and in Consul by two operators electing a leader. Each case compares the
 * pods' lives, as a pod watch sees them, with the registries as their consumers see them: an etcd
 * watch and a Consul blocking query.
 *
 * What every case holds to, in both registries:
 * - the entry of a pod that stops serving (terminating, or marked unready with its node) goes
 *   within PROPAGATION_BOUND_MS of the pod watch seeing it, and not before: no flapping;
 * - the entry of a pod that keeps serving is never removed, nor (etcd) written again;
 * - once the pods settle, the entries are exactly the Ready pods' IPs.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import type { AppsV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';

import type { Bed } from '../../testbed/bed.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, installCrds } from '../support/kube.ts';
import { isLeader, leaderAndStandby, startOperator, type OperatorProcess } from '../support/operator.ts';
import {
  ConsulRegistryWatch,
  createDeployment,
  createReadyKwokNodes,
  drainNode,
  EtcdRegistryWatch,
  makeNodeNotReady,
  notReadyTolerations,
  PodWatch,
  restartDeployment,
  scaleDeployment,
  startControlPlaneBed,
  stoppedServingAt,
  type PodLife,
  type RegistryWatch,
} from '../support/rollout.ts';

const sfx = randomUUID().slice(0, 8);
const ns = `roll-${sfx}`;
const PREFIX = `/roll-${sfx}`;
const ENTRIES = `${PREFIX}/${ns}/web/`;
const CONSUL_SERVICE = `${ns}-web`;
const REPLICAS = 10;
const NODES = ['a', 'b', 'c'].map((n) => `kwok-${n}-${sfx}`);
/**
 * How long after the pod watch sees a pod stop serving its entry may still be there: the
 * operator's reaction (watch event, reconcile, one write), generous for a loaded 2-core machine.
 */
const PROPAGATION_BOUND_MS = 5_000;
/** The operators' leader-election lease, in seconds. */
const LEASE_DURATION = 4;
/** A removal seen this much before the pod watch saw the pod leave is one the operator made early. */
const WATCH_SKEW_MS = 2_000;

let bed: Bed;
let kc: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let etcd: Etcd3;
const operators: OperatorProcess[] = [];

const leaderFlags = [
  '--leader-elect=true',
  `--leader-election-namespace=${ns}`,
  `--lease-duration=${LEASE_DURATION}`,
  '--renew-deadline=3',
  '--retry-period=1',
];

/** The pods and both registries, followed from now on. */
interface Observation {
  readonly pods: PodWatch;
  readonly etcd: EtcdRegistryWatch;
  readonly consul: ConsulRegistryWatch;
  readonly registries: readonly RegistryWatch[];
  /** Pods Ready when the observation began. */
  readonly before: readonly PodLife[];
}

async function observe(): Promise<Observation> {
  const pods = await PodWatch.start(kc, ns, 'web');
  const etcdWatch = await EtcdRegistryWatch.start(etcd, ENTRIES);
  const consulWatch = await ConsulRegistryWatch.start(bed.consulAddr, CONSUL_SERVICE);
  for (const r of [etcdWatch, consulWatch]) r.mark();
  return { pods, etcd: etcdWatch, consul: consulWatch, registries: [etcdWatch, consulWatch], before: pods.ready() };
}

/** Runs `work` with the pods and both registries followed, and stops following whatever happens. */
async function observing(work: (o: Observation) => Promise<void>): Promise<void> {
  const o = await observe();
  try {
    await work(o);
  } finally {
    o.pods.stop();
    for (const r of o.registries) await r.stop();
  }
}

/**
 * Waits until `replicas` pods exist, all Ready and none terminating, `accept` holds of them, and
 * both registries hold exactly their IPs; resolves those pods.
 */
async function settled(o: Observation, what: string, replicas: number, accept?: (pods: PodLife[]) => boolean): Promise<PodLife[]> {
  return eventually(what, async () => o.pods.settled(replicas, o.registries, accept), 180_000);
}

function registryName(r: RegistryWatch): string {
  return r instanceof EtcdRegistryWatch ? 'etcd' : 'Consul';
}

/**
 * Asserts that each pod of `left` had its entry removed within `boundMs` of leaving, and not
 * before, in every registry; resolves the removal delays in ms. A pod whose IP kwok gave to a
 * new pod that was Ready within the bound may keep its key: it holds the new pod's entry.
 */
function assertRemovedWithin(o: Observation, left: readonly PodLife[], boundMs: number): number[] {
  const delays: number[] = [];
  for (const r of o.registries) {
    for (const pod of left) {
      const gone = stoppedServingAt(pod);
      assert.ok(gone !== undefined, `${pod.name} was seen to stop serving`);
      const removal = r.events.find((e) => e.kind === 'remove' && e.ip === pod.ip && e.at >= (pod.readyAt ?? 0));
      if (removal === undefined || removal.at > gone + boundMs) {
        const heir = [...o.pods.pods.values()].find(
          (q) => q.uid !== pod.uid && q.ip === pod.ip && (q.readyAt ?? Infinity) <= gone + boundMs,
        );
        assert.ok(
          heir,
          `${registryName(r)}: the entry of ${pod.name} (${pod.ip}) was still there ${removal ? removal.at - gone : 'ever'} ms after it stopped serving`,
        );
        continue;
      }
      assert.ok(
        removal.at >= gone - WATCH_SKEW_MS,
        `${registryName(r)}: the entry of ${pod.name} (${pod.ip}) went ${gone - removal.at} ms before the pod stopped serving`,
      );
      delays.push(removal.at - gone);
    }
  }
  return delays;
}

/** Asserts that `r` never held fewer than `n` entries since its mark, showing its changes when it did. */
function assertAtLeast(r: RegistryWatch, n: number): void {
  if (r.min >= n) return;
  const t0 = r.events[0]?.at ?? 0;
  const changes = r.events.map((e) => `+${e.at - t0} ms ${e.kind} ${e.ip}`).join('\n');
  assert.fail(`${registryName(r)} held ${r.min} entries at its lowest (at least ${n} expected); its changes:\n${changes}`);
}

/** Asserts that no registry removed or rewrote the entry of any pod in `stayed`. */
function assertUntouched(o: Observation, stayed: readonly PodLife[]): void {
  for (const r of o.registries) {
    const ips = new Set(stayed.map((p) => p.ip));
    const touched = r.events.filter((e) => ips.has(e.ip));
    assert.deepEqual(touched, [], `${registryName(r)}: the entries of the pods that kept serving were left alone`);
  }
}

void describe('rollouts under real controllers, in etcd and Consul', () => {
  before(async () => {
    ({ bed, kc, core, apps } = await startControlPlaneBed());
    etcd = new Etcd3({ hosts: bed.registryEtcd.clientUrl });
    await installCrds(kc);
    await createReadyKwokNodes(core, NODES);
    await createNamespace(kc, ns, { rollout: sfx });
    await createRegistry(kc, `roll-etcd-${sfx}`, {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { rollout: sfx } },
      namespace: '{namespace}',
      leaseTTLSeconds: 10,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX, format: 'json' },
    });
    await createRegistry(kc, `roll-consul-${sfx}`, {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { rollout: sfx } },
      consul: { address: bed.consulAddr, serviceName: '{namespace}-{service}' },
    });
    // Tolerating a NotReady node for 2 s, so that its pods are evicted within a test's time.
    await createDeployment(apps, ns, 'web', { replicas: REPLICAS, podSpec: { tolerations: notReadyTolerations(2) } });
    await createServiceInstance(kc, ns, 'web', { service: 'web', selector: { matchLabels: { app: 'web' } }, port: 'http' });
    operators.push(await startOperator(leaderFlags, {}, bed.kubeconfig), await startOperator(leaderFlags, {}, bed.kubeconfig));
  });
  after(async () => {
    for (const op of operators) await op.process.stop();
    etcd?.close();
    await bed?.stop();
  });

  void it('a rolling update with maxUnavailable 0 never leaves fewer than 10 entries, and writes one create and one delete per replaced pod', async () => {
    await observing(async (o) => {
      await settled(o, '10 Ready pods and their entries', REPLICAS);
      const oldHashes = new Set(o.pods.live().map((p) => p.templateHash));
      const old = o.pods.ready();
      for (const r of o.registries) r.mark();
      const putsBefore = o.etcd.puts;
      const deletesBefore = o.etcd.deletes;
      await restartDeployment(apps, ns, 'web');
      // kwok recycles pod IPs, so new pods are told from old ones by their template hash.
      const fresh = await settled(o, 'the rollout done: 10 new Ready pods and their entries', REPLICAS, (ready) =>
        ready.every((p) => !oldHashes.has(p.templateHash)),
      );
      for (const r of o.registries) assertAtLeast(r, REPLICAS);
      assertRemovedWithin(o, old, PROPAGATION_BOUND_MS);
      // One create per new pod and one delete per old one; an old IP a new pod took while the old
      // entry was still there is one write less (the key changes hands in one put).
      const puts = o.etcd.puts - putsBefore;
      const deletes = o.etcd.deletes - deletesBefore;
      const handedOver = old.filter(
        (p) => fresh.some((q) => q.ip === p.ip) && !o.etcd.events.some((e) => e.kind === 'remove' && e.ip === p.ip),
      ).length;
      assert.equal(puts, REPLICAS, 'one put per new pod');
      assert.equal(deletes, REPLICAS - handedOver, 'one delete per replaced pod');
    });
  });

  void it('scaled to 3 and back to 10, entries follow and the 3 pods that stay never flap', async () => {
    await observing(async (o) => {
      const all = await settled(o, '10 Ready pods and their entries', REPLICAS);
      for (const r of o.registries) r.mark();
      await scaleDeployment(apps, ns, 'web', 3);
      const stayed = await settled(o, '3 pods and their entries', 3);
      const removed = all.filter((p) => !stayed.some((s) => s.uid === p.uid));
      assert.equal(removed.length, REPLICAS - 3);
      assertRemovedWithin(o, removed, PROPAGATION_BOUND_MS);
      await scaleDeployment(apps, ns, 'web', REPLICAS);
      const grown = await settled(o, '10 pods and their entries again', REPLICAS);
      assert.ok(
        stayed.every((s) => grown.some((p) => p.uid === s.uid)),
        'the 3 pods that stayed are among the 10',
      );
      for (const r of o.registries) assertAtLeast(r, 3);
      assertUntouched(o, stayed);
    });
  });

  void it('the leader killed in the middle of a rollout: the standby finishes it with the same guarantees, late by at most the takeover', async () => {
    await observing(async (o) => {
      await settled(o, '10 Ready pods and their entries', REPLICAS);
      const { leader, standby } = await leaderAndStandby(operators);
      const oldHashes = new Set(o.pods.live().map((p) => p.templateHash));
      const old = o.pods.ready();
      for (const r of o.registries) r.mark();
      await restartDeployment(apps, ns, 'web');
      await eventually(
        'the rollout under way: an old pod terminating',
        async () => (old.some((p) => o.pods.pods.get(p.uid)?.terminatingAt !== undefined) ? true : undefined),
        60_000,
      );
      await leader.process.kill();
      operators.splice(operators.indexOf(leader), 1);
      await eventually('the standby to lead', async () => ((await isLeader(standby)) ? true : undefined), (LEASE_DURATION + 10) * 1000);
      await settled(o, 'the rollout done under the new leader', REPLICAS, (ready) => ready.every((p) => !oldHashes.has(p.templateHash)));
      for (const r of o.registries) assertAtLeast(r, REPLICAS);
      // Pods that left while nobody led wait for the takeover: lease duration plus a few retries.
      assertRemovedWithin(o, old, PROPAGATION_BOUND_MS + (LEASE_DURATION + 5) * 1000);
      // A standby again, for the cases that follow.
      operators.push(await startOperator(leaderFlags, {}, bed.kubeconfig));
    });
  });

  void it('a drained node’s pods leave the registries as they are evicted; the others stay untouched', async () => {
    await observing(async (o) => {
      const all = await settled(o, '10 Ready pods and their entries', REPLICAS);
      const node = NODES[2] ?? '';
      const drained = all.filter((p) => p.node === node);
      assert.ok(drained.length > 0, `the scheduler put some pods on ${node}`);
      for (const r of o.registries) r.mark();
      await drainNode(core, node);
      await settled(o, `10 Ready pods off ${node}`, REPLICAS, (ready) => ready.every((p) => p.node !== node));
      assertRemovedWithin(o, drained, PROPAGATION_BOUND_MS);
      assertUntouched(
        o,
        all.filter((p) => p.node !== node),
      );
    });
  });

  void it('a node that turns NotReady: its pods’ entries leave as the pods are marked unready and evicted', async () => {
    await observing(async (o) => {
      const all = await settled(o, '10 Ready pods and their entries', REPLICAS);
      const node = NODES[1] ?? '';
      const lost = all.filter((p) => p.node === node);
      assert.ok(lost.length > 0, `the scheduler put some pods on ${node}`);
      for (const r of o.registries) r.mark();
      await makeNodeNotReady(core, node);
      // The only node left schedulable and Ready takes the replacements.
      await settled(o, `10 Ready pods on ${NODES[0] ?? ''}`, REPLICAS, (ready) => ready.every((p) => p.node === NODES[0]));
      for (const pod of lost) assert.ok(o.pods.pods.get(pod.uid)?.goneAt !== undefined, `${pod.name} was evicted`);
      assertRemovedWithin(o, lost, PROPAGATION_BOUND_MS);
      assertUntouched(
        o,
        all.filter((p) => p.node === NODES[0]),
      );
    });
  });
});

/**
 * The bed's control plane (`startBed({ controlPlane: true })`): kube-controller-manager,
 * kube-scheduler and kwok turn Deployments into scheduled pods that start and become Ready on
 * simulated nodes, end them within their grace period when scaled down, and evict them from a
 * node that turns NotReady — what the rollout tests rely on, proven on the real components.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import type { AppsV1Api, CoreV1Api, KubeConfig, V1Pod } from '@kubernetes/client-node';

import type { Bed } from '../../testbed/bed.ts';
import { createNamespace, eventually } from '../support/kube.ts';
import {
  createDeployment,
  createReadyKwokNodes,
  isPodReady,
  makeNodeNotReady,
  nodeReady,
  notReadyTolerations,
  scaleDeployment,
  startControlPlaneBed,
} from '../support/rollout.ts';

let bed: Bed;
let kc: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
const sfx = randomUUID().slice(0, 8);
const ns = `cp-${sfx}`;

async function podsOf(app: string): Promise<V1Pod[]> {
  return (await core.listNamespacedPod({ namespace: ns, labelSelector: `app=${app}` })).items;
}

void describe('the bed’s control plane: controllers, scheduler and kwok nodes', () => {
  before(async () => {
    ({ bed, kc, core, apps } = await startControlPlaneBed());
    await createNamespace(kc, ns);
    await createReadyKwokNodes(core, [`kwok-a-${sfx}`, `kwok-b-${sfx}`], (name) => ({ pool: name.startsWith('kwok-a-') ? 'a' : 'b' }));
  });
  after(async () => {
    await bed?.stop();
  });

  void it('a Deployment’s pods are scheduled onto kwok nodes, start and become Ready; scaled down, the extra pods end within their grace period', async () => {
    await createDeployment(apps, ns, 'web', { replicas: 4, terminationGracePeriodSeconds: 5 });
    const ready = await eventually(
      'four Ready pods of the Deployment',
      async () => {
        const pods = (await podsOf('web')).filter(isPodReady);
        return pods.length === 4 ? pods : undefined;
      },
      90_000,
    );
    for (const pod of ready) {
      assert.match(pod.spec?.nodeName ?? '', new RegExp(`^kwok-[ab]-${sfx}$`), 'scheduled onto a kwok node');
      assert.ok(pod.status?.podIP, `${pod.metadata?.name ?? ''} has an IP`);
      assert.equal(pod.status?.phase, 'Running');
    }

    await scaleDeployment(apps, ns, 'web', 1);
    // The ReplicaSet controller deletes three pods gracefully: they show as terminating first.
    const terminating = await eventually(
      'three pods terminating',
      async () => {
        const pods = (await podsOf('web')).filter((p) => p.metadata?.deletionTimestamp);
        return pods.length === 3 ? pods : undefined;
      },
      30_000,
    );
    for (const pod of terminating) assert.equal(pod.metadata?.deletionGracePeriodSeconds, 5);
    // kwok ends them within the grace period; the one that stays was never touched.
    await eventually('one pod left', async () => ((await podsOf('web')).length === 1 ? true : undefined), 30_000);
    const [left] = await podsOf('web');
    assert.ok(left && isPodReady(left), 'the remaining pod is Ready and not terminating');
    assert.ok(
      ready.some((p) => p.metadata?.uid === left.metadata?.uid),
      'the pod that stays is one of the four that were Ready',
    );
  });

  void it('a node turned NotReady is marked so by the node lifecycle controller, and its pods are evicted', async () => {
    const node = `kwok-b-${sfx}`;
    // Tolerating NotReady for 2 s instead of the default 300 s, so that eviction follows at once.
    await createDeployment(apps, ns, 'pinned', {
      replicas: 2,
      terminationGracePeriodSeconds: 5,
      podSpec: { nodeSelector: { pool: 'b' }, tolerations: notReadyTolerations(2) },
    });
    const before = await eventually(
      'two Ready pods on node b',
      async () => {
        const pods = (await podsOf('pinned')).filter(isPodReady);
        return pods.length === 2 ? pods : undefined;
      },
      90_000,
    );
    assert.ok(before.every((p) => p.spec?.nodeName === node));

    await makeNodeNotReady(core, node);
    await eventually(`node ${node} NotReady`, async () => ((await nodeReady(core, node)) === 'False' ? true : undefined), 60_000);
    await eventually(
      'the NoExecute taint of a NotReady node',
      async () =>
        (await core.readNode({ name: node })).spec?.taints?.some(
          (t) => t.key === 'node.kubernetes.io/not-ready' && t.effect === 'NoExecute',
        )
          ? true
          : undefined,
      60_000,
    );
    const uids = new Set(before.map((p) => p.metadata?.uid));
    await eventually(
      'both pods evicted and gone',
      async () => ((await podsOf('pinned')).some((p) => uids.has(p.metadata?.uid)) ? undefined : true),
      60_000,
    );
    // Their replacements cannot run anywhere: the only node that matches is NotReady.
    const replacements = await podsOf('pinned');
    assert.equal(replacements.length, 2, 'the ReplicaSet made two replacements');
    assert.ok(
      replacements.every((p) => !isPodReady(p)),
      'no replacement is Ready on a NotReady node',
    );
  });
});

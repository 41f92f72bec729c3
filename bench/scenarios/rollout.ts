/**
 * Scenario rollout: a Deployment of 100 replicas (20 at small scale) on kwok nodes, behind one
 * ServiceInstance registered in etcd, restarted (`kubectl rollout restart`) with maxUnavailable 0
 * and the default surge of 25 %, once per repeat on the same bed. A pod watch and an etcd watch
 * (test/support/rollout.ts, the rollout proofs' own) time each pod's change to its entry's:
 * - terminating → entry removed: from the pod watch seeing an old pod stop serving (terminating,
 *   or unready first) to the etcd watch seeing its key deleted;
 * - Ready → entry visible: from the pod watch seeing a new pod Ready to its key put.
 * Both clocks are this process's, and the pod watch stands for the apiserver's share: what is
 * measured is what the operator adds. Every put and delete under the Registry's prefix is
 * counted, entries and the operator's own keys alike.
 *
 * The limit beside each latency is a direct mirror in the harness, measured in the same rollout:
 * a pod watch of its own that puts a key the moment it sees a pod Ready and deletes it the moment
 * it sees the pod stop serving, timed against the same pod watch through an etcd watch. It pays
 * what the operator cannot avoid on this machine under this load (its own watch's delivery, one
 * etcd write, the watch back) and nothing of reconciling.
 */
import { AppsV1Api, type V1Pod } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { createNamespace, createRegistry, createServiceInstance, eventually } from '../../test/support/kube.ts';
import {
  createDeployment,
  createReadyKwokNodes,
  EtcdRegistryWatch,
  isPodReady,
  PodWatch,
  restartDeployment,
  stoppedServingAt,
  type PodLife,
} from '../../test/support/rollout.ts';
import { withBed } from '../lib/bed.ts';
import type { BenchKube } from '../lib/kube.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { describeWindow, reconcileWindow, startOperator, type BenchOperator, type ReconcileWindow } from '../lib/operator.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { distribution, type Distribution } from '../lib/stats.ts';

const NS = 'rollout';
const PREFIX = '/bench-rollout';
const DIR = `${PREFIX}/${NS}/web/`;
/** The direct mirror's keys. */
const RAW_DIR = '/bench-rollout-raw/';
/** A registry change seen this much before the pod watch saw the pod's is still the pod's. */
const WATCH_SKEW_MS = 1_000;

interface RolloutRun {
  readonly replicas: number;
  readonly seconds: number;
  readonly removal: Distribution;
  readonly visible: Distribution;
  /** The same, for the direct mirror. */
  readonly rawRemoval: Distribution;
  readonly rawVisible: Distribution;
  /** Old pods whose IP a new pod took before their entry was deleted: one key, one put, no delete. */
  readonly handedOver: number;
  readonly entryPuts: number;
  readonly entryDeletes: number;
  /** Puts and deletes under the prefix outside the entries (owner index, the operator's keys). */
  readonly otherWrites: number;
  /** Writes beyond one put per new pod and one delete per old one. */
  readonly extraWrites: number;
  readonly minEntries: number;
  /** The operator's reconciles during the rollout. */
  readonly reconciles: ReconcileWindow;
}

/** Runs the scenario. */
export async function rollout(ctx: ScenarioContext): Promise<ScenarioResult> {
  const replicas = ctx.options.scale === 'small' ? 20 : 100;
  const runs: RolloutRun[] = [];
  const notes: string[] = [];
  await withBed(
    ctx.log,
    async ({ bed, kube, etcd }) => {
      ctx.onVersions(bed.versions);
      const apps = kube.kc.makeApiClient(AppsV1Api);
      // kwok nodes hold 110 pods each: room for the replicas and the surge on any two of them.
      await createReadyKwokNodes(
        kube.core,
        ['a', 'b', 'c', 'd'].map((n) => `bench-${n}`),
      );
      await createNamespace(kube.kc, NS, { bench: 'rollout' });
      await createRegistry(kube.kc, 'rollout', {
        type: 'etcd',
        default: true,
        namespaceSelector: { matchLabels: { bench: 'rollout' } },
        namespace: '{namespace}',
        etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX, format: 'json' },
      });
      await createDeployment(apps, NS, 'web', { replicas, maxSurge: Math.ceil(replicas / 4) });
      await createServiceInstance(kube.kc, NS, 'web', { service: 'web', selector: { matchLabels: { app: 'web' } }, port: 'http' });
      const op = await startOperator({
        kubeconfig: bed.kubeconfig,
        runFlags: ctx.options.operatorFlags,
        nodeFlags: ctx.nodeFlags(),
        logDir: ctx.runDir,
      });
      try {
        await op.waitReady();
        for (let r = 0; r < ctx.options.repeats; r++) {
          ctx.log(`rollout run ${r + 1}/${ctx.options.repeats}: ${replicas} replicas`);
          runs.push(await rolloutOnce(kube, apps, etcd, op, replicas, ctx.log));
        }
      } finally {
        await op.stop();
      }
    },
    true,
  );
  const of = (pick: (r: RolloutRun) => number): number[] => runs.map(pick);
  const name = `${replicas} replicas, maxUnavailable 0, maxSurge ${Math.ceil(replicas / 4)}`;
  /** A latency's p99 beside the direct mirror's, with the goal, and its max. */
  const latency = (what: string, pick: (r: RolloutRun) => Distribution, mirror: (r: RolloutRun) => Distribution): Figure[] => [
    {
      case: name,
      name: `${what}, p99 (beyond the apiserver)`,
      unit: 'ms',
      runs: of((r) => pick(r).p99),
      limit: { name: 'direct mirror, p99', unit: 'ms', runs: of((r) => mirror(r).p99) },
      goal: { kind: 'below', threshold: 100, text: '< 100 ms (scenario 2’s)' },
    },
    { case: name, name: `${what}, max`, unit: 'ms', runs: of((r) => pick(r).max) },
  ];
  const figures: Figure[] = [
    ...latency(
      'terminating → entry removed',
      (r) => r.removal,
      (r) => r.rawRemoval,
    ),
    ...latency(
      'Ready → entry visible',
      (r) => r.visible,
      (r) => r.rawVisible,
    ),
    { case: name, name: 'entry puts per new pod', unit: '', runs: of((r) => r.entryPuts / r.replicas) },
    { case: name, name: 'entry deletes per replaced pod', unit: '', runs: of((r) => r.entryDeletes / r.replicas) },
    {
      case: name,
      name: 'registry writes beyond one create and one delete per replaced pod',
      unit: 'writes',
      runs: of((r) => r.extraWrites),
      goal: { kind: 'zero', threshold: 0, text: '0 (exactly one create and one delete per replaced pod)' },
    },
    { case: name, name: 'fewest entries held during the rollout', unit: 'entries', runs: of((r) => r.minEntries) },
    { case: name, name: 'rollout duration (restart → all new pods visible)', unit: 's', runs: of((r) => r.seconds) },
  ];
  if (runs.some((r) => r.handedOver > 0))
    notes.push(
      `kwok recycles pod IPs: ${runs.map((r) => r.handedOver).join(' / ')} old pod(s) per run had their IP taken by a new pod before their entry was deleted; such a key changes hands in one put, without a delete, and is left out of the removal latencies.`,
    );
  return {
    id: 'rollout',
    title: '13. Rollout of a Deployment under real controllers (etcd)',
    setup: [
      `Bed with kube-controller-manager, kube-scheduler and kwok (four simulated nodes); one etcd Registry (json); the operator as the image runs it, defaults otherwise.`,
      `Per run: \`rollout restart\` of a Deployment of ${replicas} behind one ServiceInstance, timed by a pod watch and an etcd watch in the harness until every new pod's entry is visible and every old one's gone.`,
    ],
    figures,
    notes,
    details: runs,
  };
}

/**
 * The direct mirror: from its own pod watch, a key per pod put when it is seen Ready and deleted
 * when it is seen to stop serving; resolves a function that stops it.
 */
async function startMirror(kube: BenchKube, etcd: Etcd3): Promise<() => void> {
  const keyOf = new Map<string, string>();
  const list = await kube.core.listNamespacedPod({ namespace: NS });
  for (const pod of list.items)
    if (isPodReady(pod) && pod.status?.podIP) keyOf.set(pod.metadata?.uid ?? '', `${RAW_DIR}${pod.status.podIP}:8080`);
  await etcd.delete().prefix(RAW_DIR);
  for (const key of keyOf.values()) await etcd.put(key).value('1');
  return kube.watch(`/api/v1/namespaces/${NS}/pods`, list.metadata?.resourceVersion ?? '', (phase, obj) => {
    const pod = obj as V1Pod;
    const uid = pod.metadata?.uid ?? '';
    const key = keyOf.get(uid);
    if (key === undefined && phase !== 'DELETED' && isPodReady(pod) && pod.status?.podIP) {
      const k = `${RAW_DIR}${pod.status.podIP}:8080`;
      keyOf.set(uid, k);
      void etcd
        .put(k)
        .value('1')
        .catch(() => undefined);
    } else if (key !== undefined && key !== '' && (phase === 'DELETED' || !isPodReady(pod))) {
      keyOf.set(uid, '');
      void etcd
        .delete()
        .key(key)
        .catch(() => undefined);
    }
  });
}

/** Latencies from the pod watch's view of each pod to a registry's change of its key. */
function latencies(
  events: readonly { at: number; kind: string; ip: string }[],
  old: readonly PodLife[],
  fresh: readonly PodLife[],
  started: number,
): { removal: number[]; visible: number[]; handedOver: number } {
  const removal: number[] = [];
  let handedOver = 0;
  for (const pod of old) {
    const e = events.find((x) => x.kind === 'remove' && x.ip === pod.ip);
    if (e === undefined) handedOver++;
    else removal.push(Math.max(0, e.at - (stoppedServingAt(pod) ?? e.at)));
  }
  const visible: number[] = [];
  for (const pod of fresh) {
    const ready = pod.readyAt ?? started;
    const e = events.find((x) => x.kind !== 'remove' && x.ip === pod.ip && x.at >= ready - WATCH_SKEW_MS);
    if (e !== undefined) visible.push(Math.max(0, e.at - ready));
  }
  return { removal, visible, handedOver };
}

async function rolloutOnce(
  kube: BenchKube,
  apps: AppsV1Api,
  etcd: Etcd3,
  op: BenchOperator,
  replicas: number,
  log: (line: string) => void,
): Promise<RolloutRun> {
  const pods = await PodWatch.start(kube.kc, NS, 'web');
  const entries = await EtcdRegistryWatch.start(etcd, DIR);
  const stopMirror = await startMirror(kube, etcd);
  const mirrored = await EtcdRegistryWatch.start(etcd, RAW_DIR);
  let otherWrites = 0;
  const all = await etcd.watch().prefix(`${PREFIX}/`).create();
  all.on('data', (res) => {
    for (const e of res.events) if (!e.kv.key.toString().startsWith(DIR)) otherWrites++;
  });
  try {
    const settled = (accept?: (ready: PodLife[]) => boolean): Promise<PodLife[]> =>
      eventually('the pods to settle with their entries', async () => pods.settled(replicas, [entries], accept), 900_000);
    const old = await settled();
    const oldHashes = new Set(old.map((p) => p.templateHash));
    otherWrites = 0;
    const putsBefore = entries.puts;
    const deletesBefore = entries.deletes;
    const eventsBefore = entries.events.length;
    const mirroredBefore = mirrored.events.length;
    entries.mark();
    const totalsBefore = await op.reconcileTotals();
    const started = Date.now();
    await restartDeployment(apps, NS, 'web');
    const fresh = await settled((ready) => ready.every((p) => !oldHashes.has(p.templateHash)));
    const seconds = (Date.now() - started) / 1000;
    const reconciles = reconcileWindow(totalsBefore, await op.reconcileTotals());
    const events = entries.events.slice(eventsBefore);
    const { removal, visible, handedOver } = latencies(events, old, fresh, started);
    const raw = latencies(mirrored.events.slice(mirroredBefore), old, fresh, started);
    const entryPuts = entries.puts - putsBefore;
    const entryDeletes = entries.deletes - deletesBefore;
    const run: RolloutRun = {
      replicas,
      seconds,
      removal: distribution(removal),
      visible: distribution(visible),
      rawRemoval: distribution(raw.removal),
      rawVisible: distribution(raw.visible),
      handedOver,
      entryPuts,
      entryDeletes,
      otherWrites,
      extraWrites: Math.max(0, entryPuts - replicas) + Math.max(0, entryDeletes - replicas) + otherWrites,
      minEntries: entries.min,
      reconciles,
    };
    log(
      `rollout: ${seconds.toFixed(1)} s; removal p99 ${run.removal.p99.toFixed(0)} ms (mirror ${run.rawRemoval.p99.toFixed(0)}), visible p99 ${run.visible.p99.toFixed(0)} ms (mirror ${run.rawVisible.p99.toFixed(0)}); ${entryPuts} puts, ${entryDeletes} deletes, ${otherWrites} other writes; fewest entries ${run.minEntries}; ${describeWindow(reconciles)}`,
    );
    return run;
  } finally {
    await all.cancel();
    stopMirror();
    await mirrored.stop();
    await entries.stop();
    pods.stop();
  }
}

/**
 * Scenario 5, churn: a steady stream of changes (pods turning Ready and not Ready, pods replaced
 * by new ones with new IPs, ServiceInstance weights edited) for minutes. The work queue must stay
 * bounded, memory must not grow, and once the stream stops the registry must equal the desired
 * state exactly, as computed independently from what the apiserver holds.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3 } from 'etcd3';
import { withBed, waitFor } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { benchIp, type BenchKube, type ServiceInstanceView } from '../lib/kube.ts';
import { createLayout, PORT, podLayout, type Layout } from '../lib/layout.ts';
import { describeWindow, reconcileWindow, Sampler, startOperator, type BenchOperator, type ReconcileWindow } from '../lib/operator.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { median, slope } from '../lib/stats.ts';
import { StatusTracker } from '../lib/status.ts';

const PREFIX = '/bench';

/** One churn round. */
export interface ChurnRound {
  readonly seconds: number;
  readonly changes: { readonly flips: number; readonly replacements: number; readonly weights: number; readonly failed: number };
  readonly achievedRate: number;
  readonly maxQueueDepth: number;
  readonly p95QueueDepth: number;
  /** Linear trend of the queue depth over the round. */
  readonly depthSlopePerMinute: number;
  /** Seconds from the end of the stream until the queue was empty. */
  readonly drainSeconds: number;
  readonly rssEarlyMB: number;
  readonly rssLateMB: number;
  readonly rssSlopeMBPerMinute: number;
  readonly cpuPercent: number;
  /** Reconciles during the stream, their mean duration and mean wait in the queue (ms). */
  readonly reconciles: ReconcileWindow;
  /** Seconds from the end of the stream until etcd equalled the desired state. */
  readonly convergeSeconds: number;
  readonly mismatches: {
    readonly missing: number;
    readonly extra: number;
    readonly wrong: number;
    readonly desired: number;
    readonly examples: readonly string[];
  };
}

interface PodState {
  readonly ns: string;
  name: string;
  readonly service: string;
  ip: string;
  ready: boolean;
  busy: boolean;
}

/** The desired registry, from the apiserver's objects: key → weight. */
async function desiredState(kube: BenchKube, namespaces: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const ns of namespaces) {
    const sis = (await kube.custom.listNamespacedCustomObject({
      group: 'registrar.dev',
      version: 'v1alpha1',
      plural: 'serviceinstances',
      namespace: ns,
    })) as { items: ServiceInstanceView[] };
    const pods = (await kube.core.listNamespacedPod({ namespace: ns })).items;
    for (const si of sis.items) {
      const app = si.spec.selector?.matchLabels?.['app'];
      for (const p of pods) {
        if (p.metadata?.labels?.['app'] !== app || p.metadata?.deletionTimestamp) continue;
        const ready = (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
        if (ready && p.status?.podIP) out.set(`${PREFIX}/${ns}/${si.spec.service}/${p.status.podIP}:${PORT}`, si.spec.weight ?? 1);
      }
    }
  }
  return out;
}

async function compare(kube: BenchKube, etcd: Etcd3, namespaces: readonly string[]): Promise<ChurnRound['mismatches']> {
  const want = await desiredState(kube, namespaces);
  const have = await etcd.getAll().prefix(`${PREFIX}/`).strings();
  // The operator's own bookkeeping (lease ids) lives under a reserved prefix; it is not an entry.
  for (const k of Object.keys(have)) if (k.startsWith(`${PREFIX}/_kube-registrar/`)) delete have[k];
  let missing = 0;
  let wrong = 0;
  const examples: string[] = [];
  for (const [k, w] of want) {
    const v = have[k];
    if (v === undefined) {
      missing++;
      if (examples.length < 5) examples.push(`missing ${k}`);
    } else if ((JSON.parse(v) as { weight?: number }).weight !== w) {
      wrong++;
      if (examples.length < 5) examples.push(`weight of ${k}: ${v} instead of ${w}`);
    }
  }
  const extraKeys = Object.keys(have).filter((k) => !want.has(k));
  for (const k of extraKeys.slice(0, 5)) examples.push(`extra ${k}: ${have[k] ?? ''}`);
  return { missing, extra: extraKeys.length, wrong, desired: want.size, examples };
}

async function churnRound(
  ctx: ScenarioContext,
  kube: BenchKube,
  etcd: Etcd3,
  op: BenchOperator,
  layout: Layout,
  pods: PodState[],
  round: number,
  ipCounter: { next: number },
): Promise<ChurnRound> {
  const c = ctx.options.churn;
  const sis = [...layout.serviceInstances.entries()].flatMap(([ns, list]) => list.map((si) => ({ ns, name: si.name })));
  const counts = { flips: 0, replacements: 0, weights: 0, failed: 0 };
  const sampler = new Sampler(op, 1000, true);
  const cpuBefore = await op.sample();
  const totalsBefore = await op.reconcileTotals();
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  const total = Math.round(c.rate * c.seconds);
  let issued = 0;
  for (let i = 0; i < total; i++) {
    const wait = started + (i * 1000) / c.rate - performance.now();
    if (wait > 0) await sleep(wait);
    const dice = Math.random();
    let work: Promise<void>;
    if (dice < 0.15) {
      const si = sis[Math.floor(Math.random() * sis.length)] as { ns: string; name: string };
      counts.weights++;
      work = kube.patchServiceInstance(si.ns, si.name, { weight: 1 + Math.floor(Math.random() * 100) });
    } else {
      const idle = pods.filter((p) => !p.busy);
      const pod = idle[Math.floor(Math.random() * idle.length)];
      if (!pod) continue;
      pod.busy = true;
      if (dice < 0.3) {
        // Replace: the old pod goes, a new one with a new name and IP comes up Ready.
        counts.replacements++;
        const old = pod.name;
        pod.name = `${pod.service}-r${ipCounter.next}`;
        pod.ip = benchIp(ipCounter.next++, 2);
        pod.ready = true;
        work = (async () => {
          await kube.deletePod(pod.ns, old);
          await kube.createPod(pod.ns, { name: pod.name, labels: { app: pod.service } });
          await kube.setPodReady(pod.ns, pod.name, pod.ip, true);
        })();
      } else {
        counts.flips++;
        pod.ready = !pod.ready;
        work = kube.setPodReady(pod.ns, pod.name, pod.ip, pod.ready);
      }
      work = work.finally(() => {
        pod.busy = false;
      });
    }
    issued++;
    const tracked = work.catch(() => {
      counts.failed++;
    });
    inFlight.add(tracked);
    void tracked.finally(() => inFlight.delete(tracked));
    if (inFlight.size >= 64) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  const streamEnd = performance.now();
  const reconciles = reconcileWindow(totalsBefore, await op.reconcileTotals());
  const seconds = (streamEnd - started) / 1000;
  const mismatchDeadline = 180_000;
  let mismatches = await compare(kube, etcd, layout.namespaces);
  const converged = await waitFor(
    async () => {
      mismatches = await compare(kube, etcd, layout.namespaces);
      return mismatches.missing + mismatches.extra + mismatches.wrong === 0;
    },
    mismatchDeadline,
    1000,
  );
  const convergeSeconds = converged ? (performance.now() - streamEnd) / 1000 : Number.NaN;
  await waitFor(async () => (await op.metric('kube_registrar_workqueue_depth')) === 0, 60_000, 200);
  await sampler.stop();
  const cpuAfter = await op.sample();

  const during = sampler.depths.filter((d) => d.at <= streamEnd);
  const after = sampler.depths.filter((d) => d.at > streamEnd);
  const drainAt = after.find((d) => d.depth === 0)?.at;
  const depths = during.map((d) => d.depth).sort((a, b) => a - b);
  const settled = during.filter((d) => d.at >= started + 0.2 * seconds * 1000);
  const rss = sampler.samples.filter((x) => x.at <= streamEnd);
  const share = (from: number, to: number): number[] =>
    rss.filter((x) => x.at >= started + from * seconds * 1000 && x.at < started + to * seconds * 1000).map((x) => x.rssMiB * 1.048576);
  const late = rss.filter((x) => x.at >= started + 0.2 * seconds * 1000);
  const r: ChurnRound = {
    seconds,
    changes: counts,
    achievedRate: issued / seconds,
    maxQueueDepth: depths[depths.length - 1] ?? Number.NaN,
    p95QueueDepth: depths[Math.floor(depths.length * 0.95)] ?? Number.NaN,
    // After the warm-up fifth, like RSS: the ramp from an empty queue is not growth.
    depthSlopePerMinute: slope(
      settled.map((d) => (d.at - started) / 60_000),
      settled.map((d) => d.depth),
    ),
    drainSeconds:
      drainAt === undefined ? (during.length > 0 && after.length === 0 ? 0 : Number.NaN) : Math.max(0, (drainAt - streamEnd) / 1000),
    // Warm-up (the first fifth) is left out: caches and JIT settle there.
    rssEarlyMB: median(share(0.2, 0.4)),
    rssLateMB: median(share(0.8, 1)),
    rssSlopeMBPerMinute: slope(
      late.map((x) => (x.at - started) / 60_000),
      late.map((x) => x.rssMiB * 1.048576),
    ),
    cpuPercent: ((cpuAfter.cpuSeconds - cpuBefore.cpuSeconds) / ((cpuAfter.at - cpuBefore.at) / 1000)) * 100,
    reconciles,
    convergeSeconds,
    mismatches,
  };
  ctx.log(
    `  round ${round}: ${issued} changes in ${seconds.toFixed(0)} s (${r.achievedRate.toFixed(1)}/s, ${counts.failed} failed), queue max ${r.maxQueueDepth} p95 ${r.p95QueueDepth} slope ${r.depthSlopePerMinute.toFixed(2)}/min, drained ${r.drainSeconds.toFixed(1)} s; ` +
      `RSS ${r.rssEarlyMB.toFixed(0)} → ${r.rssLateMB.toFixed(0)} MB; CPU ${r.cpuPercent.toFixed(0)} %; ${describeWindow(reconciles)}; registry = desired after ${convergeSeconds.toFixed(1)} s (missing ${mismatches.missing}, extra ${mismatches.extra}, wrong ${mismatches.wrong} of ${mismatches.desired})`,
  );
  for (const e of mismatches.examples) ctx.log(`    ${e}`);
  return r;
}

/** Runs scenario 5 on one bed; each repeat is one round of churn. */
export async function churn(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const c = o.churn;
  const rounds: ChurnRound[] = [];
  let profile: string | undefined;
  const layout = podLayout('churn', Math.min(4, o.namespaces), c.services, c.podsPerService);
  await withBed(ctx.log, async ({ bed, kube, etcd }) => {
    ctx.onVersions(bed.versions);
    await kube.createRegistry('bench', {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'churn' } },
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX },
    });
    await createLayout(kube, layout, { bench: 'churn' });
    const pods: PodState[] = [...layout.pods.entries()].flatMap(([ns, list]) =>
      list.map((p) => ({ ns, name: p.name, service: p.labels['app'] ?? '', ip: p.ip ?? '', ready: true, busy: false })),
    );
    const statuses = await StatusTracker.start(kube, layout.expectedPerSi);
    const profileDir = o.profile ? join(ctx.runDir, 'profile-churn') : undefined;
    const op = await startOperator({
      runFlags: ctx.options.operatorFlags,
      kubeconfig: bed.kubeconfig,
      logDir: join(ctx.runDir, 'churn'),
      nodeFlags: ctx.nodeFlags(profileDir),
    });
    try {
      await op.waitReady();
      if (!(await waitFor(() => !Number.isNaN(statuses.convergedAt), 300_000, 200)))
        throw new Error(`the operator did not converge before the churn: ${statuses.converged}/${statuses.total} statuses`);
      statuses.stop();
      ctx.log(`churn: ${layout.entries.length} entries converged; ${c.rate} changes/s for ${c.seconds} s per round`);
      const ipCounter = { next: 0 };
      for (let r = 1; r <= o.repeats; r++) rounds.push(await churnRound(ctx, kube, etcd, op, layout, pods, r, ipCounter));
    } finally {
      statuses.stop();
      await op.stop();
    }
    if (profileDir) profile = await summariseProfiles(profileDir);
  });
  const cs = `${c.services} SIs × ${c.podsPerService} pods, ${c.rate}/s for ${c.seconds} s`;
  const figures: Figure[] = [
    { case: cs, name: 'changes per second achieved', unit: '/s', runs: rounds.map((r) => r.achievedRate) },
    { case: cs, name: 'queue depth, max', unit: 'keys', runs: rounds.map((r) => r.maxQueueDepth) },
    { case: cs, name: 'queue depth, p95', unit: 'keys', runs: rounds.map((r) => r.p95QueueDepth) },
    {
      case: cs,
      name: 'ServiceInstances waiting, p95 (queue depth ÷ ServiceInstances)',
      unit: '',
      runs: rounds.map((r) => r.p95QueueDepth / c.services),
    },
    {
      case: cs,
      name: 'queue depth trend after warm-up (linear fit)',
      unit: 'keys/min',
      runs: rounds.map((r) => r.depthSlopePerMinute),
      goal: { kind: 'at-most', threshold: 1, text: '≤ 1 key/min (bounded)' },
    },
    { case: cs, name: 'queue empty after the stream stops', unit: 's', runs: rounds.map((r) => r.drainSeconds) },
    {
      case: cs,
      name: 'RSS, late ÷ early (medians of the last fifth and of the second fifth)',
      unit: '×',
      runs: rounds.map((r) => r.rssLateMB / r.rssEarlyMB),
      goal: { kind: 'at-most', threshold: 1.1, text: '≤ 1.10 (no growth)' },
    },
    { case: cs, name: 'RSS, late', unit: 'MB', runs: rounds.map((r) => r.rssLateMB) },
    { case: cs, name: 'operator CPU during churn', unit: '% of a core', runs: rounds.map((r) => r.cpuPercent) },
    { case: cs, name: 'reconciles per second during churn', unit: '/s', runs: rounds.map((r) => r.reconciles.reconciles / r.seconds) },
    { case: cs, name: 'mean reconcile duration', unit: 'ms', runs: rounds.map((r) => r.reconciles.meanReconcileMs) },
    { case: cs, name: 'mean wait in the queue', unit: 'ms', runs: rounds.map((r) => r.reconciles.meanQueueWaitMs) },
    { case: cs, name: 'registry = desired state, after the stream stops', unit: 's', runs: rounds.map((r) => r.convergeSeconds) },
    {
      case: cs,
      name: 'entries differing from desired state (missing + extra + wrong weight)',
      unit: '',
      runs: rounds.map((r) => r.mismatches.missing + r.mismatches.extra + r.mismatches.wrong),
      goal: { kind: 'zero', threshold: 0, text: 'none' },
    },
  ];
  const notes = rounds
    .filter((r) => r.changes.failed > 0)
    .map(
      (r) =>
        `${r.changes.failed} of the changes failed at the apiserver (after retries) and were left out; the desired state is read back from the apiserver, so the comparison stays exact.`,
    );
  const result: ScenarioResult = {
    id: 'churn',
    title: '5. Churn',
    setup: [
      `${c.services} ServiceInstances × ${c.podsPerService} Ready pods over ${layout.namespaces.length} namespaces, one etcd Registry, operator defaults; one bed, each run is one round of churn on the same operator (so memory is followed across rounds too).`,
      `${c.rate} changes per second for ${c.seconds} s: 70 % a pod's Ready flipped, 15 % a pod replaced (deleted; a new pod with a new name and IP created and made Ready), 15 % a ServiceInstance's weight changed. At most 64 changes in flight, never two on one pod.`,
      'Queue depth from kube_registrar_workqueue_depth and RSS from /proc, every second; the first fifth of each round is warm-up for the trends. The queue holds each key once, so its depth can never pass the number of ServiceInstances: "bounded" means it does not trend upwards, and "waiting ÷ ServiceInstances" near 1 means the operator is saturated (every ServiceInstance has a change waiting). Desired state computed independently from the apiserver\'s pods and ServiceInstances after the stream stops, compared key by key (and weight) with etcd.',
    ],
    figures,
    notes,
    details: rounds,
  };
  if (profile) result.profile = profile;
  return result;
}

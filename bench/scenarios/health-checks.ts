/**
 * Scenario 6, active health checks: what probing static endpoints costs the operator, and how
 * fast a failing endpoint leaves the registry and a recovered one comes back.
 *
 * The endpoints are real HTTP health servers on loopback in the harness's process (one address
 * each, bench/lib/health-fleet.ts), probed with a JSON business check. Each run measures, on one
 * operator: a CPU window with the ServiceInstances as plain static endpoints (the baseline), a CPU
 * window with the health check added and every endpoint healthy, then a sample of endpoints
 * flipped to failing at one instant (timed to their deletion in an etcd watch) and back to
 * healthy (timed to their return).
 */
import { readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withBed, waitFor } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import type { BenchOptions } from '../lib/options.ts';
import { counterDelta, etcdCounters, EtcdPrefixWatch, type EtcdEvent } from '../lib/etcd.ts';
import { HEALTH_PATH, HealthFleet } from '../lib/health-fleet.ts';
import type { BenchKube, ServiceInstanceFixture } from '../lib/kube.ts';
import { createLayout, etcdKey, type ExpectedEntry, type Layout } from '../lib/layout.ts';
import { Sampler, startOperator, type BenchOperator } from '../lib/operator.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { distribution, mapBounded, type Distribution } from '../lib/stats.ts';
import { StatusTracker } from '../lib/status.ts';

const PREFIX = '/bench';
const NAMESPACE = 'health-0';
const TTL = 30;
/** The check under test: Kubernetes-probe timing, the defaults of spec.healthCheck. */
const CHECK = {
  http: { path: HEALTH_PATH, expectedJSON: { db: 'ok' } },
  intervalSeconds: 10,
  timeoutSeconds: 1,
  failureThreshold: 3,
  successThreshold: 1,
} as const;
/** Worst case from failing to ejected: failureThreshold probes, each at most an interval after the last, the last taking up to the timeout. */
const EJECT_BOUND_S = CHECK.intervalSeconds * CHECK.failureThreshold + CHECK.timeoutSeconds;
/** Worst case from recovering to re-admitted, likewise. */
const READMIT_BOUND_S = CHECK.intervalSeconds * CHECK.successThreshold + CHECK.timeoutSeconds;
/** A change not in etcd this long after its bound counts as never seen (infinitely late). */
const GRACE_MS = 30_000;

const PROBES = 'kube_registrar_health_probes_total';
const PROBE_SECONDS = 'kube_registrar_health_probe_duration_seconds';
const HEALTHY = 'kube_registrar_health_endpoints{state="healthy"}';

/** One CPU window. */
export interface HealthWindow {
  readonly seconds: number;
  readonly cpuPercent: number;
  readonly rssMaxMB: number;
  readonly probesPerSecond: number;
  readonly probeFailures: number;
  readonly meanProbeMs: number;
  /** Health requests the fleet answered per second: the probes as the endpoints saw them. */
  readonly answersPerSecond: number;
  readonly reconcilesPerMinute: number;
  readonly registryWritesPerMinute: number;
  /** The harness's own CPU (the fleet answering, the watches), % of a core. */
  readonly harnessCpuPercent: number;
  /** Every process of the machine, % of one core (2 vCPU = 200 %). */
  readonly machineBusyPercent: number;
  readonly loadAverage1m: number;
  /** V8 heap in use and reserved at the end of the window (MB); absent in runs saved before they were recorded. */
  readonly heapUsedMB?: number;
  readonly heapTotalMB?: number;
}

/** One round of flips in one direction: failing (ejection) or healthy again (re-admission). */
export interface FlipRound {
  readonly toFailing: boolean;
  readonly endpoints: number;
  /** Flip → the key deleted from (or put back into) etcd, seconds; ∞ when never seen. */
  readonly latency: Distribution;
  /** Answers in the new state the endpoint gave before its key changed (the probes it took). */
  readonly answersBefore: Distribution;
  /** The decisive answer (threshold-th in the new state) → the key changed, ms: the operator's reaction. */
  readonly reaction: Distribution;
  readonly unseen: number;
  /** Puts and deletes of keys that were not flipped, seen during the round. */
  readonly otherWrites: number;
}

/** Everything one run measured. */
export interface HealthRun {
  readonly baseline: HealthWindow;
  readonly checked: HealthWindow;
  /** The check added → every endpoint healthy and registered, as status says (s). */
  readonly healthySeconds: number;
  readonly eject: FlipRound;
  readonly readmit: FlipRound;
}

/** The address of endpoint `e` of ServiceInstance `s`: its own loopback address. */
function endpointAddress(s: number, e: number): string {
  return `127.0.${s + 1}.${e + 1}`;
}

/** `sis` ServiceInstances × `perSi` static endpoints at 127.0.<si+1>.<endpoint+1>, in one namespace. */
function healthLayout(sis: number, perSi: number, port: number): Layout {
  if (sis > 254 || perSi > 254) throw new Error(`health-checks addresses 127.0.<1-254>.<1-254>: at most 254 × 254, got ${sis} × ${perSi}`);
  const fixtures: ServiceInstanceFixture[] = [];
  const expectedPerSi = new Map<string, number>();
  const entries: ExpectedEntry[] = [];
  for (let s = 0; s < sis; s++) {
    const name = `si-${s}`;
    const service = `svc-${s}`;
    const endpoints = Array.from({ length: perSi }, (_, e) => ({ address: endpointAddress(s, e), port }));
    fixtures.push({ name, spec: { service, endpoints } });
    expectedPerSi.set(`${NAMESPACE}/${name}`, perSi);
    endpoints.forEach((ep, i) =>
      entries.push({ namespace: NAMESPACE, siName: name, service, address: ep.address, port, source: `static/${NAMESPACE}/${name}/${i}` }),
    );
  }
  return { namespaces: [NAMESPACE], serviceInstances: new Map([[NAMESPACE, fixtures]]), pods: new Map(), expectedPerSi, entries };
}

/** `n` endpoints spread evenly over the ServiceInstances and over the endpoints of each. */
function flipSample(layout: Layout, sis: number, perSi: number, n: number): ExpectedEntry[] {
  const perSiFlipped = Math.ceil(n / sis);
  const stride = Math.max(1, Math.floor(perSi / perSiFlipped));
  const out: ExpectedEntry[] = [];
  for (let k = 0; k < n; k++) {
    const s = k % sis;
    const e = (Math.floor(k / sis) * stride + s) % perSi;
    out.push(layout.entries[s * perSi + e] as ExpectedEntry);
  }
  if (new Set(out.map((e) => e.address)).size !== out.length) throw new Error('flip sample picked an endpoint twice');
  return out;
}

/** Jiffies of the whole machine from /proc/stat: busy and total, summed over CPUs. */
async function machineJiffies(): Promise<{ busy: number; total: number }> {
  const first = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const v = first.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

async function patchAll(kube: BenchKube, layout: Layout, spec: Record<string, unknown>): Promise<void> {
  const names = [...layout.expectedPerSi.keys()].map((k) => k.split('/')[1] ?? '');
  await mapBounded(names, 8, (name) => kube.patchServiceInstance(NAMESPACE, name, spec));
}

/** Waits until the statuses of every ServiceInstance report all endpoints ready and registered; resolves when (performance.now()). */
async function statusesConverged(kube: BenchKube, layout: Layout, timeoutMs: number): Promise<number> {
  const statuses = await StatusTracker.start(kube, layout.expectedPerSi);
  try {
    if (!(await waitFor(() => !Number.isNaN(statuses.convergedAt), timeoutMs, 200)))
      throw new Error(`the operator did not converge within ${timeoutMs / 1000} s: ${statuses.converged}/${statuses.total} statuses`);
    return statuses.convergedAt;
  } finally {
    statuses.stop();
  }
}

/** Waits for an empty work queue, then lets what it started settle. */
async function quiet(op: BenchOperator): Promise<void> {
  await waitFor(async () => (await op.metric('kube_registrar_workqueue_depth')) === 0, 300_000, 500);
  await sleep(5000);
}

async function measureWindow(op: BenchOperator, fleet: HealthFleet, etcdUrl: string, seconds: number): Promise<HealthWindow> {
  const names = [
    PROBES,
    `${PROBES}{outcome="success"}`,
    `${PROBE_SECONDS}_sum`,
    `${PROBE_SECONDS}_count`,
    'kube_registrar_nodejs_heap_size_used_bytes',
    'kube_registrar_nodejs_heap_size_total_bytes',
  ];
  const [m0, c0, t0, j0, s0] = await Promise.all([
    op.metrics(names),
    etcdCounters(etcdUrl),
    op.reconcileTotals(),
    machineJiffies(),
    op.sample(),
  ]);
  const harness0 = process.cpuUsage();
  const answers0 = fleet.requests;
  const sampler = new Sampler(op, 2000, false);
  await sleep(seconds * 1000);
  await sampler.stop();
  const [m1, c1, t1, j1, s1] = await Promise.all([
    op.metrics(names),
    etcdCounters(etcdUrl),
    op.reconcileTotals(),
    machineJiffies(),
    op.sample(),
  ]);
  const harness = process.cpuUsage(harness0);
  const dt = (s1.at - s0.at) / 1000;
  const d = (k: string): number => (m1[k] ?? 0) - (m0[k] ?? 0);
  const writes = counterDelta(c0, c1);
  const probes = d(PROBES);
  return {
    seconds: dt,
    cpuPercent: ((s1.cpuSeconds - s0.cpuSeconds) / dt) * 100,
    rssMaxMB: Math.max(s0.rssMiB, s1.rssMiB, ...sampler.samples.map((x) => x.rssMiB)) * 1.048576,
    probesPerSecond: probes / dt,
    probeFailures: probes - d(`${PROBES}{outcome="success"}`),
    meanProbeMs: (d(`${PROBE_SECONDS}_sum`) / d(`${PROBE_SECONDS}_count`)) * 1000,
    answersPerSecond: (fleet.requests - answers0) / dt,
    reconcilesPerMinute: ((t1.reconciles - t0.reconciles) / dt) * 60,
    registryWritesPerMinute: ((writes.puts + writes.deletes) / dt) * 60,
    harnessCpuPercent: ((harness.user + harness.system) / 1e6 / dt) * 100,
    machineBusyPercent: ((j1.busy - j0.busy) / (j1.total - j0.total)) * 100 * cpus().length,
    loadAverage1m: loadavg()[0] ?? Number.NaN,
    heapUsedMB: (m1['kube_registrar_nodejs_heap_size_used_bytes'] ?? Number.NaN) / 1e6,
    heapTotalMB: (m1['kube_registrar_nodejs_heap_size_total_bytes'] ?? Number.NaN) / 1e6,
  };
}

interface Flip {
  readonly entry: ExpectedEntry;
  seenAt: number;
  answersBefore: number;
  decisiveAt: number;
}

/**
 * Flips `sample` to failing (or back to healthy) at one instant and times each key's deletion (or
 * return) in etcd. `listen` routes the watch's events to the round while it runs.
 */
async function flipRound(
  fleet: HealthFleet,
  sample: readonly ExpectedEntry[],
  toFailing: boolean,
  listen: (handler: ((e: EtcdEvent) => void) | undefined) => void,
): Promise<FlipRound> {
  const threshold = toFailing ? CHECK.failureThreshold : CHECK.successThreshold;
  const boundMs = (toFailing ? EJECT_BOUND_S : READMIT_BOUND_S) * 1000;
  const byKey = new Map<string, Flip>(
    sample.map((e) => [etcdKey(PREFIX, e), { entry: e, seenAt: Number.NaN, answersBefore: 0, decisiveAt: Number.NaN }]),
  );
  let otherWrites = 0;
  listen((ev) => {
    const f = byKey.get(ev.key);
    if (!f) {
      otherWrites++;
      return;
    }
    if (!Number.isNaN(f.seenAt) || (ev.kind === 'delete') !== toFailing) return;
    f.seenAt = ev.at;
    const a = fleet.answers(f.entry.address);
    f.answersBefore = a.count;
    f.decisiveAt = a.at(threshold);
  });
  const flippedAt = performance.now();
  for (const e of sample) fleet.set(e.address, toFailing);
  const flips = [...byKey.values()];
  await waitFor(() => flips.every((f) => !Number.isNaN(f.seenAt)), boundMs + GRACE_MS, 100);
  listen(undefined);
  const late = (f: Flip): number => (Number.isNaN(f.seenAt) ? Number.POSITIVE_INFINITY : (f.seenAt - flippedAt) / 1000);
  const seen = flips.filter((f) => !Number.isNaN(f.seenAt));
  return {
    toFailing,
    endpoints: flips.length,
    latency: distribution(flips.map(late)),
    answersBefore: distribution(seen.map((f) => f.answersBefore)),
    reaction: distribution(seen.map((f) => f.seenAt - f.decisiveAt)),
    unseen: flips.length - seen.length,
    otherWrites,
  };
}

function describe(w: HealthWindow): string {
  return `CPU ${w.cpuPercent.toFixed(2)} %, RSS max ${w.rssMaxMB.toFixed(0)} MB (heap ${w.heapUsedMB?.toFixed(0) ?? '?'}/${w.heapTotalMB?.toFixed(0) ?? '?'} MB used/reserved), ${w.probesPerSecond.toFixed(1)} probes/s (${w.probeFailures} failed, mean ${w.meanProbeMs.toFixed(1)} ms), ${w.answersPerSecond.toFixed(1)} answers/s, ${w.reconcilesPerMinute.toFixed(1)} reconciles/min, ${w.registryWritesPerMinute.toFixed(1)} writes/min; harness ${w.harnessCpuPercent.toFixed(1)} %, machine ${w.machineBusyPercent.toFixed(0)} %, load ${w.loadAverage1m.toFixed(2)}`;
}

function describeFlip(f: FlipRound): string {
  return `p50/p99/max ${f.latency.p50.toFixed(1)}/${f.latency.p99.toFixed(1)}/${f.latency.max.toFixed(1)} s, ${f.answersBefore.p50}–${f.answersBefore.max} answers before, reaction p99 ${f.reaction.p99.toFixed(0)} ms, unseen ${f.unseen}, other writes ${f.otherWrites}`;
}

/** Runs scenario 6 on one bed and one operator; each repeat is one baseline window, one checked window and one flip round each way. */
export async function healthChecks(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const h = o.healthChecks;
  const total = h.serviceInstances * h.endpointsPerInstance;
  const runs: HealthRun[] = [];
  let profile: string | undefined;
  const addresses: string[] = [];
  for (let s = 0; s < h.serviceInstances; s++) for (let e = 0; e < h.endpointsPerInstance; e++) addresses.push(endpointAddress(s, e));
  const fleet = await HealthFleet.start(addresses);
  try {
    await withBed(ctx.log, async ({ bed, kube, etcd }) => {
      ctx.onVersions(bed.versions);
      const l = healthLayout(h.serviceInstances, h.endpointsPerInstance, fleet.port);
      await kube.createRegistry('bench', {
        type: 'etcd',
        default: true,
        namespaceSelector: { matchLabels: { bench: 'health' } },
        namespace: '{namespace}',
        leaseTTLSeconds: TTL,
        etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX },
      });
      const fixtureSeconds = await createLayout(kube, l, { bench: 'health' });
      ctx.log(
        `health-checks: ${h.serviceInstances} ServiceInstances × ${h.endpointsPerInstance} endpoints on port ${fleet.port} created in ${fixtureSeconds.toFixed(0)} s`,
      );
      const expected = new Set(l.entries.map((e) => etcdKey(PREFIX, e)));
      const present = new Set<string>();
      let round: ((e: EtcdEvent) => void) | undefined;
      const watch = await EtcdPrefixWatch.start(etcd, `${PREFIX}/`);
      watch.onEvent = (e) => {
        if (e.kind === 'put') present.add(e.key);
        else present.delete(e.key);
        round?.(e);
      };
      const allPresent = (): boolean => [...expected].every((k) => present.has(k));
      const profileDir = o.profile ? join(ctx.runDir, 'profile-health-checks') : undefined;
      const op = await startOperator({
        runFlags: o.operatorFlags,
        kubeconfig: bed.kubeconfig,
        logDir: join(ctx.runDir, 'health-checks'),
        nodeFlags: ctx.nodeFlags(profileDir),
      });
      try {
        await op.waitReady();
        await statusesConverged(kube, l, 600_000);
        if (!(await waitFor(allPresent, 60_000, 200)))
          throw new Error(`only ${present.size}/${expected.size} entries in etcd after the statuses converged`);
        ctx.log('health-checks: converged without health checks');
        const sample = flipSample(l, h.serviceInstances, h.endpointsPerInstance, h.flipped);
        for (let r = 1; r <= o.repeats; r++) {
          if (r > 1) {
            await patchAll(kube, l, { healthCheck: null });
            await statusesConverged(kube, l, 300_000);
          }
          await quiet(op);
          const baseline = await measureWindow(op, fleet, bed.registryEtcd.clientUrl, h.windowSeconds);
          ctx.log(`  run ${r} baseline (no healthCheck): ${describe(baseline)}`);

          const patchedAt = performance.now();
          await patchAll(kube, l, { healthCheck: CHECK });
          const healthyAt = await statusesConverged(kube, l, 300_000);
          if (!(await waitFor(async () => allPresent() && (await op.metric(HEALTHY)) === total, 120_000, 500)))
            throw new Error(
              `not every endpoint healthy and registered: ${present.size}/${expected.size} entries, ${await op.metric(HEALTHY)} healthy`,
            );
          const healthySeconds = (healthyAt - patchedAt) / 1000;
          ctx.log(`  run ${r}: check added → every endpoint healthy and registered in ${healthySeconds.toFixed(1)} s`);
          await quiet(op);
          const checked = await measureWindow(op, fleet, bed.registryEtcd.clientUrl, h.windowSeconds);
          ctx.log(`  run ${r} with health checks: ${describe(checked)}`);

          const listen = (handler: ((e: EtcdEvent) => void) | undefined): void => {
            round = handler;
          };
          const eject = await flipRound(fleet, sample, true, listen);
          ctx.log(`  run ${r} ejection of ${sample.length}: ${describeFlip(eject)}`);
          const readmit = await flipRound(fleet, sample, false, listen);
          ctx.log(`  run ${r} re-admission of ${sample.length}: ${describeFlip(readmit)}`);
          if (!(await waitFor(async () => allPresent() && (await op.metric(HEALTHY)) === total, 120_000, 500)))
            throw new Error(`the sample did not come back: ${present.size}/${expected.size} entries, ${await op.metric(HEALTHY)} healthy`);
          runs.push({ baseline, checked, healthySeconds, eject, readmit });
        }
      } finally {
        await watch.stop();
        await op.stop();
      }
      if (profileDir) profile = await summariseProfiles(profileDir);
    });
  } finally {
    await fleet.close();
  }
  return healthChecksResult(h, runs, profile);
}

/**
 * The report of scenario 6 from its runs; apart so that the runs saved in a results file can be
 * reported again without measuring them again.
 */
export function healthChecksResult(h: BenchOptions['healthChecks'], runs: readonly HealthRun[], profile?: string): ScenarioResult {
  const total = h.serviceInstances * h.endpointsPerInstance;
  const notes: string[] = [];
  const unseen = runs.reduce((n, r) => n + r.eject.unseen + r.readmit.unseen, 0);
  if (unseen > 0)
    notes.push(
      `${unseen} flip(s) were still not visible in etcd ${GRACE_MS / 1000} s after their bound; they count as infinitely late (∞).`,
    );
  const failed = runs.reduce((n, r) => n + r.checked.probeFailures, 0);
  if (failed > 0)
    notes.push(
      `${failed} probe(s) of healthy endpoints failed during the CPU windows (timeouts on a busy machine); the endpoints stayed registered unless ${CHECK.failureThreshold} failed in a row.`,
    );
  const later = runs.slice(1).map((r) => r.baseline.rssMaxMB);
  if (later.length > 0)
    notes.push(
      `The operator's RSS does not shrink when the health checks are removed again: the baselines of runs 2 and later peaked at ${later.map((x) => x.toFixed(0)).join(', ')} MB, against ${runs[0]?.baseline.rssMaxMB.toFixed(0) ?? 'n/a'} MB before the first probe; which is why the baseline RSS is given for run 1 alone.`,
    );
  const cpu = `${total.toLocaleString('en-US')} endpoints (${h.serviceInstances} SIs × ${h.endpointsPerInstance}), HTTP + JSON check every ${CHECK.intervalSeconds} s`;
  const ej = `${h.flipped} endpoints fail at once`;
  const re = `${h.flipped} endpoints recover at once`;
  const each = (f: (r: HealthRun) => number): number[] => runs.map(f);
  const figures: Figure[] = [
    {
      case: cpu,
      name: 'operator CPU, health checks running (all healthy, nothing else changes)',
      unit: '% of a core',
      runs: each((r) => r.checked.cpuPercent),
      goal: { kind: 'below', threshold: 5, text: '< 5 % of a core' },
    },
    {
      case: cpu,
      name: 'operator CPU, same ServiceInstances without healthCheck (baseline)',
      unit: '% of a core',
      runs: each((r) => r.baseline.cpuPercent),
    },
    {
      case: cpu,
      name: 'CPU the health checks add (difference)',
      unit: '% of a core',
      runs: each((r) => r.checked.cpuPercent - r.baseline.cpuPercent),
    },
    {
      case: cpu,
      name: `probes per second (${PROBES}; expected ${(total / CHECK.intervalSeconds).toFixed(0)})`,
      unit: '/s',
      runs: each((r) => r.checked.probesPerSecond),
    },
    { case: cpu, name: 'health requests answered per second (endpoint side)', unit: '/s', runs: each((r) => r.checked.answersPerSecond) },
    {
      case: cpu,
      name: 'operator CPU per probe',
      unit: 'CPU ms',
      runs: each((r) => ((r.checked.cpuPercent - r.baseline.cpuPercent) * 10) / r.checked.probesPerSecond),
    },
    { case: cpu, name: 'mean probe duration', unit: 'ms', runs: each((r) => r.checked.meanProbeMs) },
    { case: cpu, name: 'failed probes in the window', unit: '', runs: each((r) => r.checked.probeFailures) },
    { case: cpu, name: 'operator RSS max, health checks running', unit: 'MB', runs: each((r) => r.checked.rssMaxMB) },
    {
      case: cpu,
      name: 'operator RSS max, baseline before the first probe (run 1)',
      unit: 'MB',
      runs: runs.slice(0, 1).map((r) => r.baseline.rssMaxMB),
    },
    { case: cpu, name: 'reconciles in the window (health checks)', unit: '/min', runs: each((r) => r.checked.reconcilesPerMinute) },
    {
      case: cpu,
      name: 'registry writes in the window (health checks)',
      unit: '/min',
      runs: each((r) => r.checked.registryWritesPerMinute),
    },
    { case: cpu, name: 'check added → every endpoint healthy and registered (status)', unit: 's', runs: each((r) => r.healthySeconds) },
    {
      case: cpu,
      name: "harness's CPU (the endpoints answering, watches)",
      unit: '% of a core',
      runs: each((r) => r.checked.harnessCpuPercent),
    },
    {
      case: cpu,
      name: 'whole machine busy during the window (2 vCPU = 200 %)',
      unit: '%',
      runs: each((r) => r.checked.machineBusyPercent),
    },
    { case: cpu, name: 'load average (1 min) at the end of the window', unit: '', runs: each((r) => r.checked.loadAverage1m) },
    { case: ej, name: 'failing → entry deleted from etcd, p50', unit: 's', runs: each((r) => r.eject.latency.p50) },
    {
      case: ej,
      name: 'failing → entry deleted from etcd, p99',
      unit: 's',
      runs: each((r) => r.eject.latency.p99),
      goal: { kind: 'at-most', threshold: EJECT_BOUND_S, text: `≤ ${EJECT_BOUND_S} s (interval × failureThreshold + timeout)` },
    },
    {
      case: ej,
      name: 'failing → entry deleted from etcd, max',
      unit: 's',
      runs: each((r) => r.eject.latency.max),
      goal: { kind: 'at-most', threshold: EJECT_BOUND_S, text: `≤ ${EJECT_BOUND_S} s (interval × failureThreshold + timeout)` },
    },
    { case: ej, name: 'failing answers served before the deletion, max', unit: '', runs: each((r) => r.eject.answersBefore.max) },
    { case: ej, name: 'decisive probe answered → entry deleted, p50', unit: 'ms', runs: each((r) => r.eject.reaction.p50) },
    { case: ej, name: 'decisive probe answered → entry deleted, max', unit: 'ms', runs: each((r) => r.eject.reaction.max) },
    { case: ej, name: 'writes to entries that were not flipped', unit: '', runs: each((r) => r.eject.otherWrites) },
    { case: re, name: 'healthy → entry back in etcd, p50', unit: 's', runs: each((r) => r.readmit.latency.p50) },
    {
      case: re,
      name: 'healthy → entry back in etcd, p99',
      unit: 's',
      runs: each((r) => r.readmit.latency.p99),
      goal: { kind: 'at-most', threshold: READMIT_BOUND_S, text: `≤ ${READMIT_BOUND_S} s (interval × successThreshold + timeout)` },
    },
    {
      case: re,
      name: 'healthy → entry back in etcd, max',
      unit: 's',
      runs: each((r) => r.readmit.latency.max),
      goal: { kind: 'at-most', threshold: READMIT_BOUND_S, text: `≤ ${READMIT_BOUND_S} s (interval × successThreshold + timeout)` },
    },
    { case: re, name: 'healthy answers served before the entry returned, max', unit: '', runs: each((r) => r.readmit.answersBefore.max) },
    { case: re, name: 'decisive probe answered → entry back, p50', unit: 'ms', runs: each((r) => r.readmit.reaction.p50) },
    { case: re, name: 'decisive probe answered → entry back, max', unit: 'ms', runs: each((r) => r.readmit.reaction.max) },
    { case: re, name: 'writes to entries that were not flipped', unit: '', runs: each((r) => r.readmit.otherWrites) },
  ];
  const result: ScenarioResult = {
    id: 'health-checks',
    title: '6. Health checks',
    setup: [
      `${h.serviceInstances} ServiceInstances × ${h.endpointsPerInstance} static endpoints in one namespace, one etcd Registry (json, TTL ${TTL} s); operator defaults (--health-check-concurrency=128, --resync-period=300). Each endpoint is a real HTTP server in the harness's process on an address of its own (127.0.<i>.<j>, one shared port on lo), answering GET ${HEALTH_PATH} with JSON; a failing endpoint still answers 200, only with {"db":"down"}, so only the business check catches it.`,
      `healthCheck: http ${HEALTH_PATH} with expectedJSON {db: ok}, intervalSeconds ${CHECK.intervalSeconds}, timeoutSeconds ${CHECK.timeoutSeconds}, failureThreshold ${CHECK.failureThreshold}, successThreshold ${CHECK.successThreshold}, panicThresholdPercent 50 (default; never reached: at most ${Math.ceil(h.flipped / h.serviceInstances)} of ${h.endpointsPerInstance} endpoints per ServiceInstance fail).`,
      `Each run, on one bed and one operator process: the ServiceInstances without healthCheck (in run 1 as created, later runs remove it again), an empty queue, then a CPU window of ${h.windowSeconds} s (the baseline); healthCheck added to all, waited until every status reports all endpoints healthy and registered, the health gauge says ${total} healthy and the queue is empty, then a second window of ${h.windowSeconds} s. CPU and RSS of the operator from /proc/<pid>; probes per second from ${PROBES} over the window; registry writes counted by the etcd server.`,
      `Then ${h.flipped} endpoints, spread over every ServiceInstance, are made to fail at one instant; each is timed from that instant to the delete of its key in an etcd watch. Once all are out (or ${GRACE_MS / 1000} s past the bound), they recover at one instant and are timed to the put of their key. Bounds: interval × failureThreshold + timeout = ${EJECT_BOUND_S} s, interval × successThreshold + timeout = ${READMIT_BOUND_S} s. The endpoints count the answers they give, so "answers before" is the number of probes it took, and "decisive probe answered → entry" is the operator's own reaction after the deciding probe (reconcile and etcd write).`,
      'The harness, the health endpoints, the operator and all servers share 2 vCPU with whatever else runs on the machine; the machine load during each window is reported alongside.',
    ],
    figures,
    notes,
    details: [...runs],
  };
  if (profile) {
    result.profile = `The profile covers the operator's whole life in this scenario (initial sync, baseline windows, checked windows and the flip rounds), not the checked windows alone.\n\n${profile}`;
  }
  return result;
}

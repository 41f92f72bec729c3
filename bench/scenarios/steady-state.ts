/**
 * Scenario 3, steady state at scale: once the operator has converged on many ServiceInstances
 * and pods and nothing changes, what does it cost? Registry writes (there should be none),
 * lease keepalives (one per registry namespace per interval, whatever the number of entries),
 * CPU and memory.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withBed, waitFor } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { counterDelta, etcdCounters, EtcdPrefixWatch } from '../lib/etcd.ts';
import { createLayout, etcdKey, podLayout } from '../lib/layout.ts';
import { Poll, Sampler, startOperator, sumMetrics, type BenchOperator } from '../lib/operator.ts';
import { summariseHeapSnapshots } from '../lib/heap.ts';
import { describeMemory, readMemoryComposition, saveSmaps, v8Figures, type MemoryComposition, type V8Figures } from '../lib/memory.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { StatusTracker } from '../lib/status.ts';

const PREFIX = '/bench';
const TTL = 30;

/** One measurement window. */
export interface SteadyWindow {
  readonly seconds: number;
  readonly writesPerMinute: number;
  readonly watchEventsPerMinute: number;
  readonly readsPerMinute: number;
  /** LeaseKeepAlive messages per keepalive round (the operator renews every TTL/3). */
  readonly keepalivesPerInterval: number;
  readonly registryNamespaces: number;
  readonly entries: number;
  readonly cpuPercent: number;
  readonly rssMaxMB: number;
  readonly rssMedianMB: number;
  readonly maxQueueDepth: number;
  /** V8 heap in use and reserved, and memory outside the heap, at the end of the window (MB). */
  readonly heapUsedMB: number;
  readonly heapTotalMB: number;
  readonly externalMB: number;
  /** RSS by kind and the V8 heap by space, at the end of the window. */
  readonly memory: MemoryComposition;
  readonly v8: V8Figures;
  /** The same, read where RSS was highest among the window's composition samples (every 2 s). */
  readonly atMax?: { readonly memory: MemoryComposition; readonly v8: V8Figures };
}

/** Runs scenario 3 on one bed; each repeat is one measurement window. */
export async function steadyState(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const s = o.steady;
  const windows: SteadyWindow[] = [];
  const sync = {
    fixtureSeconds: Number.NaN,
    entriesSeconds: Number.NaN,
    statusesSeconds: Number.NaN,
    finalizersSeconds: Number.NaN,
    rssAfterSyncMB: Number.NaN,
    peakRssDuringSyncMB: Number.NaN,
    cpuSeconds: Number.NaN,
  };
  let profile: string | undefined;
  let heap: string | undefined;
  const notes: string[] = [];
  // Each ServiceInstance selects one Ready pod; the other pods are the rest of the cluster, which
  // the operator caches all the same.
  const layout = podLayout('steady', o.namespaces, s.serviceInstances, 1, { unselected: s.podsPerInstance - 1 });
  const podCount = [...layout.pods.values()].reduce((n, l) => n + l.length, 0);
  await withBed(ctx.log, async ({ bed, kube, etcd }) => {
    ctx.onVersions(bed.versions);
    await kube.createRegistry('bench', {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'steady' } },
      namespace: '{namespace}',
      leaseTTLSeconds: TTL,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX },
    });
    sync.fixtureSeconds = await createLayout(kube, layout, { bench: 'steady' });
    ctx.log(
      `steady-state: ${layout.expectedPerSi.size} ServiceInstances and ${podCount} pods created in ${sync.fixtureSeconds.toFixed(0)} s`,
    );
    const expected = new Set(layout.entries.map((e) => etcdKey(PREFIX, e)));
    const seen = new Set<string>();
    let allAt = Number.NaN;
    const watch = await EtcdPrefixWatch.start(etcd, `${PREFIX}/`);
    watch.onEvent = (e) => {
      if (e.kind === 'put' && expected.has(e.key)) seen.add(e.key);
      if (seen.size === expected.size && Number.isNaN(allAt)) allAt = e.at;
    };
    const statuses = await StatusTracker.start(kube, layout.expectedPerSi);
    const profileDir = o.profile ? join(ctx.runDir, 'profile-steady-state') : undefined;
    const heapDir = o.heapSnapshot ? join(ctx.runDir, 'heap-steady-state') : undefined;
    if (heapDir) await mkdir(heapDir, { recursive: true });
    const op = await startOperator({
      runFlags: ctx.options.operatorFlags,
      kubeconfig: bed.kubeconfig,
      flags: [`--resync-period=${s.resyncSeconds}`],
      logDir: join(ctx.runDir, 'steady-state'),
      nodeFlags: [...ctx.nodeFlags(profileDir), ...(heapDir ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${heapDir}`] : [])],
    });
    const syncSampler = new Sampler(op, 2000, false);
    try {
      await op.waitReady();
      ctx.log(`steady-state: caches synced: ${describeMemory(await readMemoryComposition(op.pid), v8Figures(await op.metricsText()))}`);
      await saveSmaps(op.pid, join(ctx.runDir, 'steady-state-smaps-synced.txt'));
      // Settled: every entry, every status and every finalizer (written behind the statuses).
      const converged = await waitFor(
        () => !Number.isNaN(allAt) && !Number.isNaN(statuses.convergedAt) && !Number.isNaN(statuses.finalizedAt),
        1_800_000,
        500,
      );
      sync.entriesSeconds = (allAt - op.startedAt) / 1000;
      sync.statusesSeconds = (statuses.convergedAt - op.startedAt) / 1000;
      sync.finalizersSeconds = (statuses.finalizedAt - op.startedAt) / 1000;
      statuses.stop();
      await syncSampler.stop();
      sync.peakRssDuringSyncMB = Math.max(...syncSampler.samples.map((x) => x.rssMiB * 1.048576));
      if (!converged) {
        notes.push(
          `The operator did not converge within 30 min: ${seen.size}/${expected.size} entries, ${statuses.converged}/${statuses.total} statuses, finalizers ${Number.isNaN(statuses.finalizedAt) ? 'not all' : 'all'} added; the windows below were measured anyway.`,
        );
      }
      ctx.log(
        `steady-state: converged: entries ${sync.entriesSeconds.toFixed(0)} s, statuses ${sync.statusesSeconds.toFixed(0)} s, finalizers ${sync.finalizersSeconds.toFixed(0)} s after start`,
      );
      await waitFor(async () => (await op.metric('kube_registrar_workqueue_depth')) === 0, 600_000, 1000);
      await sleep(10_000);
      const afterSync = await op.sample();
      sync.rssAfterSyncMB = afterSync.rssMiB * 1.048576;
      sync.cpuSeconds = afterSync.cpuSeconds;
      ctx.log(
        `steady-state: converged, queue empty: ${describeMemory(await readMemoryComposition(op.pid), v8Figures(await op.metricsText()))}`,
      );
      await saveSmaps(op.pid, join(ctx.runDir, 'steady-state-smaps-converged.txt'));

      for (let r = 1; r <= o.repeats; r++) {
        const before = await etcdCounters(bed.registryEtcd.clientUrl);
        const sampleBefore = await op.sample();
        const eventsBefore = watch.events.length;
        const sampler = new Sampler(op, 2000, false);
        const composition = sampleComposition(op, 2000, 10_000, join(ctx.runDir, `steady-state-memory-window-${r}.jsonl`));
        // The keepalive timer sends one burst per round; counting bursts (the counter moving
        // between one-second polls) gives messages per round without rounding the window.
        // A burst that straddles two polls moves the counter twice in a row: one round.
        let rounds = 0;
        let last = before.keepalives;
        let moving = false;
        const windowEnd = performance.now() + s.windowSeconds * 1000;
        while (performance.now() < windowEnd) {
          await sleep(1000);
          const k = (await etcdCounters(bed.registryEtcd.clientUrl)).keepalives;
          if (k > last && !moving) rounds++;
          moving = k > last;
          last = k;
        }
        await sampler.stop();
        const { atMax, maxQueueDepth } = await composition.stop();
        const sampleAfter = await op.sample();
        const d = counterDelta(before, await etcdCounters(bed.registryEtcd.clientUrl));
        const [memory, v8] = await Promise.all([readMemoryComposition(op.pid), op.metricsText().then(v8Figures)]);
        await saveSmaps(op.pid, join(ctx.runDir, `steady-state-smaps-window-${r}.txt`));
        const seconds = (sampleAfter.at - sampleBefore.at) / 1000;
        const rss = sampler.samples.map((x) => x.rssMiB * 1.048576).sort((a, b) => a - b);
        const w: SteadyWindow = {
          seconds,
          writesPerMinute: ((d.puts + d.deletes) / seconds) * 60,
          watchEventsPerMinute: ((watch.events.length - eventsBefore) / seconds) * 60,
          readsPerMinute: ((d.txns + d.ranges) / seconds) * 60,
          keepalivesPerInterval: rounds > 0 ? (last - before.keepalives) / rounds : Number.NaN,
          registryNamespaces: layout.namespaces.length,
          entries: expected.size,
          cpuPercent: ((sampleAfter.cpuSeconds - sampleBefore.cpuSeconds) / seconds) * 100,
          rssMaxMB: rss[rss.length - 1] ?? Number.NaN,
          rssMedianMB: rss[Math.floor(rss.length / 2)] ?? Number.NaN,
          maxQueueDepth,
          heapUsedMB: v8.heapUsedMB,
          heapTotalMB: v8.heapTotalMB,
          externalMB: v8.externalMB,
          memory,
          v8,
          ...(atMax ? { atMax } : {}),
        };
        windows.push(w);
        ctx.log(
          `  window ${r}: ${w.writesPerMinute.toFixed(1)} writes/min, ${w.readsPerMinute.toFixed(0)} reads/min, ${w.keepalivesPerInterval.toFixed(1)} keepalives/interval for ${w.registryNamespaces} namespaces, ` +
            `CPU ${w.cpuPercent.toFixed(1)} %, RSS max ${w.rssMaxMB.toFixed(0)} MB, queue max ${w.maxQueueDepth}`,
        );
        ctx.log(`  window ${r} memory at its end: ${describeMemory(memory, v8)}`);
        if (atMax) ctx.log(`  window ${r} memory at its maximum: ${describeMemory(atMax.memory, atMax.v8)}`);
      }
      if (heapDir) {
        op.process.signal('SIGUSR2');
        // Writing a snapshot blocks the process; it is done when /metrics answers again.
        await sleep(2000);
        await waitFor(async () => (await op.metric('kube_registrar_workqueue_depth').catch(() => Number.NaN)) >= 0, 600_000, 2000);
        heap = await summariseHeapSnapshots(heapDir);
      }
    } finally {
      await syncSampler.stop();
      statuses.stop();
      await watch.stop();
      await op.stop();
    }
    if (profileDir) profile = await summariseProfiles(profileDir);
  });

  if (windows.some((w) => w.maxQueueDepth > layout.expectedPerSi.size / 2)) {
    notes.push(
      `The work queue never emptied: with --resync-period=${s.resyncSeconds} the operator did not finish re-reading all ${layout.expectedPerSi.size} ServiceInstances within one period (${windows.map((w) => w.readsPerMinute.toFixed(0)).join(', ')} registry reads per minute), so every window measured a permanently resyncing operator.`,
    );
  }
  const c = `${layout.expectedPerSi.size.toLocaleString('en-US')} SIs, ${podCount.toLocaleString('en-US')} pods, ${layout.entries.length.toLocaleString('en-US')} entries`;
  const figures: Figure[] = [
    {
      case: c,
      name: 'registry writes when nothing changes',
      unit: '/min',
      runs: windows.map((w) => w.writesPerMinute),
      goal: { kind: 'zero', threshold: 0, text: 'none' },
    },
    { case: c, name: 'registry reads (resync)', unit: '/min', runs: windows.map((w) => w.readsPerMinute) },
    {
      case: c,
      name: 'registry reads per resync period per registry namespace',
      unit: '',
      runs: windows.map((w) => (w.readsPerMinute * s.resyncSeconds) / 60 / w.registryNamespaces),
    },
    { case: c, name: `keepalive messages per round (every ${TTL / 3} s)`, unit: '', runs: windows.map((w) => w.keepalivesPerInterval) },
    {
      case: c,
      name: 'keepalive messages per round per registry namespace',
      unit: '',
      runs: windows.map((w) => w.keepalivesPerInterval / w.registryNamespaces),
      goal: { kind: 'at-most', threshold: 1, text: '≤ 1 (∝ namespaces, not entries)' },
    },
    {
      case: c,
      name: 'operator CPU (nothing changes; resyncs only)',
      unit: '% of a core',
      runs: windows.map((w) => w.cpuPercent),
      goal: { kind: 'below', threshold: 5, text: '< 5 % of a core (at the default resync period)' },
    },
    {
      case: c,
      name: 'operator RSS, max over the window',
      unit: 'MB',
      runs: windows.map((w) => w.rssMaxMB),
      goal: { kind: 'below', threshold: 200, text: '< 200 MB' },
    },
    { case: c, name: '… of which V8 heap in use', unit: 'MB', runs: windows.map((w) => w.heapUsedMB) },
    { case: c, name: '… V8 heap reserved', unit: 'MB', runs: windows.map((w) => w.heapTotalMB) },
    {
      case: c,
      name: '… outside the V8 heap (RSS − heap reserved, at the window end)',
      unit: 'MB',
      runs: windows.map((w) => w.memory.rssMB - w.heapTotalMB),
    },
    {
      case: c,
      name: '… at the highest RSS reading (every 2 s): V8 heap reserved',
      unit: 'MB',
      runs: windows.map((w) => w.atMax?.v8.heapTotalMB ?? Number.NaN),
    },
    {
      case: c,
      name: '… at the highest reading: outside the V8 heap',
      unit: 'MB',
      runs: windows.map((w) => (w.atMax ? w.atMax.memory.rssMB - w.atMax.v8.heapTotalMB : Number.NaN)),
    },
    {
      case: c,
      name: '… at the highest reading: V8 external memory (Buffers)',
      unit: 'MB',
      runs: windows.map((w) => w.atMax?.v8.externalMB ?? Number.NaN),
    },
    { case: c, name: 'queue depth, max over the window (scraped every 10 s)', unit: 'keys', runs: windows.map((w) => w.maxQueueDepth) },
    { case: c, name: 'initial sync: every entry in etcd (from start)', unit: 's', runs: [sync.entriesSeconds] },
    { case: c, name: 'initial sync: every status converged (from start)', unit: 's', runs: [sync.statusesSeconds] },
    { case: c, name: 'initial sync: every finalizer added (from start)', unit: 's', runs: [sync.finalizersSeconds] },
    { case: c, name: 'initial sync: peak RSS', unit: 'MB', runs: [sync.peakRssDuringSyncMB] },
    { case: c, name: 'initial sync: operator CPU time', unit: 'CPU s', runs: [sync.cpuSeconds] },
  ];
  const result: ScenarioResult = {
    id: 'steady-state',
    title: '3. Steady state',
    setup: [
      `${layout.expectedPerSi.size} ServiceInstances over ${o.namespaces} namespaces (one registry namespace and lease each), each selecting one Ready pod; ${podCount - layout.entries.length} more pods that nothing selects (the rest of a cluster, cached all the same). One etcd Registry, TTL ${TTL} s (keepalive every ${TTL / 3} s).`,
      `Operator with --resync-period=${s.resyncSeconds} (the default at full scale), so every window of ${s.windowSeconds} s covers a full resync (each ServiceInstance reconciled again, its scope read from the namespace's view, diffed and its status compared) — the case where unnecessary writes would show, and what idling costs at default settings.`,
      'After convergence (every entry, status and finalizer) and an empty queue, each run is one window. Writes = puts + deletes counted by the registry etcd itself (etcd_mvcc_put_total, etcd_mvcc_delete_total); reads = its Txn + Range calls; keepalives = LeaseKeepAlive messages it received, divided by the number of keepalive rounds seen (the counter is polled every second and moves once per round). CPU and RSS from /proc/<pid> every 2 s; its /metrics is scraped every 10 s and when RSS reaches a new high (a scrape costs CPU the window would count).',
    ],
    figures,
    notes,
    details: [{ sync, windows }],
  };
  if (profile || heap) result.profile = [profile, heap].filter(Boolean).join('\n\n');
  return result;
}

/** What {@link sampleComposition} found over a window. */
interface CompositionSamples {
  /** The reading where RSS was highest, with the V8 figures scraped right then. */
  readonly atMax: { readonly memory: MemoryComposition; readonly v8: V8Figures } | undefined;
  /** The highest work-queue depth among the scrapes. */
  readonly maxQueueDepth: number;
}

/**
 * Reads the operator's memory composition from /proc every `intervalMs` until stopped. Its
 * /metrics is scraped (V8 figures, queue depth) only every `scrapeMs` and whenever RSS reached a
 * new high, since a scrape costs the operator CPU that the window measures (a Prometheus scrapes
 * every 15–60 s). Every reading is kept in `file` (JSON lines), for the course over the window.
 */
function sampleComposition(
  op: BenchOperator,
  intervalMs: number,
  scrapeMs: number,
  file: string,
): { stop: () => Promise<CompositionSamples> } {
  let atMax: { memory: MemoryComposition; v8: V8Figures } | undefined;
  let maxQueueDepth = 0;
  let lastScrape = Number.NEGATIVE_INFINITY;
  const lines: string[] = [];
  const poll = new Poll(intervalMs, async () => {
    const memory = await readMemoryComposition(op.pid);
    const high = !atMax || memory.rssMB > atMax.memory.rssMB;
    let v8: V8Figures | undefined;
    if (high || performance.now() - lastScrape >= scrapeMs) {
      lastScrape = performance.now();
      const text = await op.metricsText();
      v8 = v8Figures(text);
      maxQueueDepth = Math.max(maxQueueDepth, sumMetrics(text, ['kube_registrar_workqueue_depth'])['kube_registrar_workqueue_depth'] ?? 0);
      if (high) atMax = { memory, v8 };
    }
    lines.push(JSON.stringify({ at: new Date().toISOString(), memory, ...(v8 ? { v8 } : {}) }));
  });
  return {
    stop: async () => {
      await poll.stop();
      await writeFile(file, lines.join('\n') + '\n');
      return { atMax, maxQueueDepth };
    },
  };
}

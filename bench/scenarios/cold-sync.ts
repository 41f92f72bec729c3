/**
 * Scenario 1, cold sync: everything exists in the apiserver before the operator starts; how long
 * until every entry is in etcd and every status has converged, and how the operator's
 * registry-side write rate compares with the raw limit of the same etcd measured in the same run
 * (the same keys with identical values on one lease, in 128-operation transactions), and how its
 * status-side rate compares with the raw rate at which the same apiserver takes status patches.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { encodeEntry } from '../../src/registry/etcd/codec.ts';
import { withBed, waitFor } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { apiserverRequests, requestDelta } from '../lib/apiserver.ts';
import { counterDelta, etcdCounters, EtcdPrefixWatch, rawEtcdWrite, type EtcdCounters } from '../lib/etcd.ts';
import { createLayout, etcdKey, podLayout, registryEntry, staticLayout, type Layout } from '../lib/layout.ts';
import { Sampler, startOperator } from '../lib/operator.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { clearStatuses, rawStatusPatches, StatusTracker, type StatusTarget } from '../lib/status.ts';

/** The registry prefix the operator writes under. */
const PREFIX = '/bench';
/** Same length as PREFIX, so raw keys and values have the operator's sizes. */
const RAW_PREFIX = '/raw00';
/** The operator's default --concurrency: its reconciles, and so its status patches, in flight at once. */
const DEFAULT_CONCURRENCY = 16;

/** Status patches in flight in the raw measurement: as many as the operator runs reconciles. */
function statusConcurrency(operatorFlags: readonly string[]): number {
  const flag = operatorFlags.findLast((f) => f.startsWith('--concurrency='));
  const n = flag === undefined ? Number.NaN : Number(flag.slice('--concurrency='.length));
  return Number.isInteger(n) && n > 0 ? n : DEFAULT_CONCURRENCY;
}

/** One cold sync run's measurements (seconds are from the operator's start unless named otherwise). */
export interface ColdSyncRun {
  readonly entries: number;
  readonly serviceInstances: number;
  readonly pods: number;
  readonly fixtureSeconds: number;
  readonly raw: { readonly seconds: number; readonly keysPerSecond: number; readonly transactions: number };
  /** Raw status patches of the same ServiceInstances (undone before the operator starts). */
  readonly rawStatus: {
    readonly seconds: number;
    readonly patchesPerSecond: number;
    readonly patches: number;
    readonly concurrency: number;
  };
  readonly cachesSyncedSeconds: number;
  readonly firstEntrySeconds: number;
  readonly allEntriesSeconds: number;
  /** From caches synced (reconciling starts) to the last entry. */
  readonly registrySideSeconds: number;
  readonly registrySideRate: number;
  readonly statusesSeconds: number;
  /** From caches synced to the last status converged. */
  readonly statusSideSeconds: number;
  readonly statusSideRate: number;
  readonly entriesSeen: number;
  readonly statusesConverged: number;
  readonly operatorCpuSeconds: number;
  readonly peakRssMB: number;
  /** Calls the apiserver served from the operator's start until convergence (the harness's watches are not in it: they are long-running). */
  readonly apiserverRequests: Record<string, number>;
  /** Calls the registry etcd served meanwhile. */
  readonly etcdCalls: EtcdCounters;
  readonly finished: boolean;
}

function caseName(kind: 'static' | 'pods', n: number): string {
  return `${kind === 'static' ? 'static endpoints' : 'pods behind selectors'}, ${n >= 1000 ? `${n / 1000}k` : n}`;
}

async function runOnce(
  ctx: ScenarioContext,
  kind: 'static' | 'pods',
  n: number,
  run: number,
  profileDir: string | undefined,
): Promise<ColdSyncRun> {
  const o = ctx.options;
  const layout: Layout =
    kind === 'static'
      ? staticLayout('cold', o.namespaces, n)
      : podLayout('cold', o.namespaces, Math.ceil(n / o.coldSync.podsPerService), o.coldSync.podsPerService);
  return withBed(ctx.log, async ({ bed, kube, etcd }) => {
    ctx.onVersions(bed.versions);
    await kube.createRegistry('bench', {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'cold' } },
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX },
    });
    const fixtureSeconds = await createLayout(kube, layout, { bench: 'cold' });
    const podCount = [...layout.pods.values()].reduce((s, l) => s + l.length, 0);
    ctx.log(
      `cold-sync ${caseName(kind, n)} run ${run}: ${layout.expectedPerSi.size} ServiceInstances, ${podCount} pods created in ${fixtureSeconds.toFixed(1)} s`,
    );

    // The raw limit of the status side: the same objects patched with the operator's status, then
    // that status removed again so the operator starts from what the fixtures created.
    const listed = await kube.listServiceInstances();
    const targets: StatusTarget[] = listed.items.flatMap((si) => {
      const endpoints = layout.expectedPerSi.get(`${si.metadata.namespace}/${si.metadata.name}`);
      return endpoints === undefined
        ? []
        : [
            {
              namespace: si.metadata.namespace,
              name: si.metadata.name,
              service: si.spec.service,
              generation: si.metadata.generation ?? 1,
              endpoints,
            },
          ];
    });
    const concurrency = statusConcurrency(o.operatorFlags);
    const rawStatus = await rawStatusPatches(kube, targets, 'bench', concurrency);
    await clearStatuses(kube, targets, concurrency);
    ctx.log(
      `  raw status patches: ${rawStatus.patches} in ${rawStatus.seconds.toFixed(2)} s, ${concurrency} in flight = ${rawStatus.patchesPerSecond.toFixed(0)} patches/s (undone again)`,
    );

    // The raw limit, right before the operator runs, on the same etcd with identical values.
    const rawOwner = randomUUID();
    const rawEntries = layout.entries.map((e) => ({
      key: etcdKey(RAW_PREFIX, e),
      value: encodeEntry('json', registryEntry(e, rawOwner)).value,
    }));
    const raw = await rawEtcdWrite(etcd, rawEntries, 30);
    ctx.log(
      `  raw etcd: ${raw.keys} keys in ${raw.transactions} txns, ${raw.seconds.toFixed(2)} s = ${raw.keysPerSecond.toFixed(0)} keys/s`,
    );

    const expected = new Set(layout.entries.map((e) => etcdKey(PREFIX, e)));
    const seen = new Set<string>();
    let firstAt = Number.NaN;
    let allAt = Number.NaN;
    let lastAt = Number.NaN;
    const watch = await EtcdPrefixWatch.start(etcd, `${PREFIX}/`);
    watch.onEvent = (e) => {
      if (e.kind !== 'put' || !expected.has(e.key)) return;
      if (Number.isNaN(firstAt)) firstAt = e.at;
      seen.add(e.key);
      lastAt = e.at;
      if (seen.size === expected.size && Number.isNaN(allAt)) allAt = e.at;
    };
    const statuses = await StatusTracker.start(kube, layout.expectedPerSi);
    const apiBefore = await apiserverRequests(bed);
    const etcdBefore = await etcdCounters(bed.registryEtcd.clientUrl);
    const op = await startOperator({
      runFlags: ctx.options.operatorFlags,
      kubeconfig: bed.kubeconfig,
      logDir: join(ctx.runDir, `cold-sync-${kind}-${n}-r${run}`),
      nodeFlags: ctx.nodeFlags(profileDir),
    });
    const sampler = new Sampler(op, 1000, false);
    // Generous: a run that does not finish still yields its rate so far, marked as partial.
    const timeoutMs = 180_000 + n * 150;
    try {
      await op.waitReady(timeoutMs);
      const finished = await waitFor(() => !Number.isNaN(allAt) && !Number.isNaN(statuses.convergedAt), timeoutMs, 100);
      const usage = await op.sample();
      const apiserverCalls = requestDelta(apiBefore, await apiserverRequests(bed));
      const etcdCalls = counterDelta(etcdBefore, await etcdCounters(bed.registryEtcd.clientUrl));
      const t0 = op.startedAt;
      const s = (t: number): number => (t - t0) / 1000;
      // Unfinished: the rate of what did land, up to the last entry seen (a partial figure).
      const registrySideSeconds = ((Number.isNaN(allAt) ? lastAt : allAt) - op.readyAt) / 1000;
      // Unfinished: NaN, as the tracker has no last time for statuses that never converged.
      const statusSideSeconds = (statuses.convergedAt - op.readyAt) / 1000;
      const result: ColdSyncRun = {
        entries: expected.size,
        serviceInstances: layout.expectedPerSi.size,
        pods: podCount,
        fixtureSeconds,
        raw: { seconds: raw.seconds, keysPerSecond: raw.keysPerSecond, transactions: raw.transactions },
        rawStatus,
        cachesSyncedSeconds: s(op.readyAt),
        firstEntrySeconds: s(firstAt),
        allEntriesSeconds: s(allAt),
        registrySideSeconds,
        registrySideRate: seen.size / registrySideSeconds,
        statusesSeconds: s(statuses.convergedAt),
        statusSideSeconds,
        statusSideRate: statuses.total / statusSideSeconds,
        entriesSeen: seen.size,
        statusesConverged: statuses.converged,
        operatorCpuSeconds: usage.cpuSeconds,
        peakRssMB: Math.max(...sampler.samples.map((x) => x.rssMiB * 1.048576), usage.rssMiB * 1.048576),
        apiserverRequests: apiserverCalls,
        etcdCalls,
        finished,
      };
      ctx.log(
        `  operator: caches ${result.cachesSyncedSeconds.toFixed(1)} s, first entry ${result.firstEntrySeconds.toFixed(1)} s, all ${seen.size}/${expected.size} entries ${result.allEntriesSeconds.toFixed(1)} s ` +
          `(${result.registrySideRate.toFixed(0)} entries/s registry-side), statuses ${statuses.converged}/${statuses.total} ${result.statusesSeconds.toFixed(1)} s (${result.statusSideRate.toFixed(0)} ServiceInstances/s status-side), CPU ${usage.cpuSeconds.toFixed(1)} s`,
      );
      ctx.log(`  calls: apiserver ${JSON.stringify(apiserverCalls)}; etcd ${JSON.stringify(etcdCalls)}`);
      return result;
    } finally {
      await sampler.stop();
      statuses.stop();
      await watch.stop();
      await op.stop();
    }
  });
}

/** Runs scenario 1 for every size, static endpoints and pods behind selectors. */
export async function coldSync(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const figures: Figure[] = [];
  const notes: string[] = [];
  const details: unknown[] = [];
  let profile: string | undefined;
  for (const kind of ['static', 'pods'] as const) {
    for (const n of o.coldSync.sizes) {
      const runs: ColdSyncRun[] = [];
      for (let r = 1; r <= o.repeats; r++) {
        // Profile the last repeat of the largest size only: profiling costs time of its own.
        const profileDir =
          o.profile && r === o.repeats && n === Math.max(...o.coldSync.sizes)
            ? join(ctx.runDir, `profile-cold-sync-${kind}-${n}`)
            : undefined;
        const run = await runOnce(ctx, kind, n, r, profileDir);
        runs.push(run);
        if (profileDir)
          profile = `${profile ? `${profile}\n\n` : ''}cold sync, ${caseName(kind, n)}:\n${await summariseProfiles(profileDir)}`;
      }
      details.push({ case: caseName(kind, n), runs });
      const c = caseName(kind, n);
      for (const r of runs.filter((x) => !x.finished)) {
        notes.push(
          `${c}: a run did not finish within its time limit (${(180 + r.entries * 0.15).toFixed(0)} s): ${r.entriesSeen}/${r.entries} entries in etcd, ${r.statusesConverged}/${r.serviceInstances} statuses converged; its registry-side rate is that of the entries that did land.`,
        );
      }
      figures.push(
        { case: c, name: 'caches synced (from start)', unit: 's', runs: runs.map((x) => x.cachesSyncedSeconds) },
        { case: c, name: 'every entry in etcd (from start)', unit: 's', runs: runs.map((x) => x.allEntriesSeconds) },
        {
          case: c,
          name: 'registry-side write rate (caches synced → last entry)',
          unit: 'entries/s',
          runs: runs.map((x) => x.registrySideRate),
          limit: { name: 'raw etcd3, 128-op txns, 1 lease', unit: 'keys/s', runs: runs.map((x) => x.raw.keysPerSecond) },
          goal: { kind: 'ratio-at-least', threshold: 0.5, text: '≥ 0.5 × raw' },
        },
        { case: c, name: 'every status converged (from start)', unit: 's', runs: runs.map((x) => x.statusesSeconds) },
        {
          case: c,
          name: 'status-side rate (caches synced → last status converged)',
          unit: 'ServiceInstances/s',
          runs: runs.map((x) => x.statusSideRate),
          limit: {
            name: `raw status merge patches, ${runs[0]?.rawStatus.concurrency ?? DEFAULT_CONCURRENCY} in flight`,
            unit: 'patches/s',
            runs: runs.map((x) => x.rawStatus.patchesPerSecond),
          },
          goal: { kind: 'ratio-at-least', threshold: 0.5, text: '≥ 0.5 × raw' },
        },
        { case: c, name: 'operator CPU time until converged', unit: 'CPU s', runs: runs.map((x) => x.operatorCpuSeconds) },
        { case: c, name: 'operator peak RSS', unit: 'MB', runs: runs.map((x) => x.peakRssMB) },
      );
    }
  }
  const result: ScenarioResult = {
    id: 'cold-sync',
    title: '1. Cold sync (etcd)',
    setup: [
      `Objects created in the apiserver before the operator starts, over ${o.namespaces} namespaces (each its own registry namespace and lease); one etcd Registry (json format, TTL 30 s), operator defaults (--concurrency=${DEFAULT_CONCURRENCY}).`,
      `"static endpoints, N": N ServiceInstances with one static endpoint each. "pods behind selectors, N": N/${o.coldSync.podsPerService} ServiceInstances selecting ${o.coldSync.podsPerService} Ready pods each.`,
      'Times are from spawning the operator (`node dist/main.js`); entries are timestamped by an etcd watch on the prefix, statuses by a watch on ServiceInstances (observedGeneration current, Registered=True, the expected endpoint count).',
      'Registry-side rate = entries ÷ (last entry seen − caches synced). Raw limit, measured in the same run right before the operator starts: the same keys with identical values written straight through etcd3 on one lease, 128 puts per transaction, one transaction in flight.',
      `Status-side rate = ServiceInstances ÷ (last status converged − caches synced). Raw limit, measured in the same run before the operator starts: one merge patch of the status subresource per ServiceInstance with the status the operator writes when it converged (two conditions, ready ratio, counts, one registration with lease id and sync time), ${DEFAULT_CONCURRENCY} in flight (the operator's --concurrency), through one connection pool; then every status is removed again (a merge patch of status: null, checked by a list) so the operator starts from objects without status. The same objects rather than a throwaway copy set: a copy set would double what the apiserver stores and what the operator's informers cache and reconcile. The operator also adds its finalizer to each ServiceInstance (a second patch) before it writes the status, which the raw limit does not: the status side pays two writes where the raw pays one.`,
      'A fresh bed for every run.',
    ],
    figures,
    notes,
    details,
  };
  if (profile) result.profile = profile;
  return result;
}

/**
 * Scenario 4, Consul cold sync: ServiceInstances with static endpoints exist before the operator
 * starts; how long until every instance is in Consul's catalog, compared with the raw agent
 * registration rate of the same agent measured in the same run (the operator's own bodies,
 * registered straight through the agent API at the operator's concurrency). Then, idle: heartbeat
 * passes per interval and writes.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_MAX_CONCURRENT_CALLS } from '../../src/registry/consul/consul-registry.ts';
import { withBed, waitFor } from '../lib/bed.ts';
import { CatalogWatch, ConsulCallCounter, deregisterAll, rawConsulRegister } from '../lib/consul.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { createLayout, registryEntry, staticLayout } from '../lib/layout.ts';
import { Sampler, startOperator } from '../lib/operator.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { StatusTracker } from '../lib/status.ts';

const TTL = 30;

/** One run's measurements. */
export interface ConsulColdSyncRun {
  readonly instances: number;
  readonly raw: { readonly ackSeconds: number; readonly visibleSeconds: number; readonly servicesPerSecond: number };
  readonly cachesSyncedSeconds: number;
  readonly allVisibleSeconds: number;
  readonly registrySideRate: number;
  readonly statusesSeconds: number;
  readonly seen: number;
  readonly statusesConverged: number;
  readonly operatorCpuSeconds: number;
  readonly peakRssMB: number;
  readonly idle: {
    readonly seconds: number;
    readonly heartbeatsPerInterval: number;
    readonly writesPerMinute: number;
    readonly readsPerMinute: number;
    readonly registryNamespaces: number;
  };
  readonly finished: boolean;
}

function caseName(n: number): string {
  return `static endpoints, ${n >= 1000 ? `${n / 1000}k` : n}`;
}

async function runOnce(ctx: ScenarioContext, n: number, run: number, profileDir: string | undefined): Promise<ConsulColdSyncRun> {
  const o = ctx.options;
  const layout = staticLayout('ccold', o.namespaces, n);
  return withBed(ctx.log, async ({ bed, kube }) => {
    ctx.onVersions(bed.versions);
    await kube.createRegistry('bench', {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'ccold' } },
      namespace: '{namespace}',
      leaseTTLSeconds: TTL,
      consul: { address: bed.consulAddr, serviceName: '{namespace}-{service}' },
    });
    const fixtureSeconds = await createLayout(kube, layout, { bench: 'ccold' });
    ctx.log(`consul-cold-sync ${caseName(n)} run ${run}: ${n} ServiceInstances created in ${fixtureSeconds.toFixed(1)} s`);

    // Raw limit on the empty agent, right before the operator runs; same name lengths ("rawcc" vs "ccold").
    const rawWatch = new CatalogWatch(bed.consulAddr, (name) => name.startsWith('rawcc-') && name.includes('-svc-'));
    const rawEntries = layout.entries.map((e) => registryEntry({ ...e, namespace: e.namespace.replace('ccold', 'rawcc') }, randomUUID()));
    const raw = await rawConsulRegister(bed.consulAddr, rawEntries, {
      clusterId: randomUUID(),
      registryNamespace: 'rawcc',
      name: (e) => `${e.registryNamespace}-${e.endpoint.service}`,
      ttlSeconds: TTL,
      concurrency: DEFAULT_MAX_CONCURRENT_CALLS,
    });
    await waitFor(() => rawWatch.appeared.size === n, 120_000, 50);
    const rawLast = Math.max(...rawWatch.appeared.values());
    await rawWatch.stop();
    const rawVisibleSeconds = (rawLast - raw.startedAt) / 1000;
    await deregisterAll(bed.consulAddr, raw.ids, DEFAULT_MAX_CONCURRENT_CALLS);
    ctx.log(
      `  raw agent: ${n} registrations acknowledged in ${raw.seconds.toFixed(1)} s, all in the catalog after ${rawVisibleSeconds.toFixed(1)} s (${(n / rawVisibleSeconds).toFixed(0)}/s)`,
    );
    await sleep(2000);

    const counter = new ConsulCallCounter(bed.consulAddr);
    const watch = new CatalogWatch(bed.consulAddr, (name) => name.startsWith('ccold-') && name.includes('-svc-'));
    const statuses = await StatusTracker.start(kube, layout.expectedPerSi);
    const op = await startOperator({
      runFlags: ctx.options.operatorFlags,
      kubeconfig: bed.kubeconfig,
      logDir: join(ctx.runDir, `consul-cold-sync-${n}-r${run}`),
      nodeFlags: ctx.nodeFlags(profileDir),
    });
    const sampler = new Sampler(op, 1000, false);
    try {
      // Generous: a run that does not finish still yields its rate so far, marked as partial.
      const timeoutMs = 180_000 + n * 150;
      await op.waitReady(timeoutMs);
      const finished = await waitFor(() => watch.appeared.size === n && !Number.isNaN(statuses.convergedAt), timeoutMs, 100);
      const allAt = watch.appeared.size === n ? Math.max(...watch.appeared.values()) : Number.NaN;
      const lastAt = watch.appeared.size > 0 ? Math.max(...watch.appeared.values()) : Number.NaN;
      const usage = await op.sample();
      await sampler.stop();
      statuses.stop();
      await watch.stop();

      // Idle: a few heartbeat intervals with nothing to do (not measurable while it is still busy).
      let calls = { intervals: 0, seconds: 0, counts: new Map<string, number>() };
      if (finished && (await waitFor(async () => (await op.metric('kube_registrar_workqueue_depth')) === 0, 300_000, 1000))) {
        await sleep(12_000);
        const idleFrom = Date.now();
        await sleep(o.consulColdSync.idleSeconds * 1000 + 11_000);
        calls = counter.callsBetween(idleFrom, Date.now());
      }
      await counter.stop();
      const get = (k: string): number => calls.counts.get(k) ?? 0;
      const writes = get('PUT v1_agent_service_register') + get('PUT v1_agent_service_deregister_');
      const reads = [...calls.counts.entries()]
        .filter(([k]) => k.startsWith('GET v1_agent_services') || k.startsWith('GET v1_agent_checks'))
        .reduce((sum, [, v]) => sum + v, 0);
      const heartbeatIntervals = calls.seconds / (TTL / 3);
      const s = (t: number): number => (t - op.startedAt) / 1000;
      const result: ConsulColdSyncRun = {
        instances: n,
        raw: { ackSeconds: raw.seconds, visibleSeconds: rawVisibleSeconds, servicesPerSecond: n / rawVisibleSeconds },
        cachesSyncedSeconds: s(op.readyAt),
        allVisibleSeconds: s(allAt),
        // Unfinished: the rate of what did land, up to the last instance seen (a partial figure).
        registrySideRate: watch.appeared.size / ((lastAt - op.readyAt) / 1000),
        statusesSeconds: s(statuses.convergedAt),
        seen: watch.appeared.size,
        statusesConverged: statuses.converged,
        operatorCpuSeconds: usage.cpuSeconds,
        peakRssMB: Math.max(usage.rssMiB, ...sampler.samples.map((x) => x.rssMiB)) * 1.048576,
        idle: {
          seconds: calls.seconds,
          heartbeatsPerInterval: get('PUT v1_agent_check_pass_') / heartbeatIntervals,
          writesPerMinute: calls.seconds > 0 ? (writes / calls.seconds) * 60 : Number.NaN,
          readsPerMinute: calls.seconds > 0 ? (reads / calls.seconds) * 60 : Number.NaN,
          registryNamespaces: layout.namespaces.length,
        },
        finished,
      };
      ctx.log(
        `  operator: all ${result.seen}/${n} in the catalog ${result.allVisibleSeconds.toFixed(1)} s after start (${result.registrySideRate.toFixed(0)}/s registry-side), statuses ${result.statusesSeconds.toFixed(1)} s; ` +
          `idle ${calls.seconds} s: ${result.idle.heartbeatsPerInterval.toFixed(1)} heartbeat passes per interval for ${result.idle.registryNamespaces} namespaces, ${writes} writes`,
      );
      return result;
    } finally {
      await sampler.stop();
      statuses.stop();
      await watch.stop();
      await counter.stop();
      await op.stop();
    }
  });
}

/** Runs scenario 4 for every size. */
export async function consulColdSync(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const figures: Figure[] = [];
  const notes: string[] = [];
  const details: unknown[] = [];
  let profile: string | undefined;
  for (const n of o.consulColdSync.sizes) {
    const runs: ConsulColdSyncRun[] = [];
    for (let r = 1; r <= o.repeats; r++) {
      const profileDir =
        o.profile && r === o.repeats && n === Math.max(...o.consulColdSync.sizes)
          ? join(ctx.runDir, `profile-consul-cold-sync-${n}`)
          : undefined;
      runs.push(await runOnce(ctx, n, r, profileDir));
      if (profileDir) profile = `Consul cold sync, ${caseName(n)}:\n${await summariseProfiles(profileDir)}`;
    }
    const c = caseName(n);
    details.push({ case: c, runs });
    for (const r of runs.filter((x) => !x.finished)) {
      notes.push(
        `${c}: a run did not finish within its time limit (${(180 + r.instances * 0.15).toFixed(0)} s): ${r.seen}/${r.instances} instances in the catalog, ${r.statusesConverged}/${r.instances} statuses converged; its registry-side rate is that of the instances that did land.`,
      );
    }
    figures.push(
      { case: c, name: 'every instance in the catalog (from start)', unit: 's', runs: runs.map((x) => x.allVisibleSeconds) },
      {
        case: c,
        name: 'registry-side registration rate (caches synced → last instance)',
        unit: 'instances/s',
        runs: runs.map((x) => x.registrySideRate),
        limit: {
          name: `raw agent API, ${DEFAULT_MAX_CONCURRENT_CALLS} in flight`,
          unit: 'services/s',
          runs: runs.map((x) => x.raw.servicesPerSecond),
        },
        goal: { kind: 'ratio-at-least', threshold: 0.5, text: "≥ 0.5 × raw (scenario 1's goal)" },
      },
      { case: c, name: 'every status converged (from start)', unit: 's', runs: runs.map((x) => x.statusesSeconds) },
      { case: c, name: 'operator peak RSS', unit: 'MB', runs: runs.map((x) => x.peakRssMB) },
      {
        case: c,
        name: `idle: heartbeat passes per interval (${TTL / 3} s) per registry namespace`,
        unit: '',
        runs: runs.map((x) => x.idle.heartbeatsPerInterval / x.idle.registryNamespaces),
        goal: { kind: 'at-most', threshold: 1, text: '≤ 1 (∝ namespaces, not instances)' },
      },
      {
        case: c,
        name: 'idle: agent writes (register/deregister)',
        unit: '/min',
        runs: runs.map((x) => x.idle.writesPerMinute),
        goal: { kind: 'zero', threshold: 0, text: 'none' },
      },
    );
  }
  const result: ScenarioResult = {
    id: 'consul-cold-sync',
    title: '4. Cold sync (Consul)',
    setup: [
      `N ServiceInstances with one static endpoint each over ${o.namespaces} namespaces, created before the operator starts; one Consul Registry (serviceName "{namespace}-{service}", TTL ${TTL} s), operator defaults.`,
      `Raw limit, measured in the same run right before the operator on the then empty agent: the same number of instances with the operator's own registration bodies (alias check on a heartbeat), PUT /v1/agent/service/register with ${DEFAULT_MAX_CONCURRENT_CALLS} calls in flight (the backend's maxConcurrentCalls), then deregistered again.`,
      "Both rates are timed to the moment the last service name appears in /v1/catalog/services (blocking queries): from the first raw call, and from the operator's caches being synced.",
      `Idle: after convergence, ${o.consulColdSync.idleSeconds} s with nothing to do; calls counted by the agent itself (consul.api.http telemetry, 10-s intervals wholly inside the window).`,
      'A fresh bed for every run.',
    ],
    figures,
    notes,
    details,
  };
  if (profile) result.profile = profile;
  return result;
}

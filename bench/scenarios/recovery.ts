/**
 * Recovery after an outage longer than the TTL: the operator has registered every
 * ServiceInstance, then crashes (SIGKILL: nothing is deregistered) and stays down until every
 * lease has expired and etcd holds nothing under the prefix. Started again, how long until every
 * entry is back, at what registry-side rate compared with the raw limit of the same etcd measured
 * in the same run, and how many apiserver writes, CPU seconds and MB it took.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { encodeEntry } from '../../src/registry/etcd/codec.ts';
import { apiserverRequests, requestDelta, writeRequests } from '../lib/apiserver.ts';
import { withBed, waitFor } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import {
  counterDelta,
  etcdCounters,
  EtcdPrefixWatch,
  prefixContents,
  rawEtcdWrite,
  waitUntilExpired,
  type EtcdCounters,
} from '../lib/etcd.ts';
import { statusConverged, type BenchKube } from '../lib/kube.ts';
import { createLayout, etcdKey, registryEntry, staticLayout } from '../lib/layout.ts';
import { Sampler, startOperator, type BenchOperator } from '../lib/operator.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { StatusTracker } from '../lib/status.ts';

/** The registry prefix the operator writes under. */
const PREFIX = '/bench';
/** Same length as PREFIX, so raw keys and values have the operator's sizes. */
const RAW_PREFIX = '/raw00';
/** Where the operator keeps its bookkeeping (lease ids, stored without a lease) under the prefix. */
const BOOKKEEPING = `${PREFIX}/_kube-registrar/`;
/** The Registry's lease TTL. */
const TTL_SECONDS = 30;
/** The status subresource patch as apiserver_request_total names it (see lib/apiserver.ts). */
const STATUS_PATCH = 'PATCH serviceinstances/status';

/** One recovery run's measurements (seconds are from the restart unless named otherwise). */
export interface RecoveryRun {
  readonly entries: number;
  readonly serviceInstances: number;
  readonly fixtureSeconds: number;
  /** The first operator, from its start until every entry was in etcd and every status converged. */
  readonly firstConvergedSeconds: number;
  /** Keys under the prefix right after the SIGKILL (a crash deregisters nothing: all of them). */
  readonly entriesAfterKill: number;
  /** Leases the entries hung on before the crash. */
  readonly leases: number;
  /** From the SIGKILL until no entry was left under the prefix and every one of those leases gone. */
  readonly expirySeconds: number;
  /** Keys left under the prefix then: the lease-id bookkeeping, stored without a lease. */
  readonly bookkeepingKeysAfterOutage: number;
  readonly raw: { readonly seconds: number; readonly keysPerSecond: number; readonly transactions: number };
  readonly cachesSyncedSeconds: number;
  readonly firstEntrySeconds: number;
  readonly allEntriesSeconds: number;
  /** From caches synced (reconciling starts) to the last entry. */
  readonly registrySideSeconds: number;
  readonly registrySideRate: number;
  /** Until the work queue was empty after every entry was back: the status writes are done too. */
  readonly settledSeconds: number;
  /** Status patches the apiserver served from the restart until settled (its own counter). */
  readonly statusPatches: number;
  /** ServiceInstance changes the harness's watch saw meanwhile (a cross-check of the counter). */
  readonly serviceInstanceChangesSeen: number;
  /** Every write the apiserver served meanwhile, by `VERB resource[/subresource]`. */
  readonly apiserverWrites: Record<string, number>;
  readonly apiserverRequests: Record<string, number>;
  readonly etcdCalls: EtcdCounters;
  /** ServiceInstances whose status said converged when settled. */
  readonly statusesConverged: number;
  readonly operatorCpuSeconds: number;
  readonly peakRssMB: number;
  readonly finished: boolean;
}

/** Resources only the operator writes while the harness watches: the apiserver's own upkeep (leases, endpoints) is left out. */
const OPERATOR_RESOURCES = new Set(['serviceinstances', 'registries', 'events']);

/** The writes of a {@link writeRequests} map to {@link OPERATOR_RESOURCES}, subresources included. */
function operatorWrites(writes: Readonly<Record<string, number>>): number {
  let sum = 0;
  for (const [k, v] of Object.entries(writes)) if (OPERATOR_RESOURCES.has((k.split(' ')[1] ?? '').split('/')[0] ?? '')) sum += v;
  return sum;
}

function sizeName(n: number): string {
  return `static endpoints, ${n >= 1000 ? `${n / 1000}k` : n}`;
}

async function queueEmpty(op: BenchOperator): Promise<boolean> {
  try {
    return (await op.metric('kube_registrar_workqueue_depth')) === 0;
  } catch {
    return false;
  }
}

/** Counts ServiceInstance changes (a new resourceVersion) seen by a watch from now on. */
async function countChanges(kube: BenchKube): Promise<{ readonly count: () => number; readonly stop: () => void }> {
  const { resourceVersion } = await kube.listServiceInstances();
  let n = 0;
  const stop = await kube.watch('/apis/registrar.dev/v1alpha1/serviceinstances', resourceVersion, (phase) => {
    if (phase === 'MODIFIED') n++;
  });
  return { count: () => n, stop };
}

async function runOnce(ctx: ScenarioContext, n: number, run: number, profileDir: string | undefined): Promise<RecoveryRun> {
  const o = ctx.options;
  const layout = staticLayout('recovery', o.namespaces, n);
  const logDir = (what: string): string => join(ctx.runDir, `recovery-${n}-r${run}`, what);
  // Generous: a run that does not finish still yields its rate so far, marked as partial.
  const timeoutMs = 180_000 + n * 150;
  return withBed(ctx.log, async ({ bed, kube, etcd }) => {
    ctx.onVersions(bed.versions);
    await kube.createRegistry('bench', {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'recovery' } },
      namespace: '{namespace}',
      leaseTTLSeconds: TTL_SECONDS,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX, format: 'json' },
    });
    const fixtureSeconds = await createLayout(kube, layout, { bench: 'recovery' });
    ctx.log(`recovery ${sizeName(n)} run ${run}: ${layout.expectedPerSi.size} ServiceInstances created in ${fixtureSeconds.toFixed(1)} s`);
    const expected = new Set(layout.entries.map((e) => etcdKey(PREFIX, e)));

    const operators: BenchOperator[] = [];
    const stops: (() => Promise<void> | void)[] = [];
    try {
      // 1. Converged: every entry in etcd, every status converged.
      const first = await startOperator({ runFlags: o.operatorFlags, kubeconfig: bed.kubeconfig, logDir: logDir('first') });
      operators.push(first);
      const firstStatuses = await StatusTracker.start(kube, layout.expectedPerSi);
      stops.push(() => firstStatuses.stop());
      await first.waitReady(timeoutMs);
      const converged = await waitFor(
        async () =>
          !Number.isNaN(firstStatuses.convergedAt) &&
          (await prefixContents(etcd, `${PREFIX}/`)).keys.filter((k) => expected.has(k)).length === expected.size,
        timeoutMs,
        1000,
      );
      const before = await prefixContents(etcd, `${PREFIX}/`);
      const entriesBefore = before.keys.filter((k) => expected.has(k)).length;
      const strays = before.keys.filter((k) => !expected.has(k) && !k.startsWith(BOOKKEEPING));
      if (strays.length > 0)
        throw new Error(
          `${strays.length} key(s) under ${PREFIX}/ that no ServiceInstance of the run asks for (e.g. ${strays[0]}): the harness's expected keys and the operator's layout disagree; fix lib/layout.ts`,
        );
      if (!converged || entriesBefore !== expected.size)
        throw new Error(
          `the first operator did not converge within ${timeoutMs / 1000} s (${entriesBefore}/${expected.size} entries in etcd, ${firstStatuses.converged}/${firstStatuses.total} statuses converged); ` +
            `no recovery to measure: see its log in ${logDir('first')}`,
        );
      const firstConvergedSeconds = (firstStatuses.convergedAt - first.startedAt) / 1000;
      firstStatuses.stop();

      // 2. The crash, and an outage until every lease expired.
      await first.process.kill();
      const killedAt = performance.now();
      const entriesAfterKill = (await prefixContents(etcd, `${PREFIX}/`)).keys.filter((k) => expected.has(k)).length;
      const expiry = await waitUntilExpired(etcd, `${PREFIX}/`, BOOKKEEPING, before.leases, (TTL_SECONDS + 120) * 1000);
      if (!expiry.expired)
        throw new Error(
          `${expiry.keysLeft} key(s) under ${PREFIX}/ (besides ${BOOKKEEPING}) and ${expiry.leasesLeft} of the operator's ${before.leases.size} lease(s) were still there ${TTL_SECONDS + 120} s after the SIGKILL (TTL ${TTL_SECONDS} s): ` +
            'something kept them alive, so this would not measure a recovery from an outage longer than the TTL',
        );
      const expirySeconds = (expiry.at - killedAt) / 1000;
      if (expiry.bookkeepingKeysOnALease > 0)
        throw new Error(
          `${expiry.bookkeepingKeysOnALease} key(s) under ${BOOKKEEPING} hang on a lease that outlived the outage: the count of 0 under the prefix would not prove every lease expired`,
        );
      ctx.log(
        `  SIGKILL with ${entriesAfterKill} entries on ${before.leases.size} lease(s); entries and leases gone ${expirySeconds.toFixed(1)} s later (${expiry.bookkeepingKeys} lease-id bookkeeping key(s) without a lease remain, as designed)`,
      );

      // 3. The raw limit on the same etcd with identical values, then nothing of it left.
      const rawOwner = randomUUID();
      const rawEntries = layout.entries.map((e) => ({
        key: etcdKey(RAW_PREFIX, e),
        value: encodeEntry('json', registryEntry(e, rawOwner)).value,
      }));
      const raw = await rawEtcdWrite(etcd, rawEntries, TTL_SECONDS);
      const rawLeft = await etcd.getAll().prefix(`${RAW_PREFIX}/`).count();
      if (rawLeft !== 0) throw new Error(`${rawLeft} raw key(s) were left under ${RAW_PREFIX}/ after their lease was revoked`);
      ctx.log(
        `  raw etcd: ${raw.keys} keys in ${raw.transactions} txns, ${raw.seconds.toFixed(2)} s = ${raw.keysPerSecond.toFixed(0)} keys/s`,
      );

      // 4. The restart, timed from spawning to every entry back and the queue empty.
      const seen = new Set<string>();
      let firstAt = Number.NaN;
      let allAt = Number.NaN;
      let lastAt = Number.NaN;
      const watch = await EtcdPrefixWatch.start(etcd, `${PREFIX}/`);
      stops.push(() => watch.stop());
      watch.onEvent = (e) => {
        if (e.kind !== 'put' || !expected.has(e.key)) return;
        if (Number.isNaN(firstAt)) firstAt = e.at;
        seen.add(e.key);
        lastAt = e.at;
        if (seen.size === expected.size && Number.isNaN(allAt)) allAt = e.at;
      };
      const changes = await countChanges(kube);
      stops.push(() => changes.stop());
      const apiBefore = await apiserverRequests(bed);
      const etcdBefore = await etcdCounters(bed.registryEtcd.clientUrl);
      const op = await startOperator({
        runFlags: o.operatorFlags,
        kubeconfig: bed.kubeconfig,
        logDir: logDir('restart'),
        nodeFlags: ctx.nodeFlags(profileDir),
      });
      operators.push(op);
      const sampler = new Sampler(op, 1000, false);
      stops.push(() => sampler.stop());
      await op.waitReady(timeoutMs);
      const back = await waitFor(() => !Number.isNaN(allAt), timeoutMs, 100);
      const settled = back && (await waitFor(() => queueEmpty(op), timeoutMs, 250));
      const settledAt = performance.now();
      const usage = await op.sample();
      const apiserverCalls = requestDelta(apiBefore, await apiserverRequests(bed));
      const etcdCalls = counterDelta(etcdBefore, await etcdCounters(bed.registryEtcd.clientUrl));
      const statusesConverged = (await kube.listServiceInstances()).items.filter((si) =>
        statusConverged(si, layout.expectedPerSi.get(`${si.metadata.namespace}/${si.metadata.name}`) ?? Number.NaN),
      ).length;
      await sampler.stop();
      const s = (t: number): number => (t - op.startedAt) / 1000;
      // Unfinished: the rate of what did land, up to the last entry seen (a partial figure).
      const registrySideSeconds = ((Number.isNaN(allAt) ? lastAt : allAt) - op.readyAt) / 1000;
      const result: RecoveryRun = {
        entries: expected.size,
        serviceInstances: layout.expectedPerSi.size,
        fixtureSeconds,
        firstConvergedSeconds,
        entriesAfterKill,
        leases: before.leases.size,
        expirySeconds,
        bookkeepingKeysAfterOutage: expiry.bookkeepingKeys,
        raw: { seconds: raw.seconds, keysPerSecond: raw.keysPerSecond, transactions: raw.transactions },
        cachesSyncedSeconds: s(op.readyAt),
        firstEntrySeconds: s(firstAt),
        allEntriesSeconds: s(allAt),
        registrySideSeconds,
        registrySideRate: seen.size / registrySideSeconds,
        settledSeconds: settled ? s(settledAt) : Number.NaN,
        statusPatches: apiserverCalls[STATUS_PATCH] ?? 0,
        serviceInstanceChangesSeen: changes.count(),
        apiserverWrites: writeRequests(apiserverCalls),
        apiserverRequests: apiserverCalls,
        etcdCalls,
        statusesConverged,
        operatorCpuSeconds: usage.cpuSeconds,
        peakRssMB: Math.max(...sampler.samples.map((x) => x.rssMiB * 1.048576), usage.rssMiB * 1.048576),
        finished: settled,
      };
      ctx.log(
        `  restart: caches ${result.cachesSyncedSeconds.toFixed(1)} s, first entry ${result.firstEntrySeconds.toFixed(1)} s, all ${seen.size}/${expected.size} entries ${result.allEntriesSeconds.toFixed(1)} s ` +
          `(${result.registrySideRate.toFixed(0)} entries/s registry-side), settled ${result.settledSeconds.toFixed(1)} s; ${result.statusPatches} status patches ` +
          `(${result.serviceInstanceChangesSeen} ServiceInstance changes watched), ${statusesConverged}/${layout.expectedPerSi.size} statuses converged; CPU ${usage.cpuSeconds.toFixed(1)} s, peak RSS ${result.peakRssMB.toFixed(0)} MB`,
      );
      ctx.log(`  calls: apiserver ${JSON.stringify(apiserverCalls)}; etcd ${JSON.stringify(etcdCalls)}`);
      return result;
    } finally {
      for (const stop of stops.reverse()) await stop();
      for (const op of operators) await op.stop();
    }
  });
}

/** Runs the recovery scenario: static endpoints, the largest cold-sync size. */
export async function recovery(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const n = o.recovery.serviceInstances;
  const c = sizeName(n);
  const runs: RecoveryRun[] = [];
  let profile: string | undefined;
  for (let r = 1; r <= o.repeats; r++) {
    // Profile the restarted operator of the last repeat only: profiling costs time of its own.
    const profileDir = o.profile && r === o.repeats ? join(ctx.runDir, `profile-recovery-${n}`) : undefined;
    runs.push(await runOnce(ctx, n, r, profileDir));
    if (profileDir) profile = `recovery, ${c}, the restarted operator:\n${await summariseProfiles(profileDir)}`;
  }
  const notes: string[] = [];
  for (const r of runs.filter((x) => !x.finished))
    notes.push(
      `${c}: a restart did not settle within its time limit (${(180 + r.entries * 0.15).toFixed(0)} s): ${r.registrySideSeconds > 0 ? 'its registry-side rate is that of the entries that did land' : 'no entry came back'}; its writes are counted up to the limit.`,
    );
  for (const r of runs.filter((x) => x.finished && x.statusesConverged !== x.serviceInstances))
    notes.push(`${c}: when the restarted operator settled, ${r.statusesConverged}/${r.serviceInstances} statuses said converged.`);
  const figures: Figure[] = [
    { case: c, name: 'outage: SIGKILL → entries and leases gone', unit: 's', runs: runs.map((x) => x.expirySeconds) },
    { case: c, name: 'caches synced (from restart)', unit: 's', runs: runs.map((x) => x.cachesSyncedSeconds) },
    { case: c, name: 'every entry back in etcd (from restart)', unit: 's', runs: runs.map((x) => x.allEntriesSeconds) },
    {
      case: c,
      name: 'registry-side write rate (caches synced → last entry)',
      unit: 'entries/s',
      runs: runs.map((x) => x.registrySideRate),
      limit: { name: 'raw etcd3, 128-op txns, 1 lease', unit: 'keys/s', runs: runs.map((x) => x.raw.keysPerSecond) },
      goal: { kind: 'ratio-at-least', threshold: 0.5, text: '≥ 0.5 × raw' },
    },
    { case: c, name: 'queue empty after the last entry (from restart)', unit: 's', runs: runs.map((x) => x.settledSeconds) },
    { case: c, name: 'ServiceInstance status patches (restart → settled)', unit: 'patches', runs: runs.map((x) => x.statusPatches) },
    {
      case: c,
      name: 'apiserver writes to ServiceInstances, Registries and Events (restart → settled)',
      unit: 'requests',
      runs: runs.map((x) => operatorWrites(x.apiserverWrites)),
    },
    { case: c, name: 'operator CPU time (restart → settled)', unit: 'CPU s', runs: runs.map((x) => x.operatorCpuSeconds) },
    { case: c, name: 'operator peak RSS (restart → settled)', unit: 'MB', runs: runs.map((x) => x.peakRssMB) },
  ];
  const result: ScenarioResult = {
    id: 'recovery',
    title: '11. Recovery after an outage longer than the TTL (etcd)',
    setup: [
      `${n} ServiceInstances with one static endpoint each over ${o.namespaces} namespaces (each its own registry namespace and lease); one etcd Registry (json format, TTL ${TTL_SECONDS} s), operator defaults.`,
      "The operator converges (every entry in etcd, every status converged), is killed with SIGKILL (a crash: nothing deregistered), and stays down until every lease its entries hung on has expired: no key left under the prefix but the operator's lease-id bookkeeping (`<prefix>/_kube-registrar/leases/…`, stored without a lease by design so a successor can find its leases; checked to hang on none) and none of those leases listed by etcd (polled every 250 ms). The restarted operator finds those ids pointing at expired leases, as it would after a real outage.",
      'Then, in the same run, the raw limit: the same keys with identical values written straight through etcd3 on one lease, 128 puts per transaction, one transaction in flight; the lease is revoked and nothing of it is left (checked) before the operator starts again.',
      'Times are from spawning the second operator (`node dist/main.js`); entries are timestamped by an etcd watch on the prefix. Registry-side rate = entries ÷ (last entry back − caches synced). "Settled" = every entry back and the work queue empty (polled every 250 ms), when every status write is done.',
      "Status patches are the apiserver's own counter (apiserver_request_total, PATCH serviceinstances/status) from the restart until settled; a watch of ServiceInstances counting changes is kept beside it in the results JSON as a cross-check, with every write by verb and resource. The writes figure counts PATCH/POST/PUT/DELETE of ServiceInstances (and their status), Registries (status) and Events, which nothing but the operator writes meanwhile; the apiserver's own upkeep (its leases and endpoints) is in the JSON only.",
      'A fresh bed for every run.',
    ],
    figures,
    notes,
    details: [{ case: c, runs }],
  };
  if (profile) result.profile = profile;
  return result;
}

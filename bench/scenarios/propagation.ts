/**
 * Scenario 2, propagation latency: pods' Ready conditions are flipped through the status
 * subresource at a steady rate, and each flip is timed from the patch to the entry appearing in
 * or leaving etcd (an etcd watch) or Consul's passing results (blocking queries). The apiserver's
 * own share is the time from the patch to the harness's pod watch seeing it; what the operator
 * adds is the rest.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeEntry } from '../../src/registry/etcd/codec.ts';
import { withBed, waitFor } from '../lib/bed.ts';
import { PassingWatch, RawConsulPool } from '../lib/consul.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { EtcdPrefixWatch } from '../lib/etcd.ts';
import type { BenchKube } from '../lib/kube.ts';
import { createLayout, etcdKey, podLayout, registryEntry, type ExpectedEntry, type Layout } from '../lib/layout.ts';
import { describeWindow, reconcileWindow, startOperator, type BenchOperator, type ReconcileWindow } from '../lib/operator.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { summariseProfiles } from '../lib/profile.ts';
import { distribution, mapBounded, type Distribution } from '../lib/stats.ts';
import { StatusTracker } from '../lib/status.ts';

const PREFIX = '/bench';
/** The raw etcd limit's keys: outside the operator's prefix, and as long, so keys have the operator's sizes. */
const RAW_PREFIX = '/braw0';
/** A change not visible this long after the phase ended is counted as never seen (infinitely late). */
const UNSEEN_AFTER_MS = 60_000;

interface Change {
  readonly pod: string;
  readonly toReady: boolean;
  readonly sentAt: number;
  ackAt: number;
  informerAt: number;
  visibleAt: number;
}

/** Latencies of one phase (one backend, one round), in milliseconds. */
export interface PhaseResult {
  readonly changes: number;
  readonly achievedRate: number;
  /** Changes never seen in the registry within the grace period. */
  readonly unseen: number;
  readonly endToEnd: Distribution;
  readonly apiserver: Distribution;
  readonly operator: Distribution;
  /** The operator's reconciles during the phase, their mean duration and queue wait (ms). */
  readonly reconciles: ReconcileWindow;
}

/** Maps a registry observation back to the pod it belongs to. */
type Observe = (onSeen: (pod: string, ready: boolean, at: number) => void) => Promise<() => Promise<void>>;

/**
 * Sends `rate × seconds` changes, one every 1/rate s, without waiting for one to finish before the
 * next is due (at most 64 in flight): `next` picks and starts a change, or returns undefined to skip
 * this tick (nothing free to change). Resolves the rate achieved, once every change sent has finished.
 */
async function paced(rate: number, seconds: number, next: () => Promise<void> | undefined): Promise<number> {
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  const total = Math.round(rate * seconds);
  let sent = 0;
  for (let i = 0; i < total; i++) {
    const wait = started + (i * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    const p = next();
    if (p === undefined) continue;
    sent++;
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    if (inFlight.size >= 64) await Promise.race(inFlight);
  }
  const achievedRate = sent / ((performance.now() - started) / 1000);
  await Promise.all(inFlight);
  return achievedRate;
}

/** The next of `order` (round robin from `cursor.at`) that `free` accepts, or undefined if none is. */
function nextFree<T>(order: readonly T[], cursor: { at: number }, free: (item: T) => boolean): T | undefined {
  for (let tries = 0; tries < order.length; tries++) {
    const candidate = order[cursor.at++ % order.length] as T;
    if (free(candidate)) return candidate;
  }
  return undefined;
}

async function flipPhase(
  kube: BenchKube,
  op: BenchOperator,
  entries: readonly ExpectedEntry[],
  rate: number,
  seconds: number,
  observe: Observe,
): Promise<PhaseResult> {
  const byPod = new Map(entries.map((e) => [`${e.namespace}/${e.source.split('/')[2] ?? ''}`, e]));
  const ready = new Map([...byPod.keys()].map((k) => [k, true]));
  const current = new Map<string, Change>();
  const changes: Change[] = [];

  const list = await kube.core.listPodForAllNamespaces({ limit: 1 });
  const stopPods = await kube.watch('/api/v1/pods', list.metadata?.resourceVersion ?? '', (phase, obj, at) => {
    if (phase !== 'MODIFIED') return;
    const pod = obj as V1Pod;
    const key = `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
    const c = current.get(key);
    const isReady = (pod.status?.conditions ?? []).some((x) => x.type === 'Ready' && x.status === 'True');
    if (c && Number.isNaN(c.informerAt) && isReady === c.toReady) c.informerAt = at;
  });
  const stopRegistry = await observe((pod, isReady, at) => {
    const c = current.get(pod);
    if (c && Number.isNaN(c.visibleAt) && isReady === c.toReady) c.visibleAt = at;
  });

  const order = [...byPod.keys()].sort(() => Math.random() - 0.5);
  const cursor = { at: 0 };
  const totalsBefore = await op.reconcileTotals();
  try {
    const achievedRate = await paced(rate, seconds, () => {
      // The next pod whose previous change is visible: never two changes of one pod in flight, so
      // no change is ever superseded (the operator, being level-based, could merge the two). When
      // the operator lags so far that every pod still waits, the change is skipped, and the
      // achieved rate shows it.
      const pod = nextFree(order, cursor, (candidate) => {
        const prev = current.get(candidate);
        return !prev || !Number.isNaN(prev.visibleAt);
      });
      if (pod === undefined) return undefined;
      const e = byPod.get(pod) as ExpectedEntry;
      const toReady = !(ready.get(pod) ?? true);
      ready.set(pod, toReady);
      const c: Change = { pod, toReady, sentAt: performance.now(), ackAt: Number.NaN, informerAt: Number.NaN, visibleAt: Number.NaN };
      current.set(pod, c);
      changes.push(c);
      return kube.setPodReady(e.namespace, pod.split('/')[1] ?? '', e.address, toReady).then(() => {
        c.ackAt = performance.now();
      });
    });
    await waitFor(() => changes.every((c) => !Number.isNaN(c.visibleAt)), UNSEEN_AFTER_MS, 100);
    const reconciles = reconcileWindow(totalsBefore, await op.reconcileTotals());
    // Leave every pod Ready again, so the next phase or round starts from the same state.
    await Promise.all(
      [...ready.entries()]
        .filter(([, r]) => !r)
        .map(([pod]) => {
          const e = byPod.get(pod) as ExpectedEntry;
          ready.set(pod, true);
          return kube.setPodReady(e.namespace, pod.split('/')[1] ?? '', e.address, true);
        }),
    );
    // A change never seen counts as infinitely late, so the percentiles cannot flatter a backlog.
    const late = (c: Change, from: number): number => (Number.isNaN(c.visibleAt) ? Number.POSITIVE_INFINITY : c.visibleAt - from);
    const withEvent = changes.filter((c) => !Number.isNaN(c.informerAt));
    return {
      changes: changes.length,
      achievedRate,
      unseen: changes.filter((c) => Number.isNaN(c.visibleAt)).length,
      endToEnd: distribution(changes.map((c) => late(c, c.sentAt))),
      apiserver: distribution(withEvent.map((c) => c.informerAt - c.sentAt)),
      operator: distribution(withEvent.map((c) => late(c, c.informerAt))),
      reconciles,
    };
  } finally {
    stopPods();
    await stopRegistry();
  }
}

/** Latencies of a raw phase: call sent → visible (in etcd's watch, or in Consul's passing results), in ms. */
export interface RawPhaseResult {
  readonly changes: number;
  readonly achievedRate: number;
  readonly unseen: number;
  readonly latency: Distribution;
}

/**
 * The raw limits' flips: `keys` flipped at the rate, each change one call of `send` (present or
 * not), sent at its time without waiting for the others and timed until `seen` reports it (wire it
 * to a watch). A key is flipped again only once its previous change is visible, as in
 * {@link flipPhase}. Every key starts present; `present` says how each ended.
 */
class RawFlips {
  readonly present: Map<string, boolean>;
  readonly #keys: readonly string[];
  readonly #current = new Map<string, { readonly toPresent: boolean; readonly sentAt: number; visibleAt: number }>();

  constructor(keys: readonly string[]) {
    this.#keys = [...keys].sort(() => Math.random() - 0.5);
    this.present = new Map(keys.map((k) => [k, true]));
  }

  /** A watch saw `key` become present or absent at `at`. */
  seen(key: string, present: boolean, at: number): void {
    const c = this.#current.get(key);
    if (c && Number.isNaN(c.visibleAt) && present === c.toPresent) c.visibleAt = at;
  }

  async run(rate: number, seconds: number, what: string, send: (key: string, present: boolean) => Promise<void>): Promise<RawPhaseResult> {
    const changes: { readonly sentAt: number; visibleAt: number }[] = [];
    const errors: unknown[] = [];
    const cursor = { at: 0 };
    const achievedRate = await paced(rate, seconds, () => {
      const key = nextFree(this.#keys, cursor, (candidate) => {
        const prev = this.#current.get(candidate);
        return !prev || !Number.isNaN(prev.visibleAt);
      });
      if (key === undefined) return undefined;
      const toPresent = !(this.present.get(key) ?? true);
      this.present.set(key, toPresent);
      const c = { toPresent, sentAt: performance.now(), visibleAt: Number.NaN };
      this.#current.set(key, c);
      changes.push(c);
      return send(key, toPresent).catch((err: unknown) => {
        errors.push(err);
      });
    });
    await waitFor(() => changes.every((c) => !Number.isNaN(c.visibleAt)), UNSEEN_AFTER_MS, 100);
    if (errors.length > 0) throw new Error(`${errors.length} ${what}(s) failed, e.g. ${String(errors[0])}`);
    return {
      changes: changes.length,
      achievedRate,
      unseen: changes.filter((c) => Number.isNaN(c.visibleAt)).length,
      latency: distribution(changes.map((c) => (Number.isNaN(c.visibleAt) ? Number.POSITIVE_INFINITY : c.visibleAt - c.sentAt))),
    };
  }
}

/**
 * The raw limit for Consul, measured like the operator's figure: the pool's instances flipped at the
 * same rate, each change one agent call (register with the operator's body, or deregister), timed
 * until the same blocking query sees it.
 */
async function rawFlipPhase(pool: RawConsulPool, rate: number, seconds: number, addr: string): Promise<RawPhaseResult> {
  const flips = new RawFlips(pool.keys());
  const watch = new PassingWatch(addr, pool.names);
  await watch.primed();
  watch.onEvent = (e) => flips.seen(`${e.service}|${e.address}`, e.kind === 'up', e.at);
  try {
    const result = await flips.run(rate, seconds, 'raw agent call', (key, up) => pool.set(key, up));
    // Leave every instance registered again, so the next round starts from the same state (16 calls
    // in flight: the agent refuses more than 200 connections from one address).
    await mapBounded(
      [...flips.present.entries()].filter(([, up]) => !up).map(([key]) => key),
      16,
      async (key) => {
        flips.present.set(key, true);
        await pool.set(key, true);
      },
    );
    return result;
  } finally {
    await watch.stop();
  }
}

/**
 * The raw limit for etcd, measured like the operator's figure: as many keys, with the operator's
 * values, on one lease, flipped at the same rate, each change one transaction guarded the way the
 * operator guards its writes (a create only if the key is absent, a delete only at the revision last
 * written), timed until a watch on the prefix sees it. The lease is revoked at the end, which removes
 * the keys.
 */
async function rawEtcdFlipPhase(
  etcd: Etcd3,
  entries: readonly { key: string; value: string }[],
  rate: number,
  seconds: number,
): Promise<RawPhaseResult> {
  const lease = etcd.lease(30);
  const leaseId = await lease.grant();
  const values = new Map(entries.map((e) => [e.key, e.value]));
  const revisions = new Map<string, string>();
  const put = async (key: string): Promise<void> => {
    const res = await etcd.kv.txn({
      compare: [{ key: Buffer.from(key), target: 'Version', result: 'Equal', version: '0' }],
      success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(values.get(key) ?? ''), lease: leaseId } }],
    });
    if (!res.succeeded) throw new Error(`raw etcd create of ${key} was refused: the key exists`);
    revisions.set(key, res.header.revision);
  };
  const del = async (key: string): Promise<void> => {
    const res = await etcd.kv.txn({
      compare: [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revisions.get(key) ?? '0' }],
      success: [{ request_delete_range: { key: Buffer.from(key) } }],
    });
    if (!res.succeeded) throw new Error(`raw etcd delete of ${key} was refused: it changed since it was written`);
    revisions.delete(key);
  };
  const flips = new RawFlips([...values.keys()]);
  let watch: EtcdPrefixWatch | undefined;
  try {
    await mapBounded([...values.keys()], 16, put);
    watch = await EtcdPrefixWatch.start(etcd, `${RAW_PREFIX}/`);
    watch.onEvent = (e) => flips.seen(e.key, e.kind === 'put', e.at);
    return await flips.run(rate, seconds, 'raw etcd transaction', (key, present) => (present ? put(key) : del(key)));
  } finally {
    await watch?.stop();
    await lease.revoke();
  }
}

/**
 * The apiserver's side of a phase without the operator's: readiness flips of pods that no Registry
 * and no ServiceInstance selects, at the same rate and with the same rule (a pod is flipped again only
 * once its previous patch was acknowledged), then every pod made Ready again. Run beside the raw Consul
 * phase, it keeps the apiserver, its etcd and the operator's informers as busy as in the operator's
 * phase, so that the raw limit and the operator's figure share a machine under the same load.
 */
async function apiserverLoad(kube: BenchKube, entries: readonly ExpectedEntry[], rate: number, seconds: number): Promise<void> {
  const pods = entries.map((e) => ({ ns: e.namespace, name: e.source.split('/')[2] ?? '', ip: e.address, ready: true, busy: false }));
  const order = [...pods].sort(() => Math.random() - 0.5);
  const cursor = { at: 0 };
  await paced(rate, seconds, () => {
    const chosen = nextFree(order, cursor, (candidate) => !candidate.busy);
    if (chosen === undefined) return undefined;
    chosen.busy = true;
    chosen.ready = !chosen.ready;
    return kube.setPodReady(chosen.ns, chosen.name, chosen.ip, chosen.ready).finally(() => {
      chosen.busy = false;
    });
  });
  await mapBounded(
    pods.filter((x) => !x.ready),
    16,
    async (x) => {
      x.ready = true;
      await kube.setPodReady(x.ns, x.name, x.ip, true);
    },
  );
}

function podOf(e: ExpectedEntry): string {
  return `${e.namespace}/${e.source.split('/')[2] ?? ''}`;
}

function consulName(e: ExpectedEntry): string {
  return `${e.namespace}-${e.service}`;
}

/** Runs scenario 2 on one bed: etcd and Consul in separate namespaces, one operator. */
export async function propagation(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const p = o.propagation;
  const rounds: { etcd: PhaseResult; consul: PhaseResult; rawEtcd: RawPhaseResult; rawConsul: RawPhaseResult }[] = [];
  let profile: string | undefined;
  await withBed(ctx.log, async ({ bed, kube, etcd }) => {
    ctx.onVersions(bed.versions);
    await kube.createRegistry('etcd', {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'prop-etcd' } },
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      etcd: { endpoints: [bed.registryEtcd.clientUrl], prefix: PREFIX },
    });
    await kube.createRegistry('consul', {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'prop-consul' } },
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      consul: { address: bed.consulAddr, serviceName: '{namespace}-{service}' },
    });
    const etcdLayout: Layout = podLayout('prope', 2, p.services, p.podsPerService);
    const consulLayout: Layout = podLayout('propc', 2, p.services, p.podsPerService, { ipBlock: 1 });
    await createLayout(kube, etcdLayout, { bench: 'prop-etcd' });
    await createLayout(kube, consulLayout, { bench: 'prop-consul' });
    // Pods only, in namespaces no Registry selects: the apiserver load beside the raw Consul phase.
    const loadLayout: Layout = { ...podLayout('propx', 2, p.services, p.podsPerService, { ipBlock: 2 }), serviceInstances: new Map() };
    await createLayout(kube, loadLayout, { bench: 'prop-load' });
    ctx.log(
      `propagation: ${etcdLayout.entries.length} + ${consulLayout.entries.length} Ready pods behind ${p.services} + ${p.services} ServiceInstances`,
    );
    const statuses = await StatusTracker.start(kube, new Map([...etcdLayout.expectedPerSi, ...consulLayout.expectedPerSi]));
    const profileDir = o.profile ? join(ctx.runDir, 'profile-propagation') : undefined;
    const op = await startOperator({
      runFlags: ctx.options.operatorFlags,
      kubeconfig: bed.kubeconfig,
      logDir: join(ctx.runDir, 'propagation'),
      nodeFlags: ctx.nodeFlags(profileDir),
    });
    try {
      await op.waitReady();
      if (!(await waitFor(() => !Number.isNaN(statuses.convergedAt), 300_000, 200)))
        throw new Error(`the operator did not converge: ${statuses.converged}/${statuses.total} statuses`);
      statuses.stop();
      ctx.log('propagation: converged; measuring');

      const etcdKeys = new Map(etcdLayout.entries.map((e) => [etcdKey(PREFIX, e), podOf(e)]));
      const observeEtcd: Observe = async (onSeen) => {
        const w = await EtcdPrefixWatch.start(etcd, `${PREFIX}/`);
        w.onEvent = (e) => {
          const pod = etcdKeys.get(e.key);
          if (pod) onSeen(pod, e.kind === 'put', e.at);
        };
        return () => w.stop();
      };
      const consulPods = new Map(consulLayout.entries.map((e) => [`${consulName(e)}|${e.address}`, podOf(e)]));
      const observeConsul: Observe = async (onSeen) => {
        const w = new PassingWatch(bed.consulAddr, [...new Set(consulLayout.entries.map(consulName))]);
        await w.primed();
        w.onEvent = (e) => {
          const pod = consulPods.get(`${e.service}|${e.address}`);
          if (pod) onSeen(pod, e.kind === 'up', e.at);
        };
        return () => w.stop();
      };
      // The raw limit's instances stay registered through every phase, so the agent holds the same
      // services while the operator is measured as while the limit is.
      const rawCluster = randomUUID();
      const rawPool = await RawConsulPool.create(
        bed.consulAddr,
        consulLayout.entries.map((e) => registryEntry({ ...e, namespace: e.namespace.replace('propc', 'rawpc') }, rawCluster)),
        { clusterId: rawCluster, registryNamespace: 'rawpc', name: (e) => `${e.registryNamespace}-${e.endpoint.service}`, concurrency: 16 },
      );
      ctx.log(`propagation: ${rawPool.keys().length} raw instances registered on the agent for the Consul limit`);
      const rawEtcdCluster = randomUUID();
      const rawEtcdEntries = etcdLayout.entries.map((e) => ({
        key: etcdKey(RAW_PREFIX, e),
        value: encodeEntry('json', registryEntry(e, rawEtcdCluster)).value,
      }));
      for (let r = 1; r <= o.repeats; r++) {
        const [rawEtcd] = await Promise.all([
          rawEtcdFlipPhase(etcd, rawEtcdEntries, p.rate, p.seconds),
          apiserverLoad(kube, loadLayout.entries, p.rate, p.seconds),
        ]);
        ctx.log(
          `  round ${r} raw etcd: ${rawEtcd.changes} guarded transactions at ${rawEtcd.achievedRate.toFixed(1)}/s, call → visible p50/p95/p99 ${rawEtcd.latency.p50.toFixed(0)}/${rawEtcd.latency.p95.toFixed(0)}/${rawEtcd.latency.p99.toFixed(0)} ms, unseen ${rawEtcd.unseen}`,
        );
        await sleep(3000);
        const etcdPhase = await flipPhase(kube, op, etcdLayout.entries, p.rate, p.seconds, observeEtcd);
        ctx.log(
          `  round ${r} etcd: ${etcdPhase.changes} changes at ${etcdPhase.achievedRate.toFixed(1)}/s, p50/p95/p99 ${etcdPhase.endToEnd.p50.toFixed(0)}/${etcdPhase.endToEnd.p95.toFixed(0)}/${etcdPhase.endToEnd.p99.toFixed(0)} ms, apiserver p99 ${etcdPhase.apiserver.p99.toFixed(0)} ms, operator p99 ${etcdPhase.operator.p99.toFixed(0)} ms, unseen ${etcdPhase.unseen}; ${describeWindow(etcdPhase.reconciles)}`,
        );
        await sleep(3000);
        const [rawConsul] = await Promise.all([
          rawFlipPhase(rawPool, p.rate, p.seconds, bed.consulAddr),
          apiserverLoad(kube, loadLayout.entries, p.rate, p.seconds),
        ]);
        ctx.log(
          `  round ${r} raw consul: ${rawConsul.changes} agent calls at ${rawConsul.achievedRate.toFixed(1)}/s, call → visible p50/p95/p99 ${rawConsul.latency.p50.toFixed(0)}/${rawConsul.latency.p95.toFixed(0)}/${rawConsul.latency.p99.toFixed(0)} ms, unseen ${rawConsul.unseen}`,
        );
        await sleep(3000);
        const consulPhase = await flipPhase(kube, op, consulLayout.entries, p.rate, p.seconds, observeConsul);
        ctx.log(
          `  round ${r} consul: ${consulPhase.changes} changes at ${consulPhase.achievedRate.toFixed(1)}/s, p50/p95/p99 ${consulPhase.endToEnd.p50.toFixed(0)}/${consulPhase.endToEnd.p95.toFixed(0)}/${consulPhase.endToEnd.p99.toFixed(0)} ms, apiserver p99 ${consulPhase.apiserver.p99.toFixed(0)} ms, operator p99 ${consulPhase.operator.p99.toFixed(0)} ms, unseen ${consulPhase.unseen}; ${describeWindow(consulPhase.reconciles)}`,
        );
        rounds.push({ etcd: etcdPhase, consul: consulPhase, rawEtcd, rawConsul });
        await sleep(3000);
      }
    } finally {
      statuses.stop();
      await op.stop();
    }
    if (profileDir) profile = await summariseProfiles(profileDir);
  });

  const figures: Figure[] = [];
  const notes: string[] = [];
  for (const backend of ['etcd', 'consul'] as const) {
    const c = backend === 'etcd' ? 'etcd (watch)' : 'Consul (blocking queries, ?passing)';
    const ph = rounds.map((r) => r[backend]);
    figures.push(
      { case: c, name: 'changes per second achieved', unit: '/s', runs: ph.map((x) => x.achievedRate) },
      { case: c, name: 'patch → visible, p50', unit: 'ms', runs: ph.map((x) => x.endToEnd.p50) },
      { case: c, name: 'patch → visible, p95', unit: 'ms', runs: ph.map((x) => x.endToEnd.p95) },
      { case: c, name: 'patch → visible, p99', unit: 'ms', runs: ph.map((x) => x.endToEnd.p99) },
      { case: c, name: "apiserver's share (patch → watch event), p50", unit: 'ms', runs: ph.map((x) => x.apiserver.p50) },
      { case: c, name: "apiserver's share (patch → watch event), p99", unit: 'ms', runs: ph.map((x) => x.apiserver.p99) },
      { case: c, name: 'beyond the apiserver (watch event → visible), p50', unit: 'ms', runs: ph.map((x) => x.operator.p50) },
      backend === 'etcd'
        ? {
            case: c,
            name: 'beyond the apiserver (watch event → visible), p99',
            unit: 'ms',
            runs: ph.map((x) => x.operator.p99),
            limit: {
              name: 'raw guarded transaction p99 (call → visible)',
              unit: 'ms',
              runs: rounds.map((x) => x.rawEtcd.latency.p99),
            },
            goal: { kind: 'below', threshold: 100, text: '< 100 ms' },
          }
        : {
            case: c,
            name: 'beyond the apiserver (watch event → visible), p99',
            unit: 'ms',
            runs: ph.map((x) => x.operator.p99),
            limit: {
              name: 'raw agent registration p99 (call → visible)',
              unit: 'ms',
              runs: rounds.map((x) => x.rawConsul.latency.p99),
            },
            goal: { kind: 'ratio-at-most', threshold: 2, text: '≤ 2 × raw registration p99' },
          },
      { case: c, name: "operator's mean reconcile duration", unit: 'ms', runs: ph.map((x) => x.reconciles.meanReconcileMs) },
      { case: c, name: "operator's mean wait in the queue", unit: 'ms', runs: ph.map((x) => x.reconciles.meanQueueWaitMs) },
      { case: c, name: 'registry reads per reconcile', unit: '', runs: ph.map((x) => x.reconciles.readsPerReconcile) },
      { case: c, name: 'mean registry read', unit: 'ms', runs: ph.map((x) => x.reconciles.meanReadMs) },
      { case: c, name: 'mean registry write (change batch)', unit: 'ms', runs: ph.map((x) => x.reconciles.meanApplyMs) },
      { case: c, name: 'reconciles over 100 ms', unit: '%', runs: ph.map((x) => 100 * x.reconciles.reconcilesOver100ms) },
      { case: c, name: 'registry writes over 100 ms', unit: '%', runs: ph.map((x) => 100 * x.reconciles.appliesOver100ms) },
    );
    // The raw limit's own figures, beside the operator's.
    const raw = rounds.map((r) => (backend === 'etcd' ? r.rawEtcd : r.rawConsul));
    const rc =
      backend === 'etcd' ? 'etcd raw guarded transactions (same rate, same watch)' : 'Consul raw agent calls (same rate, same query)';
    figures.push(
      { case: rc, name: 'changes per second achieved', unit: '/s', runs: raw.map((x) => x.achievedRate) },
      { case: rc, name: 'call → visible, p50', unit: 'ms', runs: raw.map((x) => x.latency.p50) },
      { case: rc, name: 'call → visible, p99', unit: 'ms', runs: raw.map((x) => x.latency.p99) },
    );
    const rawUnseen = raw.reduce((s, x) => s + x.unseen, 0);
    if (rawUnseen > 0) notes.push(`${rc}: ${rawUnseen} change(s) were never visible; they count as infinitely late (∞).`);
    const unseen = ph.reduce((s, x) => s + x.unseen, 0);
    if (unseen > 0)
      notes.push(
        `${c}: ${unseen} change(s) were still not visible ${UNSEEN_AFTER_MS / 1000} s after their phase ended; they count as infinitely late (∞) in the percentiles.`,
      );
  }
  const result: ScenarioResult = {
    id: 'propagation',
    title: '2. Propagation latency',
    setup: [
      `${p.services} ServiceInstances × ${p.podsPerService} Ready pods per backend, in 2 namespaces each; one operator (defaults) serving an etcd Registry and a Consul Registry (serviceName "{namespace}-{service}").`,
      `Per round and backend: ${p.rate} readiness flips per second for ${p.seconds} s through the pods' status subresource (Ready ↔ not Ready), then every pod is made Ready again. A pod is flipped again only once its previous change is visible, so when the operator lags behind by more than the pool of ${p.services * p.podsPerService} pods allows, changes are skipped and the achieved rate drops below ${p.rate}/s.`,
      "Visible = the key appears/disappears in an etcd watch on the prefix, or the address enters/leaves `/v1/health/service/<name>?passing=true` (blocking queries). The apiserver's share is patch → the harness's own pod watch event, which is what the operator's informer receives too; \"beyond the apiserver\" = watch event → visible, per change.",
      `etcd's limit, measured in the same round right before the operator's phase: as many keys again under another prefix, with the operator's values, on one lease, flipped at the same rate, each change one transaction guarded as the operator guards its writes (create only if absent, delete only at the revision last written), sent at its time, timed from the call to a watch on the prefix seeing it; meanwhile the apiserver is kept as busy as below. The goal stays absolute (< 100 ms); the ratio column gives the operator's p99 over this raw p99.`,
      `Consul's limit, measured in the same round right before the operator's phase: as many instances again, registered by the harness straight through the agent with the operator's own bodies (alias check on a heartbeat), flipped at the same rate, each change one agent call (PUT /v1/agent/service/register or deregister, sent at its time), timed from the call to the same \`?passing=true\` blocking query seeing it. Those instances stay registered throughout, so the agent holds the same services (${2 * p.services * p.podsPerService} instances) in both phases. Meanwhile the harness flips as many pods again, in namespaces no Registry selects and without ServiceInstances, at the same rate: the apiserver, its etcd and the operator's pod informer are as busy as in the operator's phase, and the raw limit shares the machine under the same load. Goal: the operator's p99 beyond the apiserver ≤ 2 × that raw p99.`,
      'The harness, the operator and all servers share 2 vCPU, so every latency includes some scheduling delay of a busy machine.',
    ],
    figures,
    notes,
    details: rounds,
  };
  if (profile) result.profile = profile;
  return result;
}

/**
 * Scenario 10, ZooKeeper: the backend's three promises, measured on one bed per size.
 *
 * 1. Cold sync: ServiceInstances with one static endpoint each exist before the operator starts;
 *    how fast the entries (ephemeral nodes of one session) land, compared with the raw `multi`
 *    write rate of the same server measured in the same run with the same nodes and data.
 * 2. Keepalive at steady state: with every entry in place and nothing changing, what the operator
 *    sends to ZooKeeper in a window (one session's pings, whatever the number of entries) and
 *    that it writes nothing.
 * 3. Restart: a graceful restart, then a SIGKILL and a new start, each followed by resyncs; the
 *    new operator adopts the session, so no entry node is deleted, created or rewritten.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeZooKeeperEntry } from '../../src/registry/zookeeper/codec.ts';
import { SERVICE_NODE_MARKER } from '../../src/registry/zookeeper/backend-state.ts';
import type { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import { withBed, waitFor } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { createLayout, registryEntry, staticLayout, type ExpectedEntry } from '../lib/layout.ts';
import { describeWindow, reconcileWindow, Sampler, startOperator, type BenchOperator, type ReconcileWindow } from '../lib/operator.ts';
import { summariseProfiles } from '../lib/profile.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { StatusTracker } from '../lib/status.ts';
import {
  compareSnapshots,
  harnessSession,
  mntr,
  rawZooKeeperWrite,
  removeNodes,
  snapshotNodes,
  WORDS_PER_READING,
  zooKeeperCounters,
  type NodeChanges,
  type RawNode,
} from '../lib/zookeeper.ts';

/** The base path the operator writes under. */
const BASE = '/bench';
/** Same length as BASE, so raw paths and data have the operator's sizes. */
const RAW_BASE = '/raw00';
const SESSION_TIMEOUT_S = 30;
/** The client library pings after a third of the session timeout without other traffic. */
const PING_INTERVAL_S = SESSION_TIMEOUT_S / 3;
/** The first operator's resync period: long, so the keepalive window sees no resync reads. */
const QUIET_RESYNC_S = 3600;

/** A restart and the resyncs after it. */
export interface RestartRun {
  readonly how: 'SIGTERM' | 'SIGKILL';
  /** From stopping the old operator to the new one's caches being synced. */
  readonly readySeconds: number;
  /** Reconciles the new operator did before the second snapshot (each ServiceInstance once per pass). */
  readonly reconciles: number;
  readonly passes: number;
  readonly changes: NodeChanges;
  /** Transactions of any kind the server committed meanwhile (sessions opened and closed count too). */
  readonly transactions: number;
  readonly sessionAdopted: boolean;
}

/** One run's measurements (seconds are from the operator's start unless named otherwise). */
export interface ZooKeeperRun {
  readonly entries: number;
  readonly fixtureSeconds: number;
  readonly raw: { readonly seconds: number; readonly entriesPerSecond: number; readonly transactions: number; readonly nodes: number };
  readonly cachesSyncedSeconds: number;
  readonly firstEntrySeconds: number;
  readonly allEntriesSeconds: number;
  readonly registrySideRate: number;
  readonly statusesSeconds: number;
  readonly entriesSeen: number;
  readonly statusesConverged: number;
  readonly operatorCpuSeconds: number;
  readonly peakRssMB: number;
  readonly finished: boolean;
  /** What the reconciles of the cold sync did, up to convergence. */
  readonly coldWork: ReconcileWindow;
  /** Packets the server received (four-letter-word polls included) and transactions it committed from the operator's start to convergence. */
  readonly coldCalls: { readonly requests: number; readonly transactions: number };
  readonly idle: {
    readonly seconds: number;
    /** Packets the server received from the operator (the harness's own four-letter words taken off). */
    readonly requests: number;
    readonly requestsPerMinute: number;
    /** The most pings one session can send in the window. */
    readonly pingBound: number;
    readonly registryReads: number;
    readonly transactions: number;
    readonly connections: number;
    readonly sessions: number;
    readonly keepalivesMetric: number;
  };
  readonly restarts: RestartRun[];
}

function caseName(n: number): string {
  return `static endpoints, ${n >= 1000 ? `${n / 1000}k` : n}`;
}

function entryPath(base: string, e: ExpectedEntry): string {
  return `${base}/${e.namespace}/${e.service}/${e.address}:${e.port}`;
}

/** The nodes the operator ends up with, in creation order: base, namespaces, then each service with its entry. */
function rawNodes(entries: readonly ExpectedEntry[], namespaces: readonly string[], clusterId: string): RawNode[] {
  const now = Date.now();
  const nodes: RawNode[] = [{ path: RAW_BASE, data: Buffer.alloc(0), mode: 'persistent' }];
  for (const ns of namespaces) nodes.push({ path: `${RAW_BASE}/${ns}`, data: Buffer.alloc(0), mode: 'persistent' });
  for (const e of entries) {
    nodes.push({ path: `${RAW_BASE}/${e.namespace}/${e.service}`, data: SERVICE_NODE_MARKER, mode: 'persistent' });
    const value = encodeZooKeeperEntry('curator', registryEntry(e, clusterId), now).value;
    nodes.push({ path: entryPath(RAW_BASE, e), data: Buffer.from(value), mode: 'ephemeral' });
  }
  return nodes;
}

async function reconciles(op: BenchOperator): Promise<number> {
  return (await op.reconcileTotals()).reconciles;
}

async function queueEmpty(op: BenchOperator): Promise<boolean> {
  try {
    return (await op.metric('kube_registrar_workqueue_depth')) === 0;
  } catch {
    return false;
  }
}

async function runOnce(ctx: ScenarioContext, n: number, run: number, profileDir: string | undefined): Promise<ZooKeeperRun> {
  const o = ctx.options;
  const z = o.zookeeper;
  const layout = staticLayout('zk', o.namespaces, n);
  const logDir = (what: string): string => join(ctx.runDir, `zookeeper-${n}-r${run}-${what}`);
  return withBed(ctx.log, async ({ bed, kube }) => {
    ctx.onVersions(bed.versions);
    const zk = bed.zookeeper;
    await kube.createRegistry('bench', {
      type: 'zookeeper',
      default: true,
      namespaceSelector: { matchLabels: { bench: 'zk' } },
      namespace: '{namespace}',
      zookeeper: { servers: zk.connectString, basePath: BASE, format: 'curator', sessionTimeoutSeconds: SESSION_TIMEOUT_S },
    });
    const fixtureSeconds = await createLayout(kube, layout, { bench: 'zk' });
    ctx.log(`zookeeper ${caseName(n)} run ${run}: ${n} ServiceInstances created in ${fixtureSeconds.toFixed(1)} s`);

    // The raw limit, right before the operator runs, on the same server with the same nodes and data.
    let harness: ZooKeeperSession | undefined = await harnessSession(zk.connectString);
    const nodes = rawNodes(layout.entries, layout.namespaces, randomUUID());
    const raw = await rawZooKeeperWrite(harness, nodes);
    await removeNodes(harness, nodes.map((x) => x.path).reverse());
    await harness.close();
    harness = undefined;
    const rawRate = n / raw.seconds;
    ctx.log(
      `  raw multi: ${raw.nodes} nodes (${n} entries with their service nodes) in ${raw.transactions} txns, ${raw.seconds.toFixed(2)} s = ${rawRate.toFixed(0)} entries/s`,
    );

    const paths = layout.entries.map((e) => entryPath(BASE, e));
    const coldBefore = await zooKeeperCounters(zk.port);
    const statuses = await StatusTracker.start(kube, layout.expectedPerSi);
    let op = await startOperator({
      runFlags: o.operatorFlags,
      flags: [`--resync-period=${QUIET_RESYNC_S}`],
      kubeconfig: bed.kubeconfig,
      logDir: logDir('cold'),
      nodeFlags: ctx.nodeFlags(profileDir),
    });
    const sampler = new Sampler(op, 1000, false);
    const restarts: RestartRun[] = [];
    try {
      // Generous: a run that does not finish still yields its rate so far, marked as partial.
      const timeoutMs = 180_000 + n * 150;
      await op.waitReady(timeoutMs);
      // Only to know when to look: the times come from the nodes' ctime (the server's commit clock).
      const finished = await waitFor(
        async () => ((await mntr(zk.port)).get('zk_ephemerals_count') ?? 0) >= n && !Number.isNaN(statuses.convergedAt),
        timeoutMs,
        250,
      );
      const usage = await op.sample();
      const coldAfter = await zooKeeperCounters(zk.port);
      await sampler.stop();
      statuses.stop();
      // Polling readings sent four-letter words too; they are a few hundred at most, so per entry they hardly count.
      const coldCalls = {
        requests: coldAfter.packetsReceived - coldBefore.packetsReceived,
        transactions: coldAfter.zxid - coldBefore.zxid,
      };
      const none = {
        reconciles: 0,
        reconcileSeconds: 0,
        waits: 0,
        waitSeconds: 0,
        reads: 0,
        readSeconds: 0,
        applies: 0,
        applySeconds: 0,
        reconcilesWithin100ms: 0,
        appliesWithin100ms: 0,
      };
      const coldWork = reconcileWindow(none, await op.reconcileTotals());

      harness = await harnessSession(zk.connectString);
      const cold = await snapshotNodes(harness, paths);
      const ctimes = [...cold.values()].map((s) => s.ctime);
      // performance.now() to the epoch, as the ctime is.
      const wall = (t: number): number => performance.timeOrigin + t;
      const fromStart = (epochMs: number): number => (epochMs - wall(op.startedAt)) / 1000;
      const firstAt = Math.min(...ctimes);
      const lastAt = Math.max(...ctimes);
      const registrySideSeconds = (lastAt - wall(op.readyAt)) / 1000;
      const cachesSyncedSeconds = (op.readyAt - op.startedAt) / 1000;
      const firstEntrySeconds = fromStart(firstAt);
      const allEntriesSeconds = cold.size === n ? fromStart(lastAt) : Number.NaN;
      const statusesSeconds = (statuses.convergedAt - op.startedAt) / 1000;
      const peakRssMB = Math.max(usage.rssMiB, ...sampler.samples.map((x) => x.rssMiB)) * 1.048576;
      ctx.log(
        `  operator: caches ${cachesSyncedSeconds.toFixed(1)} s, first entry ${firstEntrySeconds.toFixed(1)} s, all ${cold.size}/${n} ${allEntriesSeconds.toFixed(1)} s ` +
          `(${(cold.size / registrySideSeconds).toFixed(0)} entries/s registry-side), statuses ${statuses.converged}/${statuses.total} ${statusesSeconds.toFixed(1)} s, CPU ${usage.cpuSeconds.toFixed(1)} s`,
      );
      ctx.log(
        `  cold sync work: ${describeWindow(coldWork)}; ZooKeeper: ${coldCalls.requests} packets received, ${coldCalls.transactions} transactions (${(coldCalls.transactions / n).toFixed(2)} per entry)`,
      );

      // Keepalive: nothing changes, no resync; the harness holds no session, so what arrives is the operator's.
      await waitFor(() => queueEmpty(op), 300_000, 1000);
      await harness.close();
      harness = undefined;
      await sleep(5000);
      const apiBefore = await op.reconcileTotals();
      const before = await zooKeeperCounters(zk.port);
      const idleFrom = performance.now();
      await sleep(z.windowSeconds * 1000);
      const after = await zooKeeperCounters(zk.port);
      const idleSeconds = (performance.now() - idleFrom) / 1000;
      const apiAfter = await op.reconcileTotals();
      const requests = after.packetsReceived - before.packetsReceived - WORDS_PER_READING;
      const keepalivesMetric = await op.metric('kube_registrar_registry_keepalives');
      const idle = {
        seconds: idleSeconds,
        requests,
        requestsPerMinute: (requests / idleSeconds) * 60,
        pingBound: Math.floor(idleSeconds / PING_INTERVAL_S) + 1,
        registryReads: apiAfter.reads - apiBefore.reads,
        transactions: after.zxid - before.zxid,
        // The reading's own connection is one of them.
        connections: after.connections - 1,
        sessions: new Set([...cold.values()].map((s) => s.ephemeralOwner)).size,
        keepalivesMetric,
      };
      ctx.log(
        `  idle ${idleSeconds.toFixed(0)} s: ${requests} requests from the operator (${idle.requestsPerMinute.toFixed(1)}/min; one session pings at most ${idle.pingBound} times), ` +
          `${idle.registryReads} registry reads, ${idle.transactions} transactions; ${idle.connections} connection(s), entries on ${idle.sessions} session(s), keepalives metric ${keepalivesMetric}`,
      );

      // Restarts, each followed by resyncs; the nodes' Stats before and after say what was written.
      for (const how of ['SIGTERM', 'SIGKILL'] as const) {
        harness = await harnessSession(zk.connectString);
        const snapBefore = await snapshotNodes(harness, paths);
        const zxidBefore = (await zooKeeperCounters(zk.port)).zxid;
        const stoppedAt = performance.now();
        if (how === 'SIGTERM') await op.stop();
        else await op.process.kill();
        op = await startOperator({
          runFlags: o.operatorFlags,
          flags: [`--resync-period=${z.resyncSeconds}`],
          kubeconfig: bed.kubeconfig,
          logDir: logDir(how.toLowerCase()),
        });
        await op.waitReady(timeoutMs);
        const readySeconds = (op.readyAt - stoppedAt) / 1000;
        // A few resyncs: the first pass after the start, then `resyncPasses` more.
        const want = n * (1 + z.resyncPasses);
        await waitFor(async () => (await reconciles(op)) >= want, (z.resyncSeconds * (z.resyncPasses + 2) + 120) * 1000, 1000);
        await waitFor(() => queueEmpty(op), 120_000, 1000);
        // Past the session timeout since the old operator left: had the session not been adopted, its nodes would be gone.
        const settle = stoppedAt + (SESSION_TIMEOUT_S + 5) * 1000 - performance.now();
        if (settle > 0) await sleep(settle);
        const done = await reconciles(op);
        const snapAfter = await snapshotNodes(harness, paths);
        const zxidAfter = (await zooKeeperCounters(zk.port)).zxid;
        await harness.close();
        harness = undefined;
        const changes = compareSnapshots(snapBefore, snapAfter);
        const r: RestartRun = {
          how,
          readySeconds,
          reconciles: done,
          passes: done / n,
          changes,
          transactions: zxidAfter - zxidBefore,
          sessionAdopted: changes.ownerChanged === 0 && changes.sessionsAfter === 1,
        };
        restarts.push(r);
        ctx.log(
          `  ${how} + start: ready ${readySeconds.toFixed(1)} s after the stop, ${done} reconciles (${r.passes.toFixed(1)} passes); entry nodes deleted ${changes.deleted}, created ${changes.created}, rewritten ${changes.rewritten}, ` +
            `owner changed ${changes.ownerChanged} (${changes.sessionsAfter} session(s) after); ${r.transactions} transactions in all`,
        );
      }

      return {
        entries: n,
        fixtureSeconds,
        raw: { seconds: raw.seconds, entriesPerSecond: rawRate, transactions: raw.transactions, nodes: raw.nodes },
        cachesSyncedSeconds,
        firstEntrySeconds,
        allEntriesSeconds,
        // Unfinished: the rate of what did land, up to the last entry (a partial figure).
        registrySideRate: cold.size / registrySideSeconds,
        statusesSeconds,
        entriesSeen: cold.size,
        statusesConverged: statuses.converged,
        operatorCpuSeconds: usage.cpuSeconds,
        peakRssMB,
        finished,
        coldWork,
        coldCalls,
        idle,
        restarts,
      };
    } finally {
      await sampler.stop();
      statuses.stop();
      await harness?.close();
      await op.stop();
    }
  });
}

/** Runs scenario 10 for every size. */
export async function zookeeperScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const o = ctx.options;
  const z = o.zookeeper;
  const figures: Figure[] = [];
  const notes: string[] = [];
  const details: unknown[] = [];
  let profile: string | undefined;
  for (const n of z.sizes) {
    const runs: ZooKeeperRun[] = [];
    for (let r = 1; r <= o.repeats; r++) {
      const profileDir =
        o.profile && r === o.repeats && n === Math.max(...z.sizes) ? join(ctx.runDir, `profile-zookeeper-${n}`) : undefined;
      runs.push(await runOnce(ctx, n, r, profileDir));
      if (profileDir) profile = `ZooKeeper cold sync, ${caseName(n)}:\n${await summariseProfiles(profileDir)}`;
    }
    const c = caseName(n);
    details.push({ case: c, runs });
    for (const r of runs.filter((x) => !x.finished)) {
      notes.push(
        `${c}: a run did not finish within its time limit (${(180 + r.entries * 0.15).toFixed(0)} s): ${r.entriesSeen}/${r.entries} entries in ZooKeeper, ${r.statusesConverged}/${r.entries} statuses converged; its registry-side rate is that of the entries that did land.`,
      );
    }
    const restart = (how: 'SIGTERM' | 'SIGKILL'): RestartRun[] => runs.map((x) => x.restarts.find((y) => y.how === how) as RestartRun);
    const written = (x: RestartRun): number => x.changes.deleted + x.changes.created + x.changes.rewritten;
    for (const how of ['SIGTERM', 'SIGKILL'] as const) {
      for (const x of restart(how).filter((y) => !y.sessionAdopted))
        notes.push(`${c}, ${how}: the new operator did not keep the session (${x.changes.ownerChanged} nodes changed owner).`);
    }
    const passes = restart('SIGTERM')
      .concat(restart('SIGKILL'))
      .map((x) => x.passes.toFixed(1));
    figures.push(
      { case: c, name: 'caches synced (from start)', unit: 's', runs: runs.map((x) => x.cachesSyncedSeconds) },
      { case: c, name: 'every entry in ZooKeeper (from start)', unit: 's', runs: runs.map((x) => x.allEntriesSeconds) },
      {
        case: c,
        name: 'registry-side write rate (caches synced → last entry)',
        unit: 'entries/s',
        runs: runs.map((x) => x.registrySideRate),
        limit: { name: 'raw multi, 1000-op txns, 1 in flight', unit: 'entries/s', runs: runs.map((x) => x.raw.entriesPerSecond) },
        goal: { kind: 'ratio-at-least', threshold: 0.5, text: "≥ 0.5 × raw (scenario 1's goal)" },
      },
      { case: c, name: 'every status converged (from start)', unit: 's', runs: runs.map((x) => x.statusesSeconds) },
      {
        case: c,
        name: 'ZooKeeper transactions per entry until converged (zxid delta ÷ N)',
        unit: '',
        runs: runs.map((x) => x.coldCalls.transactions / x.entries),
        limit: { name: 'raw', unit: '', runs: runs.map((x) => x.raw.transactions / x.entries) },
      },
      { case: c, name: 'operator CPU time until converged', unit: 'CPU s', runs: runs.map((x) => x.operatorCpuSeconds) },
      { case: c, name: 'operator peak RSS', unit: 'MB', runs: runs.map((x) => x.peakRssMB) },
      {
        case: c,
        name: `idle: requests the operator sends, ÷ the most one session's pings can be (⌊window ÷ ${PING_INTERVAL_S} s⌋ + 1)`,
        unit: '',
        runs: runs.map((x) => x.idle.requests / x.idle.pingBound),
        goal: { kind: 'at-most', threshold: 1, text: '≤ 1 (pings only, whatever the entry count)' },
      },
      { case: c, name: 'idle: requests the operator sends', unit: '/min', runs: runs.map((x) => x.idle.requestsPerMinute) },
      {
        case: c,
        name: 'idle: ZooKeeper sessions holding the entries',
        unit: '',
        runs: runs.map((x) => x.idle.sessions),
        goal: { kind: 'at-most', threshold: 1, text: '1' },
      },
      {
        case: c,
        name: 'idle: connections the operator holds to ZooKeeper',
        unit: '',
        runs: runs.map((x) => x.idle.connections),
        goal: { kind: 'at-most', threshold: 1, text: '1' },
      },
      {
        case: c,
        name: 'idle: ZooKeeper transactions (node or session writes)',
        unit: '',
        runs: runs.map((x) => x.idle.transactions),
        goal: { kind: 'zero', threshold: 0, text: 'none' },
      },
      {
        case: c,
        name: 'graceful restart (SIGTERM) + resyncs: entry nodes deleted, created or rewritten',
        unit: '',
        runs: restart('SIGTERM').map(written),
        goal: { kind: 'zero', threshold: 0, text: 'none' },
      },
      {
        case: c,
        name: 'SIGKILL + start + resyncs: entry nodes deleted, created or rewritten',
        unit: '',
        runs: restart('SIGKILL').map(written),
        goal: { kind: 'zero', threshold: 0, text: 'none' },
      },
      {
        case: c,
        name: 'restarts: ZooKeeper transactions in all (SIGTERM, SIGKILL)',
        unit: '',
        runs: runs.flatMap((x) => x.restarts.map((y) => y.transactions)),
      },
    );
    notes.push(
      `${c}: reconcile passes after each restart (SIGTERM, SIGKILL per run): ${passes.join(', ')}; ready after the stop: ${restart(
        'SIGTERM',
      )
        .concat(restart('SIGKILL'))
        .map((x) => `${x.readySeconds.toFixed(1)} s`)
        .join(', ')}.`,
    );
  }
  const result: ScenarioResult = {
    id: 'zookeeper',
    title: '10. ZooKeeper: cold sync, keepalive, restarts',
    setup: [
      `N ServiceInstances with one static endpoint each over ${o.namespaces} namespaces, created before the operator starts; one ZooKeeper Registry (curator format, basePath ${BASE}, registry namespace = Kubernetes namespace, session timeout ${SESSION_TIMEOUT_S} s) on the bed's standalone ZooKeeper; operator defaults (--concurrency=8) but --resync-period=${QUIET_RESYNC_S}, so the idle window sees no resync.`,
      'Cold sync: entries are timed by their own ctime (the server clock when the transaction was prepared, read back from every node after convergence; the harness polls only `mntr` zk_ephemerals_count, every 250 ms, to know when to look), statuses by a watch on ServiceInstances. Registry-side rate = entries ÷ (newest ctime − caches synced).',
      `Raw limit, measured in the same run right before the operator starts: the nodes the operator ends up with (base and namespace nodes, each service node with its marker, each entry with the operator's own curator data) created straight through ZooKeeperSession.multi in 1000-op transactions, one in flight, then removed; its rate counts entries (each entry also needs its service node, here as in the operator).`,
      `Idle: after convergence and an empty work queue, ${o.zookeeper.windowSeconds} s with nothing to do and no harness session open; requests = the server's zk_packets_received delta minus the harness's own four-letter words; transactions = the zxid delta (srvr), which moves with every node or session write; connections = zk_num_alive_connections minus the reading's own; sessions = distinct ephemeralOwner of the entry nodes. The client pings after ${PING_INTERVAL_S} s (a third of the session timeout) of quiet, so one session sends at most ⌊window ÷ ${PING_INTERVAL_S} s⌋ + 1 pings.`,
      `Restarts: SIGTERM of the operator and a new start, then SIGKILL and a new start, each new operator with --resync-period=${o.zookeeper.resyncSeconds}, watched for ${o.zookeeper.resyncPasses} resync passes after its first (reconciles ≥ ${1 + o.zookeeper.resyncPasses} × N) and at least ${SESSION_TIMEOUT_S + 5} s after the stop (past the session timeout). Every entry node's Stat before and after: a changed czxid is a delete and create, a changed mzxid a rewrite, a changed ephemeralOwner a new session. The transactions in all include the new operator's probe session (opened and closed: 2).`,
      'A fresh bed for every run.',
    ],
    figures,
    notes,
    details,
  };
  if (profile) result.profile = profile;
  return result;
}

/**
 * Scenario 12, Consul agent capacity: how many instances one agent holds while a registration
 * still answers within 1 s at p99. The agent is filled step by step with the operator's own bodies
 * (one heartbeat per registry namespace, passed at the operator's interval, and instances with an
 * alias check on it); at each step a paced stream of updates (each instance registered again with a
 * changed tag, as the operator does when an endpoint changes) is timed call by call. A raw
 * measurement of the agent: no operator runs, so there is no ratio to take.
 */
import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceRegistration } from '../../src/registry/consul/client.ts';
import { heartbeatCheckId, heartbeatRegistration, heartbeatServiceId, instanceRegistration } from '../../src/registry/consul/codec.ts';
import { DEFAULT_MAX_CONCURRENT_CALLS } from '../../src/registry/consul/consul-registry.ts';
import { waitFor, withBed } from '../lib/bed.ts';
import { agentPassCheck, agentRegister, CatalogWatch, findConsulAgentPid } from '../lib/consul.ts';
import type { ScenarioContext } from '../lib/context.ts';
import { podLayout, registryEntry, type ExpectedEntry } from '../lib/layout.ts';
import { readMemoryComposition } from '../lib/memory.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { distribution, mapBounded, type Distribution } from '../lib/stats.ts';

/** The capacity criterion: registration p99 below this. */
const P99_LIMIT_MS = 1000;
/** A step whose p99 is over this is far enough past the ceiling that climbing further only costs time. */
const STOP_ABOVE_MS = 2000;
/** Instances per Consul service name, as a Deployment's pods behind one ServiceInstance. */
const PODS_PER_SERVICE = 10;
/** Heartbeat TTL: long, so that a stalled harness cannot let instances go critical and be reaped mid-run. */
const HEARTBEAT_TTL_SECONDS = 600;
/** The operator passes its heartbeats every TTL / 3; at the default 30-s TTL, every 10 s. */
const PASS_EVERY_MS = 10_000;
/** Open-loop updates, but never more in flight than this (the agent refuses > 200 connections per client). */
const MAX_IN_FLIGHT = 64;

/** One step of the ladder. */
export interface CapacityStep {
  readonly instances: number;
  /** Registrations per second while the agent was filled from the previous step to this one. */
  readonly fillPerSecond: number;
  readonly updates: number;
  readonly achievedRate: number;
  readonly failed: number;
  /** Latency of each update call, send → acknowledged, in ms. */
  readonly latency: Distribution;
  readonly agentRssMB: number;
}

/** One run: the steps climbed and the capacity they show. */
export interface CapacityRun {
  readonly steps: CapacityStep[];
  /** Largest step with p99 < 1 s below the first step over it; 0 when none. */
  readonly ceiling: number;
  /** Where and why climbing stopped before the top of the ladder: a p99 over 2 s, or a fill that failed. */
  readonly stopped: { readonly at: number; readonly why: string } | undefined;
  readonly heartbeatPassFailures: number;
}

/** The operator's heartbeat loop, stand-in: passes every check on a fixed interval until stopped. */
function passHeartbeats(addr: string, checkIds: readonly string[]): { failures: () => number; stop: () => Promise<void> } {
  const abort = new AbortController();
  let failures = 0;
  const loop = (async () => {
    while (!abort.signal.aborted) {
      await sleep(PASS_EVERY_MS, undefined, { signal: abort.signal }).catch(() => undefined);
      if (abort.signal.aborted) break;
      await Promise.all(checkIds.map((id) => agentPassCheck(addr, id).catch(() => failures++)));
    }
  })();
  return {
    failures: () => failures,
    stop: async () => {
      abort.abort();
      await loop;
    },
  };
}

/** Sends `bodies` at `rate` per second, each at its time without waiting for the others; times every call. */
async function pacedUpdates(
  addr: string,
  bodies: readonly ServiceRegistration[],
  rate: number,
): Promise<{ latencies: number[]; achievedRate: number; failed: number }> {
  const latencies: number[] = [];
  const inFlight = new Set<Promise<void>>();
  let failed = 0;
  const started = performance.now();
  for (const [i, body] of bodies.entries()) {
    const wait = started + (i * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    const sentAt = performance.now();
    const p = agentRegister(addr, body).then(
      () => void latencies.push(performance.now() - sentAt),
      () => void failed++,
    );
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    if (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
  }
  const achievedRate = bodies.length / ((performance.now() - started) / 1000);
  await Promise.all(inFlight);
  return { latencies, achievedRate, failed };
}

async function runOnce(ctx: ScenarioContext, run: number): Promise<CapacityRun> {
  const { sizes, updates, rate } = ctx.options.consulCapacity;
  const top = Math.max(...sizes);
  const layout = podLayout('capac', ctx.options.namespaces, Math.ceil(top / PODS_PER_SERVICE), PODS_PER_SERVICE);
  const clusterId = randomUUID();
  const heartbeatIds = new Map(layout.namespaces.map((ns) => [ns, heartbeatServiceId(clusterId, ns)]));
  // The operator's body for an entry whose endpoint carries the tag `rev`; a new rev is an update.
  const body = (e: ExpectedEntry, rev: string): ServiceRegistration => {
    const entry = registryEntry(e, clusterId);
    return instanceRegistration(
      { ...entry, endpoint: { ...entry.endpoint, tags: { rev } } },
      {
        clusterId,
        name: `${e.namespace}-${e.service}`,
        heartbeatServiceId: heartbeatIds.get(e.namespace) ?? '',
        deregisterAfterSeconds: 90,
      },
    );
  };
  return withBed(ctx.log, async ({ bed }) => {
    ctx.onVersions(bed.versions);
    const addr = bed.consulAddr;
    const pid = await findConsulAgentPid(basename(bed.dir));
    for (const [ns, id] of heartbeatIds) {
      const hb = heartbeatRegistration({
        clusterId,
        registryNamespace: ns,
        name: `${ns}-kube-registrar-heartbeat`,
        ttlSeconds: HEARTBEAT_TTL_SECONDS,
        deregisterAfterSeconds: HEARTBEAT_TTL_SECONDS + 120,
      });
      await agentRegister(addr, hb);
      await agentPassCheck(addr, heartbeatCheckId(id));
    }
    const heartbeats = passHeartbeats(addr, [...heartbeatIds.values()].map(heartbeatCheckId));
    const steps: CapacityStep[] = [];
    let stopped: CapacityRun['stopped'];
    try {
      let filled = 0;
      for (const n of [...sizes].sort((a, b) => a - b)) {
        const batch = layout.entries.slice(filled, n);
        const names = new Set(layout.entries.slice(0, n).map((e) => `${e.namespace}-${e.service}`));
        const fillStarted = performance.now();
        // An agent that cannot even be filled to this step is past its capacity: the steps measured so far still count.
        const fillError = await mapBounded(batch, DEFAULT_MAX_CONCURRENT_CALLS, (e) => agentRegister(addr, body(e, '0'))).then(
          () => undefined,
          (err: unknown) => (err instanceof Error ? err.message : String(err)),
        );
        if (fillError !== undefined) {
          stopped = { at: n, why: `filling the agent failed: ${fillError}` };
          break;
        }
        const fillPerSecond = batch.length / ((performance.now() - fillStarted) / 1000);
        filled = n;
        // Measure only once the agent's sync has carried the fill into its catalog. Watched only now,
        // so that its reads do not slow the fill; its first answer lists what is already there.
        const catalog = new CatalogWatch(addr, (name) => names.has(name));
        const synced = await waitFor(() => catalog.appeared.size === names.size, 120_000, 100);
        await catalog.stop();
        if (!synced) {
          stopped = { at: n, why: `${names.size - catalog.appeared.size} service names were not in the catalog 2 min after the fill` };
          break;
        }
        // A shuffled order of the step's instances, cycled through when there are fewer than updates.
        const order = layout.entries.slice(0, n).sort(() => Math.random() - 0.5);
        const bodies = Array.from({ length: updates }, (_, i) => body(order[i % n] as ExpectedEntry, `${n}-${i}`));
        await sleep(2000);
        const u = await pacedUpdates(addr, bodies, rate);
        const agentRssMB = pid === undefined ? Number.NaN : (await readMemoryComposition(pid)).rssMB;
        const step: CapacityStep = {
          instances: n,
          fillPerSecond,
          updates,
          achievedRate: u.achievedRate,
          failed: u.failed,
          latency: distribution([...u.latencies, ...Array<number>(u.failed).fill(Number.POSITIVE_INFINITY)]),
          agentRssMB,
        };
        steps.push(step);
        ctx.log(
          `consul-capacity run ${run}, ${n} instances: filled at ${fillPerSecond.toFixed(0)}/s; ${updates} updates at ${u.achievedRate.toFixed(1)}/s, p50/p99/max ${step.latency.p50.toFixed(0)}/${step.latency.p99.toFixed(0)}/${step.latency.max.toFixed(0)} ms, ${u.failed} failed; agent RSS ${agentRssMB.toFixed(0)} MB`,
        );
        if (step.latency.p99 > STOP_ABOVE_MS) {
          stopped = { at: n, why: `its p99 was over ${STOP_ABOVE_MS / 1000} s` };
          break;
        }
      }
    } finally {
      await heartbeats.stop();
    }
    // The step before the first one over 1 s: a larger step that happened to pass again is noise, not capacity.
    const firstOver = steps.findIndex((s) => !(s.latency.p99 < P99_LIMIT_MS));
    const ceiling = (firstOver === -1 ? steps.at(-1) : steps[firstOver - 1])?.instances ?? 0;
    return { steps, ceiling, stopped, heartbeatPassFailures: heartbeats.failures() };
  });
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Runs scenario 12: one fresh bed per run, the whole ladder on each. */
export async function consulCapacity(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { sizes, updates, rate } = ctx.options.consulCapacity;
  const runs: CapacityRun[] = [];
  for (let r = 1; r <= ctx.options.repeats; r++) runs.push(await runOnce(ctx, r));
  const figures: Figure[] = [];
  const reached = [...new Set(runs.flatMap((x) => x.steps.map((s) => s.instances)))].sort((a, b) => a - b);
  for (const n of reached) {
    const at = (pick: (s: CapacityStep) => number): number[] =>
      runs.map((x) => {
        const s = x.steps.find((y) => y.instances === n);
        return s ? pick(s) : Number.NaN;
      });
    const c = `${count(n)} instances`;
    figures.push(
      { case: c, name: 'registration call p50', unit: 'ms', runs: at((s) => s.latency.p50) },
      { case: c, name: 'registration call p99 (capacity criterion: < 1 s)', unit: 'ms', runs: at((s) => s.latency.p99) },
      { case: c, name: 'fill rate, previous step → this one', unit: 'instances/s', runs: at((s) => s.fillPerSecond) },
      { case: c, name: 'agent RSS', unit: 'MB', runs: at((s) => s.agentRssMB) },
    );
  }
  // No goal: neither the issue nor the operator sets how much one agent must hold; this is the
  // agent's own capacity, to size deployments by.
  figures.push({
    case: 'one agent',
    name: 'largest instance count with registration p99 < 1 s',
    unit: 'instances',
    runs: runs.map((x) => x.ceiling),
  });
  const notes: string[] = [];
  for (const [i, x] of runs.entries()) {
    const where = `run ${i + 1}`;
    if (x.stopped !== undefined) notes.push(`${where}: climbing stopped at ${count(x.stopped.at)} instances: ${x.stopped.why}.`);
    else if (x.ceiling === Math.max(...sizes))
      notes.push(`${where}: every step stayed under 1 s; the ceiling lies above the largest step tried (${count(x.ceiling)}).`);
    if (x.ceiling === 0) notes.push(`${where}: no step kept its p99 under 1 s.`);
    const failed = x.steps.reduce((sum, s) => sum + s.failed, 0);
    if (failed > 0) notes.push(`${where}: ${failed} update call(s) failed; they count as infinitely late.`);
    if (x.heartbeatPassFailures > 0) notes.push(`${where}: ${x.heartbeatPassFailures} heartbeat pass(es) failed.`);
    if (x.steps.some((s) => Number.isNaN(s.agentRssMB))) notes.push(`${where}: the agent's process was not found; RSS not measured.`);
  }
  notes.push(
    'Past the ceiling, spread instances over several agents: one Registry per agent (each with its own consul.address), each choosing its namespaces by namespaceSelector, so that no agent holds more than the ceiling.',
  );
  return {
    id: 'consul-capacity',
    title: '12. Consul agent capacity',
    setup: [
      `One bed per run; its Consul dev agent (also the server, so its figures include the catalog's work a production client agent hands to remote servers) is filled step by step to ${sizes.map(count).join(' / ')} instances, ${PODS_PER_SERVICE} per service name, over ${ctx.options.namespaces} registry namespaces.`,
      `Bodies are the operator's own (src/registry/consul/codec.ts): per namespace one heartbeat with a TTL check (${HEARTBEAT_TTL_SECONDS} s, so nothing can expire in a stall) passed every ${PASS_EVERY_MS / 1000} s as the operator does at its default 30-s TTL, and instances with an alias check on it; PUT /v1/agent/service/register?replace-existing-checks=true, ${DEFAULT_MAX_CONCURRENT_CALLS} in flight for the fill.`,
      `At each step, once every service name is in the catalog: ${updates} updates (an instance registered again with a changed tag) sent at ${rate}/s open-loop (at most ${MAX_IN_FLIGHT} in flight), each timed from send to the agent's answer; then the agent's RSS from /proc.`,
      `Climbing stops after a step whose p99 is over ${STOP_ABOVE_MS / 1000} s. The ceiling is the largest step with p99 < 1 s before the first step over it. A raw measurement of the agent: no operator runs, so no figure has a same-run limit or ratio.`,
    ],
    figures,
    notes,
    details: runs,
  };
}

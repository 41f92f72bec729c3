/**
 * Scenario client-slow-backend, Linkerd's load-balancer experiment on loopback: ten HTTP backends
 * with the same latency, one of which turns slow (2 s) for a while. For each strategy, an
 * open-loop load generator calls the service through `DiscoveryClient.call()` with a 1 s timeout
 * and no retry, and the scenario reports what the callers saw while one backend was slow: p99
 * latency (a timed-out call counts as the timeout), the share of calls that succeeded within the
 * timeout, and the share sent to the slow backend. The limit is the p99 of calls answered by the
 * healthy backends in the same run: what a perfect balancer would give.
 *
 * Outlier ejection and the per-instance circuit breakers are off for the three strategies Linkerd
 * compared, so the figures are the balancers' alone; a fourth case shows round robin with the
 * client's defaults for both. No registry is involved (a static source): this measures selection,
 * not discovery.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { DiscoveryClient, staticSource, type Instance, type Strategy } from '../../packages/discovery/src/index.ts';
import type { ScenarioContext } from '../lib/context.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { percentile } from '../lib/stats.ts';
import type { SlowBackendCommand, SlowBackendSettings } from '../lib/slow-backends.ts';

const BACKENDS = 10;
const SLOW_MS = 2000;
const TIMEOUT_MS = 1000;
/** The backend that turns slow. */
const SLOW = 3;

interface Case {
  readonly name: string;
  readonly strategy: Strategy;
  /** The client's defaults for outlier ejection and per-instance breakers, or neither. */
  readonly defaults: boolean;
}

const CASES: readonly Case[] = [
  { name: 'round robin', strategy: 'round-robin', defaults: false },
  { name: 'least connections', strategy: 'least-connections', defaults: false },
  { name: 'P2C peak-EWMA', strategy: 'p2c-peak-ewma', defaults: false },
  { name: 'round robin + breakers + ejection', strategy: 'round-robin', defaults: true },
];

/** One call as the caller saw it. */
interface Sample {
  readonly phase: 'before' | 'slow' | 'after';
  readonly ms: number;
  readonly ok: boolean;
  /** The backend that answered or was tried. */
  readonly backend: number;
}

/** What one case measured in one run. */
export interface SlowBackendRun {
  readonly case: string;
  readonly calls: number;
  readonly p99Ms: number;
  readonly healthyP99Ms: number;
  readonly p50Ms: number;
  readonly successPercent: number;
  readonly slowSharePercent: number;
}

class Backends {
  readonly #child: ChildProcess;
  readonly ports: Promise<number[]>;

  constructor(settings: SlowBackendSettings) {
    const script = fileURLToPath(new URL('../lib/slow-backends.ts', import.meta.url));
    this.#child = fork(script, [JSON.stringify(settings)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.ports = new Promise((resolve, reject) => {
      this.#child.once('message', (m: { ports: number[] }) => resolve(m.ports));
      this.#child.once('exit', (code) => reject(new Error(`slow backends exited with ${code}`)));
    });
  }

  slow(index: number | null): void {
    const command: SlowBackendCommand = { slow: index };
    this.#child.send(command);
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once('exit', resolve));
    this.#child.disconnect();
    this.#child.kill();
    await exited;
  }
}

function get(agent: Agent, port: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent, signal }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function runCase(c: Case, ports: readonly number[], backends: Backends, rate: number, phases: readonly number[]): Promise<Sample[]> {
  const instances: Instance[] = ports.map((port, i) => ({ id: String(i), address: '127.0.0.1', port }));
  const client = new DiscoveryClient({
    source: staticSource({ namespace: 'bench', services: { backend: instances } }),
    strategy: c.strategy,
    ...(c.defaults ? {} : { outlier: false as const, call: { breaker: false as const } }),
  });
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  const samples: Sample[] = [];
  const pending = new Set<Promise<void>>();
  await client.ready('backend');
  const [before = 0, slow = 0, after = 0] = phases;
  const start = performance.now();
  const slowFrom = start + before * 1000;
  const slowUntil = slowFrom + slow * 1000;
  const end = slowUntil + after * 1000;
  let slowed = false;
  let healed = false;
  for (let k = 0; ; k++) {
    const due = start + (k * 1000) / rate;
    if (due >= end) break;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const now = performance.now();
    if (!slowed && now >= slowFrom) {
      backends.slow(SLOW);
      slowed = true;
    }
    if (!healed && now >= slowUntil) {
      backends.slow(null);
      healed = true;
    }
    const phase: Sample['phase'] = now < slowFrom ? 'before' : now < slowUntil ? 'slow' : 'after';
    let backend = -1;
    const call = client
      .call(
        'backend',
        async (instance, signal) => {
          backend = Number(instance.id);
          await get(agent, instance.port, signal);
        },
        { timeoutMs: TIMEOUT_MS, attempts: 1 },
      )
      .then(
        () => samples.push({ phase, ms: performance.now() - now, ok: true, backend }),
        () => samples.push({ phase, ms: Math.min(performance.now() - now, TIMEOUT_MS), ok: false, backend }),
      )
      .then(() => void pending.delete(call));
    pending.add(call);
  }
  await Promise.all(pending);
  agent.destroy();
  await client.close();
  return samples;
}

function summarise(name: string, samples: readonly Sample[]): SlowBackendRun {
  const slow = samples.filter((s) => s.phase === 'slow');
  const healthy = slow.filter((s) => s.backend !== SLOW);
  return {
    case: name,
    calls: slow.length,
    p99Ms: percentile(
      slow.map((s) => s.ms),
      99,
    ),
    healthyP99Ms: percentile(
      healthy.map((s) => s.ms),
      99,
    ),
    p50Ms: percentile(
      slow.map((s) => s.ms),
      50,
    ),
    successPercent: (100 * slow.filter((s) => s.ok).length) / Math.max(1, slow.length),
    slowSharePercent: (100 * slow.filter((s) => s.backend === SLOW).length) / Math.max(1, slow.length),
  };
}

/** Runs the scenario. */
export async function clientSlowBackend(ctx: ScenarioContext): Promise<ScenarioResult> {
  const small = ctx.options.scale === 'small';
  const rate = small ? 100 : 200;
  const phases = small ? [3, 10, 3] : [10, 30, 10];
  const settings: SlowBackendSettings = { count: BACKENDS, baseMs: 5, jitterMs: 5, slowMs: SLOW_MS };
  const runs: SlowBackendRun[][] = [];
  const backends = new Backends(settings);
  try {
    const ports = await backends.ports;
    for (let r = 0; r < ctx.options.repeats; r++) {
      const perCase: SlowBackendRun[] = [];
      for (const c of CASES) {
        ctx.log(`client-slow-backend run ${r + 1}/${ctx.options.repeats}: ${c.name}`);
        const result = summarise(c.name, await runCase(c, ports, backends, rate, phases));
        ctx.log(
          `  p99 ${result.p99Ms.toFixed(1)} ms (healthy backends ${result.healthyP99Ms.toFixed(1)} ms), ` +
            `${result.successPercent.toFixed(2)} % within ${TIMEOUT_MS} ms, ${result.slowSharePercent.toFixed(2)} % to the slow one`,
        );
        perCase.push(result);
      }
      runs.push(perCase);
    }
  } finally {
    await backends.close();
  }
  const figures: Figure[] = [];
  for (const [i, c] of CASES.entries()) {
    const of = (pick: (r: SlowBackendRun) => number): number[] => runs.map((perCase) => pick(perCase[i]!));
    figures.push(
      {
        case: c.name,
        name: 'p99 latency while one backend is slow',
        unit: 'ms',
        runs: of((r) => r.p99Ms),
        limit: { name: "healthy backends' p99, same run", unit: 'ms', runs: of((r) => r.healthyP99Ms) },
        ...(c.strategy === 'p2c-peak-ewma' && !c.defaults
          ? { goal: { kind: 'ratio-at-most' as const, threshold: 1.5, text: "≤ 1.5 × healthy backends' p99" } }
          : {}),
      },
      { case: c.name, name: `calls answered within ${TIMEOUT_MS} ms`, unit: '%', runs: of((r) => r.successPercent) },
      { case: c.name, name: 'calls sent to the slow backend', unit: '%', runs: of((r) => r.slowSharePercent) },
    );
  }
  return {
    id: 'client-slow-backend',
    title: '8. Client: one slow backend among ten (Linkerd’s experiment)',
    setup: [
      `${BACKENDS} HTTP backends on loopback in a child process, answering in 5 ms + Exp(mean 5 ms); backend ${SLOW} answers in ${SLOW_MS} ms during the slow phase.`,
      `Open-loop load of ${rate} calls/s through DiscoveryClient.call() (timeout ${TIMEOUT_MS} ms, one attempt, keep-alive connections) for ${phases[0]} s before, ${phases[1]} s during and ${phases[2]} s after the slow phase; figures are over the calls started during it.`,
      'Outlier ejection and per-instance breakers off except in the last case (defaults: breaker opens after 3 consecutive failures for 5 s; ejection after 5, for 30 s).',
    ],
    figures,
    notes: [],
    details: runs,
  };
}

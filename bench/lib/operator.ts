/**
 * The operator as a separate process, started the way the image starts it (`node dist/main.js`, compiled by compileOperator), so
 * that its CPU time and RSS can be read from /proc and its queue depth from /metrics without the
 * harness's own work mixing in.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freePort, ManagedProcess } from '../../testbed/processes.ts';
import { REPO_ROOT } from '../../testbed/provision.ts';
import { RUNTIME_ENV, RUNTIME_NODE_FLAGS } from '../../src/runtime-settings.ts';

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every Linux the bed runs on). */
const CLOCK_TICKS = 100;

/** Options of {@link startOperator}. */
export interface OperatorOptions {
  readonly kubeconfig: string;
  /** Extra operator flags, e.g. `--resync-period=60` (the run's `--operator-flags` come first). */
  readonly flags?: readonly string[];
  /** The run's `--operator-flags`. */
  readonly runFlags: readonly string[];
  /** Node flags before the script, e.g. `--cpu-prof`. */
  readonly nodeFlags?: readonly string[];
  /** Where the log goes; a temporary directory when absent. */
  readonly logDir?: string;
}

/** CPU time and memory of a process at one moment. */
export interface ProcSample {
  /** performance.now() of the sample. */
  readonly at: number;
  /** User + system CPU seconds since the process started. */
  readonly cpuSeconds: number;
  /** Resident set size in MiB. */
  readonly rssMiB: number;
}

/** Totals of the operator's reconcile, queue-wait and registry-call histograms. */
export interface ReconcileTotals {
  readonly reconciles: number;
  readonly reconcileSeconds: number;
  readonly waits: number;
  readonly waitSeconds: number;
  /** Registry reads (`records`) and change batches (`apply`), all backends. */
  readonly reads: number;
  readonly readSeconds: number;
  readonly applies: number;
  readonly applySeconds: number;
  /** Of those, how many took 100 ms or less (the histograms' 0.1 s bucket). */
  readonly reconcilesWithin100ms: number;
  readonly appliesWithin100ms: number;
}

/** What the operator did in a window: reconciles, their mean duration and queue wait, and the registry calls in them (ms). */
export interface ReconcileWindow {
  readonly reconciles: number;
  readonly meanReconcileMs: number;
  readonly meanQueueWaitMs: number;
  readonly readsPerReconcile: number;
  readonly meanReadMs: number;
  readonly appliesPerReconcile: number;
  readonly meanApplyMs: number;
  /** Shares (0–1) of the reconciles and of the registry writes that took longer than 100 ms. */
  readonly reconcilesOver100ms: number;
  readonly appliesOver100ms: number;
}

/** One line for logs: what the reconciles of a window did. */
export function describeWindow(w: ReconcileWindow): string {
  return `${w.reconciles} reconciles of ${w.meanReconcileMs.toFixed(0)} ms (+${w.meanQueueWaitMs.toFixed(0)} ms queued), each ${w.readsPerReconcile.toFixed(1)} registry reads of ${w.meanReadMs.toFixed(0)} ms and ${w.appliesPerReconcile.toFixed(2)} writes of ${w.meanApplyMs.toFixed(0)} ms; over 100 ms: ${(100 * w.reconcilesOver100ms).toFixed(1)} % of reconciles, ${(100 * w.appliesOver100ms).toFixed(1)} % of writes`;
}

/** The difference of two {@link ReconcileTotals} readings. */
export function reconcileWindow(a: ReconcileTotals, b: ReconcileTotals): ReconcileWindow {
  const per = (x: number, n: number): number => (n > 0 ? x / n : Number.NaN);
  const n = b.reconciles - a.reconciles;
  const reads = b.reads - a.reads;
  const applies = b.applies - a.applies;
  return {
    reconciles: n,
    meanReconcileMs: per(b.reconcileSeconds - a.reconcileSeconds, n) * 1000,
    meanQueueWaitMs: per(b.waitSeconds - a.waitSeconds, b.waits - a.waits) * 1000,
    readsPerReconcile: per(reads, n),
    meanReadMs: per(b.readSeconds - a.readSeconds, reads) * 1000,
    appliesPerReconcile: per(applies, n),
    meanApplyMs: per(b.applySeconds - a.applySeconds, applies) * 1000,
    reconcilesOver100ms: 1 - per(b.reconcilesWithin100ms - a.reconcilesWithin100ms, n),
    appliesOver100ms: 1 - per(b.appliesWithin100ms - a.appliesWithin100ms, applies),
  };
}

/** A running operator. */
export class BenchOperator {
  readonly process: ManagedProcess;
  readonly metricsUrl: string;
  readonly healthUrl: string;
  /** performance.now() when the process was spawned. */
  readonly startedAt: number;
  /** performance.now() when /readyz first answered 200 (caches synced, reconciling begins). */
  readyAt = Number.NaN;

  constructor(proc: ManagedProcess, metricsUrl: string, healthUrl: string, startedAt: number) {
    this.process = proc;
    this.metricsUrl = metricsUrl;
    this.healthUrl = healthUrl;
    this.startedAt = startedAt;
  }

  /** Process id. */
  get pid(): number {
    const pid = this.process.pid;
    if (pid === undefined) throw new Error('the operator process did not start');
    return pid;
  }

  /** Reads CPU time and RSS from /proc. */
  async sample(): Promise<ProcSample> {
    const [stat, status] = await Promise.all([readFile(`/proc/${this.pid}/stat`, 'utf8'), readFile(`/proc/${this.pid}/status`, 'utf8')]);
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
    return { at: performance.now(), cpuSeconds: ticks / CLOCK_TICKS, rssMiB: rssKiB / 1024 };
  }

  /** One metric from /metrics, summed over its label sets; NaN when absent. */
  async metric(name: string): Promise<number> {
    return (await this.metrics([name]))[name] ?? Number.NaN;
  }

  /** Several metrics from one scrape, each summed over its label sets. */
  async metrics(names: readonly string[]): Promise<Record<string, number>> {
    return sumMetrics(await this.metricsText(), names);
  }

  /** The whole /metrics exposition. */
  async metricsText(): Promise<string> {
    const res = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(5000) });
    return res.text();
  }

  /** Reconcile and queue-wait totals from /metrics; subtract two readings for a window. */
  async reconcileTotals(): Promise<ReconcileTotals> {
    const op = 'kube_registrar_registry_operation_duration_seconds';
    const m = await this.metrics([
      'kube_registrar_reconcile_duration_seconds_sum',
      'kube_registrar_reconcile_duration_seconds_count',
      'kube_registrar_workqueue_queue_duration_seconds_sum',
      'kube_registrar_workqueue_queue_duration_seconds_count',
      `${op}_sum{operation="records"}`,
      `${op}_count{operation="records"}`,
      `${op}_sum{operation="apply"}`,
      `${op}_count{operation="apply"}`,
      `${op}_bucket{operation="apply",le="0.1"}`,
      'kube_registrar_reconcile_duration_seconds_bucket{le="0.1"}',
    ]);
    return {
      reads: m[`${op}_count{operation="records"}`] ?? 0,
      readSeconds: m[`${op}_sum{operation="records"}`] ?? 0,
      applies: m[`${op}_count{operation="apply"}`] ?? 0,
      applySeconds: m[`${op}_sum{operation="apply"}`] ?? 0,
      reconciles: m['kube_registrar_reconcile_duration_seconds_count'] ?? Number.NaN,
      reconcileSeconds: m['kube_registrar_reconcile_duration_seconds_sum'] ?? Number.NaN,
      waits: m['kube_registrar_workqueue_queue_duration_seconds_count'] ?? Number.NaN,
      waitSeconds: m['kube_registrar_workqueue_queue_duration_seconds_sum'] ?? Number.NaN,
      reconcilesWithin100ms: m['kube_registrar_reconcile_duration_seconds_bucket{le="0.1"}'] ?? Number.NaN,
      appliesWithin100ms: m[`${op}_bucket{operation="apply",le="0.1"}`] ?? 0,
    };
  }

  /** Waits until /readyz answers, polling every 50 ms so `readyAt` is precise to that. */
  async waitReady(timeoutMs = 600_000): Promise<void> {
    await this.process.waitUntil(
      'ready',
      async () => (await fetch(`${this.healthUrl}/readyz`, { signal: AbortSignal.timeout(1000) })).ok,
      timeoutMs,
    );
    this.readyAt = performance.now();
  }

  /** Stops the operator gracefully (so a CPU profile gets written). */
  async stop(): Promise<void> {
    await this.process.stop(30_000);
  }
}

/**
 * Sums the samples of each requested metric in a Prometheus text exposition. A request is a
 * metric name, summed over all its label sets, or `name{label="value",...}` for the samples carrying
 * those label values.
 */
export function sumMetrics(text: string, names: readonly string[]): Record<string, number> {
  const wanted = names.map((n) => {
    const m = /^([^{]+)(?:\{(.*)\})?$/.exec(n);
    return { key: n, name: m?.[1] ?? n, labels: m?.[2] ? (m[2].match(/\w+="[^"]*"/g) ?? []) : [] };
  });
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    for (const w of wanted) {
      if (w.name !== m[1] || !w.labels.every((l) => (m[2] ?? '').includes(l))) continue;
      out[w.key] = (out[w.key] ?? 0) + Number(m[3]);
    }
  }
  return out;
}

/** The script the benchmarks run: src/main.ts until {@link compileOperator} built dist/. */
let entryPoint = join(REPO_ROOT, 'src', 'main.ts');

/**
 * Compiles src/ into dist/ with tsc, as the image's build stage does, and runs the operator from
 * there from now on: what the image runs, without type stripping at load time.
 */
export async function compileOperator(): Promise<string> {
  const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await promisify(execFile)(process.execPath, [tsc, '-p', join(REPO_ROOT, 'tsconfig.build.json')], { cwd: REPO_ROOT });
  entryPoint = join(REPO_ROOT, 'dist', 'main.js');
  return entryPoint;
}

/** Starts the operator against a bed; resolves once spawned (call waitReady to wait for its caches). */
export async function startOperator(o: OperatorOptions): Promise<BenchOperator> {
  const metricsPort = await freePort();
  const healthPort = await freePort();
  const logDir = o.logDir ?? (await mkdtemp(join(tmpdir(), 'kube-registrar-bench-op-')));
  await mkdir(logDir, { recursive: true });
  const startedAt = performance.now();
  const proc = new ManagedProcess(
    'kube-registrar',
    process.execPath,
    [
      // As the container image runs it; a run's --node-options come after, so they win.
      ...RUNTIME_NODE_FLAGS,
      ...(o.nodeFlags ?? []),
      entryPoint,
      `--kubeconfig=${o.kubeconfig}`,
      `--metrics-address=127.0.0.1:${metricsPort}`,
      `--health-address=127.0.0.1:${healthPort}`,
      ...o.runFlags,
      ...(o.flags ?? []),
    ],
    join(logDir, 'operator.log'),
    // As the container image runs it; a run's --node-options come on top.
    { ...process.env, NODE_ENV: 'production', ...RUNTIME_ENV },
  );
  return new BenchOperator(proc, `http://127.0.0.1:${metricsPort}/metrics`, `http://127.0.0.1:${healthPort}`, startedAt);
}

/** Samples a process every `intervalMs` until stopped. */
export class Sampler {
  readonly samples: ProcSample[] = [];
  readonly depths: { at: number; depth: number }[] = [];
  readonly #poll: Poll;

  constructor(op: BenchOperator, intervalMs: number, withQueueDepth: boolean) {
    this.#poll = new Poll(intervalMs, async () => {
      this.samples.push(await op.sample());
      if (withQueueDepth) this.depths.push({ at: performance.now(), depth: await op.metric('kube_registrar_workqueue_depth') });
    });
  }

  /** Stops sampling and waits for the loop to end. */
  stop(): Promise<void> {
    return this.#poll.stop();
  }
}

/** Runs `tick`, then waits `intervalMs`, until stopped; a tick that fails (a slow scrape) is a gap in the series. */
export class Poll {
  #running = true;
  readonly #done: Promise<void>;

  constructor(intervalMs: number, tick: () => Promise<void>) {
    this.#done = (async () => {
      while (this.#running) {
        await tick().catch(() => undefined);
        await sleep(intervalMs);
      }
    })();
  }

  /** Stops the loop and waits for its last tick. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
  }
}

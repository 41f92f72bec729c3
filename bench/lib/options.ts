/**
 * Command-line options of `npm run bench` and the two scales. Full scale is the default and is
 * what the issue asks for; small scale exists to develop and check the harness on a busy machine.
 */
import { parseArgs } from 'node:util';

/** Scenario ids, in the order they run. */
export const SCENARIOS = [
  'cold-sync',
  'propagation',
  'steady-state',
  'consul-cold-sync',
  'churn',
  'health-checks',
  'client-selection',
  'client-slow-backend',
  'client-propagation',
  'zookeeper',
  'recovery',
  'consul-capacity',
  'rollout',
] as const;
/** One scenario id. */
export type ScenarioId = (typeof SCENARIOS)[number];

/** Everything a run needs to know. */
export interface BenchOptions {
  readonly scale: 'full' | 'small';
  readonly repeats: number;
  readonly only: ReadonlySet<ScenarioId>;
  /** Run the operator under `--cpu-prof` and summarise the profile into the results. */
  readonly profile: boolean;
  /** Steady state: take a heap snapshot of the operator after the windows and summarise it. */
  readonly heapSnapshot: boolean;
  /** Update BENCHMARKS.md. */
  readonly markdown: boolean;
  /** A module under bench/experiments/ loaded into the operator (`node --import`) to measure a proposed fix. */
  readonly experiment: string | undefined;
  /** Extra Node flags for the operator (e.g. `--max-semi-space-size=1`), also an experiment. */
  readonly nodeOptions: readonly string[];
  /** Extra operator flags (e.g. `--concurrency=32`), also an experiment. */
  readonly operatorFlags: readonly string[];
  /** Kubernetes (= registry) namespaces the objects are spread over. */
  readonly namespaces: number;
  readonly coldSync: { readonly sizes: readonly number[]; readonly podsPerService: number };
  readonly propagation: { readonly services: number; readonly podsPerService: number; readonly rate: number; readonly seconds: number };
  readonly steady: {
    readonly serviceInstances: number;
    readonly podsPerInstance: number;
    readonly windowSeconds: number;
    readonly resyncSeconds: number;
  };
  readonly consulColdSync: { readonly sizes: readonly number[]; readonly idleSeconds: number };
  readonly zookeeper: {
    readonly sizes: readonly number[];
    /** Length of the idle (keepalive) window. */
    readonly windowSeconds: number;
    /** Resync period of the operators started after a restart. */
    readonly resyncSeconds: number;
    /** Resync passes watched after each restart, beyond the first reconcile of everything. */
    readonly resyncPasses: number;
  };
  /** ServiceInstances (one static endpoint each) registered, lost to an outage longer than the TTL, and recovered. */
  readonly recovery: { readonly serviceInstances: number };
  /** Instance counts one Consul agent is filled to, and the paced updates timed at each. */
  readonly consulCapacity: { readonly sizes: readonly number[]; readonly updates: number; readonly rate: number };
  readonly churn: { readonly services: number; readonly podsPerService: number; readonly rate: number; readonly seconds: number };
  readonly healthChecks: {
    readonly serviceInstances: number;
    readonly endpointsPerInstance: number;
    /** Length of each CPU window (with and without health checks). */
    readonly windowSeconds: number;
    /** Endpoints made to fail (and recover) at once in each round. */
    readonly flipped: number;
  };
}

/** The usage text. */
export const USAGE = `usage: npm run bench -- [--scale=full|small] [--repeats=N] [--only=a,b] [--profile] [--heap-snapshot] [--churn-seconds=S] [--sizes=N,M] [--steady-size=N] [--experiment=NAME] [--node-options="FLAGS"] [--operator-flags="FLAGS"] [--no-markdown]

  --scale          full (default; the sizes of the issue) or small (100s of objects, for development);
                   health-checks probes 1,000 endpoints (20 ServiceInstances × 50) at full scale, 100 at small
  --repeats        runs per scenario; medians are taken over them (default 3 at full scale, 1 at small)
  --only           comma-separated scenarios: ${SCENARIOS.join(', ')}
  --profile        run the operator under --cpu-prof and summarise where its CPU time went
  --heap-snapshot  steady state: snapshot the operator's heap after the windows and summarise it
  --churn-seconds  length of the churn phase (default 300 at full scale, 30 at small)
  --sizes          cold-sync and zookeeper sizes instead of the scale's (default 1000,10000 at full scale, 100,300 at small);
                   recovery runs the largest of them
  --steady-size    steady-state ServiceInstances (3 pods each) instead of the scale's (10000 / 300)
  --experiment     load bench/experiments/NAME.ts into the operator (node --import) to measure a
                   proposed fix without changing src/; reported in blocks of their own
  --node-options   extra Node flags for the operator process, e.g. "--max-semi-space-size=1";
                   also reported as an experiment
  --operator-flags extra operator flags, e.g. "--concurrency=32"; also reported as an experiment
  zookeeper        cold sync, idle keepalive window (60 s, 20 s at small) and restarts (SIGTERM, SIGKILL) on one
                   ZooKeeper Registry, per size
  recovery         SIGKILL of a converged operator, an outage until every lease expired, the raw etcd rate, and
                   the restart timed until every entry is back (10,000 ServiceInstances, 300 at small)
  consul-capacity  one Consul agent filled to 1,000 / 2,000 / 3,000 / 4,000 / 5,000 / 10,000 instances (200 / 500 / 1,000 at
                   small), 500 updates at 50/s timed at each: the largest count with registration p99 < 1 s
  rollout          a bed with the control plane and kwok; rollout restart of a Deployment of 100 replicas (20 at small),
                   timed from pod changes to their etcd entries, and every registry write counted
  --no-markdown    leave BENCHMARKS.md alone (results still go to bench/results/)`;

/** Parses argv (without node and script). Throws with the usage text on a bad flag. */
export function parseOptions(argv: readonly string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      scale: { type: 'string', default: 'full' },
      repeats: { type: 'string' },
      only: { type: 'string' },
      profile: { type: 'boolean', default: false },
      'heap-snapshot': { type: 'boolean', default: false },
      'churn-seconds': { type: 'string' },
      'no-markdown': { type: 'boolean', default: false },
      experiment: { type: 'string' },
      sizes: { type: 'string' },
      'steady-size': { type: 'string' },
      'node-options': { type: 'string' },
      'operator-flags': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  const scale = values.scale;
  if (scale !== 'full' && scale !== 'small') throw new Error(`--scale must be full or small, got ${JSON.stringify(scale)}\n\n${USAGE}`);
  const small = scale === 'small';
  const repeats = values.repeats === undefined ? (small ? 1 : 3) : Number(values.repeats);
  if (!Number.isInteger(repeats) || repeats < 1)
    throw new Error(`--repeats must be a positive whole number, got ${JSON.stringify(values.repeats)}`);
  const only = new Set<ScenarioId>();
  for (const s of (values.only ?? SCENARIOS.join(','))
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    if (!(SCENARIOS as readonly string[]).includes(s))
      throw new Error(`--only: unknown scenario ${JSON.stringify(s)}; use ${SCENARIOS.join(', ')}`);
    only.add(s as ScenarioId);
  }
  const churnSeconds = values['churn-seconds'] === undefined ? (small ? 30 : 300) : Number(values['churn-seconds']);
  if (!(churnSeconds > 0)) throw new Error(`--churn-seconds must be positive, got ${JSON.stringify(values['churn-seconds'])}`);
  const sizes = values.sizes === undefined ? (small ? [100, 300] : [1000, 10_000]) : values.sizes.split(',').map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 10))
    throw new Error(`--sizes must be whole numbers of at least 10, got ${JSON.stringify(values.sizes)}`);
  const steadySize = values['steady-size'] === undefined ? (small ? 300 : 10_000) : Number(values['steady-size']);
  if (!Number.isInteger(steadySize) || steadySize < 10)
    throw new Error(`--steady-size must be a whole number of at least 10, got ${JSON.stringify(values['steady-size'])}`);
  const experiment = values.experiment;
  if (experiment !== undefined && !/^[a-z0-9-]+$/.test(experiment))
    throw new Error(`--experiment must name a file of bench/experiments/ without .ts, got ${JSON.stringify(experiment)}`);
  const nodeOptions = (values['node-options'] ?? '').split(/\s+/).filter(Boolean);
  if (nodeOptions.some((f) => !f.startsWith('--')))
    throw new Error(`--node-options takes Node flags, e.g. "--max-semi-space-size=1", got ${JSON.stringify(values['node-options'])}`);
  const operatorFlags = (values['operator-flags'] ?? '').split(/\s+/).filter(Boolean);
  if (operatorFlags.some((f) => !f.startsWith('--')))
    throw new Error(`--operator-flags takes operator flags, e.g. "--concurrency=32", got ${JSON.stringify(values['operator-flags'])}`);
  return {
    experiment,
    nodeOptions,
    operatorFlags,
    scale,
    repeats,
    only,
    profile: values.profile,
    heapSnapshot: values['heap-snapshot'],
    markdown: !values['no-markdown'],
    namespaces: small ? 4 : 10,
    coldSync: { sizes, podsPerService: 10 },
    propagation: { services: small ? 10 : 50, podsPerService: small ? 10 : 20, rate: 50, seconds: small ? 20 : 60 },
    steady: { serviceInstances: steadySize, podsPerInstance: 3, windowSeconds: small ? 40 : 330, resyncSeconds: small ? 20 : 300 },
    consulColdSync: { sizes, idleSeconds: small ? 40 : 60 },
    recovery: { serviceInstances: Math.max(...sizes) },
    consulCapacity: { sizes: small ? [200, 500, 1000] : [1000, 2000, 3000, 4000, 5000, 10_000], updates: 500, rate: 50 },
    zookeeper: { sizes, windowSeconds: small ? 20 : 60, resyncSeconds: small ? 10 : 30, resyncPasses: 2 },
    churn: { services: small ? 30 : 200, podsPerService: 10, rate: 100, seconds: churnSeconds },
    healthChecks: {
      serviceInstances: small ? 4 : 20,
      endpointsPerInstance: small ? 25 : 50,
      windowSeconds: small ? 30 : 120,
      flipped: small ? 10 : 50,
    },
  };
}

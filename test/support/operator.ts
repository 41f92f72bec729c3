/**
 * Runs the operator as a separate process against the bed, the way a user runs it, so tests can
 * restart it gracefully or kill it with SIGKILL.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ManagedProcess } from '../../testbed/processes.ts';
import { REPO_ROOT } from '../../testbed/provision.ts';
import { bedEnv } from './env.ts';

/** A running operator process. */
export interface OperatorProcess {
  readonly process: ManagedProcess;
  readonly metricsUrl: string;
  readonly healthUrl: string;
}

/**
 * Starts `node src/main.ts` with the bed's kubeconfig (or `kubeconfig`, e.g. one that reaches the
 * apiserver through a proxy) and the given extra flags; waits until ready.
 */
export async function startOperator(
  flags: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
  kubeconfig: string = bedEnv('KUBECONFIG'),
): Promise<OperatorProcess> {
  const metricsPort = await freePort();
  const healthPort = await freePort();
  const logDir = await mkdtemp(join(tmpdir(), 'kube-registrar-op-'));
  const proc = new ManagedProcess(
    'kube-registrar',
    process.execPath,
    [
      join(REPO_ROOT, 'src', 'main.ts'),
      `--kubeconfig=${kubeconfig}`,
      `--metrics-address=127.0.0.1:${metricsPort}`,
      `--health-address=127.0.0.1:${healthPort}`,
      '--log-level=debug',
      ...flags,
    ],
    join(logDir, 'operator.log'),
    { ...process.env, ...env },
  );
  const healthUrl = `http://127.0.0.1:${healthPort}`;
  await proc.waitUntil('ready', async () => (await fetch(`${healthUrl}/readyz`, { signal: AbortSignal.timeout(1000) })).ok, 60_000);
  return { process: proc, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, healthUrl };
}

/**
 * A sample of an operator's /metrics page: the value of `name` with exactly the label set
 * `labels` (e.g. `registry="main"`; '' for an unlabelled metric), or undefined when absent.
 */
export async function metricValue(op: OperatorProcess, name: string, labels = ''): Promise<number | undefined> {
  const text = await (await fetch(op.metricsUrl, { signal: AbortSignal.timeout(5000) })).text();
  const series = labels === '' ? name : `${name}\\{${labels}\\}`;
  const m = new RegExp(`^${series} (\\S+)$`, 'm').exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** Like {@link metricValue}, but a metric missing from the page fails the test. */
export async function requireMetric(op: OperatorProcess, name: string, labels = ''): Promise<number> {
  const value = await metricValue(op, name, labels);
  if (value === undefined) throw new Error(`${name}{${labels}} is missing from ${op.metricsUrl}`);
  return value;
}

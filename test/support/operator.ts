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
import { eventually } from './kube.ts';

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

/** Whether the operator reports itself the leader; false when its metrics do not answer within 1 s. */
export async function isLeader(op: OperatorProcess): Promise<boolean> {
  try {
    const text = await (await fetch(op.metricsUrl, { signal: AbortSignal.timeout(1000) })).text();
    return /^kube_registrar_leader 1$/m.test(text);
  } catch {
    return false;
  }
}

/** Waits until exactly one of `operators` leads; resolves it and the one standing by. */
export async function leaderAndStandby(
  operators: readonly OperatorProcess[],
): Promise<{ leader: OperatorProcess; standby: OperatorProcess }> {
  const flags = await eventually('exactly one leader', async () => {
    const f = await Promise.all(operators.map(isLeader));
    return f.filter(Boolean).length === 1 ? f : undefined;
  });
  const leader = operators[flags.indexOf(true)];
  const standby = operators[flags.indexOf(false)];
  if (!leader || !standby) throw new Error(`expected a leader and a standby among ${operators.length} operators`);
  return { leader, standby };
}

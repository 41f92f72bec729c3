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

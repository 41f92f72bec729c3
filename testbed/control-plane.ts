/**
 * The rest of a control plane for the test bed: kube-controller-manager and kube-scheduler, built
 * from k8s.io/kubernetes like the apiserver, and kwok, which plays the kubelets of nodes that exist
 * only as Node objects (pods go Pending → Running → Ready, deletions wait for their grace period,
 * nodes keep their leases fresh). With them, Deployments, ReplicaSets, rolling updates, node
 * NotReady and eviction happen as they do in a cluster, all on loopback.
 *
 * Every component talks to the apiserver with the bed's admin kubeconfig and serves its health
 * endpoints on a free loopback port; none takes part in leader election (there is one of each).
 */
import { join } from 'node:path';
import type { Pki } from './pki.ts';
import { freePort, httpsGet, ManagedProcess, mkdirp } from './processes.ts';
import type { Toolchain } from './provision.ts';

/** Where kwok takes pod IPs from. */
export const POD_CIDR = '10.244.0.0/16';

/** How long the node lifecycle controller waits for a node's heartbeat before it is NotReady. */
export const NODE_MONITOR_GRACE_SECONDS = 20;

/** What {@link startControlPlane} needs from the bed. */
export interface ControlPlaneOptions {
  readonly toolchain: Toolchain;
  /** Working directory of the components (serving certificates). */
  readonly dir: string;
  readonly logs: string;
  /** The bed's admin kubeconfig. */
  readonly kubeconfig: string;
  readonly pki: Pki;
}

/** The running components; `stop()` stops all of them. */
export interface ControlPlane {
  readonly controllerManager: ManagedProcess;
  readonly scheduler: ManagedProcess;
  readonly kwok: ManagedProcess;
  stop(): Promise<void>;
}

/**
 * Starts kube-controller-manager, kube-scheduler and kwok against the bed's apiserver and waits
 * until each reports healthy. On a failure it stops what it started before rethrowing.
 */
export async function startControlPlane(o: ControlPlaneOptions): Promise<ControlPlane> {
  const started: ManagedProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const p of started.reverse()) await p.stop(10_000).catch(() => undefined);
    started.length = 0;
  };
  try {
    // The clients open their watches as streaming lists (client-go's WatchListClient, on by
    // default from v0.35, which kwok v0.8.0 has), which the bed's apiserver does not serve over
    // its etcd 3.4 (see bed.ts): each would fail once and fall back to a list.
    const clientEnv = { ...process.env, KUBE_FEATURE_WatchListClient: 'false' };
    const delegated = [
      `--kubeconfig=${o.kubeconfig}`,
      `--authentication-kubeconfig=${o.kubeconfig}`,
      `--authorization-kubeconfig=${o.kubeconfig}`,
    ];

    /** kube-controller-manager or kube-scheduler: delegated auth, serving health on `port`. */
    const component = (name: string, binary: string, port: number, args: readonly string[]): ManagedProcess => {
      const proc = new ManagedProcess(
        name,
        binary,
        [
          ...delegated,
          '--leader-elect=false',
          '--bind-address=127.0.0.1',
          `--secure-port=${port}`,
          `--cert-dir=${join(o.dir, name)}`,
          '--profiling=false',
          '--v=1',
          ...args,
        ],
        join(o.logs, `${name}.log`),
        clientEnv,
      );
      started.push(proc);
      return proc;
    };
    const kcmPort = await freePort();
    const controllerManager = component('kube-controller-manager', o.toolchain.kubeControllerManager, kcmPort, [
      `--root-ca-file=${o.pki.caCert}`,
      `--service-account-private-key-file=${o.pki.serviceAccountKey}`,
      '--use-service-account-credentials=false',
      '--controllers=*',
      `--node-monitor-grace-period=${NODE_MONITOR_GRACE_SECONDS}s`,
      '--node-monitor-period=2s',
    ]);
    const schedulerPort = await freePort();
    const scheduler = component('kube-scheduler', o.toolchain.kubeScheduler, schedulerPort, []);

    const kwokPort = await freePort();
    const kwok = new ManagedProcess(
      'kwok',
      o.toolchain.kwok,
      [
        `--kubeconfig=${o.kubeconfig}`,
        '--manage-all-nodes=false',
        '--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake',
        // Renewed every quarter of it, well within the controller manager's grace period.
        '--node-lease-duration-seconds=10',
        '--node-ip=127.0.0.1',
        // Pod IPs from a range of their own (kwok's default overlaps the apiserver's service range).
        `--cidr=${POD_CIDR}`,
        '--server-address=127.0.0.1:' + String(kwokPort),
        `--config=${o.toolchain.kwokStages}`,
      ],
      join(o.logs, 'kwok.log'),
      // An empty work directory: kwok would otherwise load ~/.kwok/kwok.yaml if there is one.
      { ...clientEnv, KWOK_WORKDIR: await mkdirp(join(o.dir, 'kwok')) },
    );
    started.push(kwok);

    // Their serving certificates are self-signed.
    const unverified = { rejectUnauthorized: false };
    await Promise.all([
      controllerManager.waitUntil(
        'healthy',
        async () => (await httpsGet(`https://127.0.0.1:${kcmPort}/healthz`, unverified)).status === 200,
        120_000,
      ),
      scheduler.waitUntil(
        'healthy',
        async () => (await httpsGet(`https://127.0.0.1:${schedulerPort}/healthz`, unverified)).status === 200,
        120_000,
      ),
      kwok.waitUntil(
        'healthy',
        async () => (await fetch(`http://127.0.0.1:${kwokPort}/healthz`, { signal: AbortSignal.timeout(2000) })).ok,
        120_000,
      ),
    ]);
    return { controllerManager, scheduler, kwok, stop };
  } catch (err: unknown) {
    await stop();
    throw err;
  }
}

/**
 * The test bed: real servers on 127.0.0.1 with free ports and temporary data directories.
 *
 * - kube-apiserver the way envtest runs it: its own etcd, client-certificate admin kubeconfig,
 *   RBAC authorization, service-account signing keys (so tokens can be minted for RBAC tests);
 * - a separate etcd that plays the service registry;
 * - a Consul dev agent (optionally with ACLs on);
 * - a standalone ZooKeeper server (testbed/zookeeper.ts).
 *
 * By default no kubelet, controller-manager or scheduler runs: tests set pod status through the
 * status subresource, and namespaces are never finalized (use fresh names instead of deleting).
 * With `controlPlane: true` the bed also runs kube-controller-manager and kube-scheduler (built
 * from k8s.io/kubernetes like the apiserver) and kwok, which plays the kubelets of nodes that
 * exist only as Node objects: Deployments, ReplicaSets, rolling updates, graceful deletion, node
 * NotReady and eviction then happen as in a cluster (testbed/control-plane.ts).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createPki, type Pki } from './pki.ts';
import { freePort, freePorts, httpOk, httpsGet, ManagedProcess, mkdirp } from './processes.ts';
import { startControlPlane } from './control-plane.ts';
import { provision, type Toolchain } from './provision.ts';
import { ZooKeeperServer } from './zookeeper.ts';

type Log = (line: string) => void;

/** Options for {@link startBed}. */
export interface BedOptions {
  /** Turn Consul ACLs on (default deny) with a generated management token. */
  readonly consulAcl?: boolean;
  /**
   * Also run kube-controller-manager, kube-scheduler and kwok (simulated nodes and pod lifecycle);
   * see testbed/control-plane.ts. Off by default: most tests need only the apiserver.
   */
  readonly controlPlane?: boolean;
  /** Keep the data directory after stop (for post-mortems). */
  readonly keepData?: boolean;
  readonly log?: Log;
}

/** Versions of the servers the bed started, as the servers themselves report them. */
export interface BedVersions {
  readonly kubernetes: string;
  readonly etcd: string;
  readonly consul: string;
  readonly helm: string;
  readonly zookeeper: string;
}

/** An etcd server of the bed that can be stopped and started again on the same port and data. */
export class EtcdServer {
  readonly name: string;
  readonly clientUrl: string;
  readonly #bin: string;
  readonly #args: readonly string[];
  readonly #logFile: string;
  #process: ManagedProcess | undefined;

  constructor(bin: string, name: string, dataDir: string, clientPort: number, peerPort: number, logFile: string) {
    this.name = name;
    this.#bin = bin;
    this.#logFile = logFile;
    this.clientUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    this.#args = [
      `--name=${name}`,
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${this.clientUrl}`,
      `--advertise-client-urls=${this.clientUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${name}=${peerUrl}`,
      '--initial-cluster-state=new',
      '--log-level=warn',
      '--logger=zap',
    ];
  }

  /** Starts the server and waits until /health says so. */
  async start(): Promise<void> {
    if (this.#process?.running) return;
    this.#process = new ManagedProcess(this.name, this.#bin, this.#args, this.#logFile, {
      ...process.env,
      ETCD_UNSUPPORTED_ARCH: process.env['ETCD_UNSUPPORTED_ARCH'] ?? '',
    });
    await this.#process.waitUntil('healthy', () => httpOk(`${this.clientUrl}/health`, { bodyIncludes: '"health":"true"' }), 30_000);
  }

  /** Stops the server gracefully. */
  async stop(): Promise<void> {
    await this.#process?.stop();
  }

  /** Kills the server as a crash would. */
  async kill(): Promise<void> {
    await this.#process?.kill();
  }

  /** Version reported by the server. */
  async version(): Promise<string> {
    const res = await fetch(`${this.clientUrl}/version`, { signal: AbortSignal.timeout(2000) });
    const body = (await res.json()) as { etcdserver?: string };
    return body.etcdserver ?? 'unknown';
  }
}

/** A Consul dev agent of the bed. */
export interface ConsulAgent {
  readonly address: string;
  /** Management token when ACLs are on. */
  readonly token: string | undefined;
  readonly process: ManagedProcess;
  stop(): Promise<void>;
}

/**
 * Arguments of a Consul dev agent named `name` on loopback: HTTP on `httpPort`, its other ports
 * free ones, DNS and gRPC off, and `hcl` as extra configuration. Every client of the bed (operator,
 * tests, benchmark watches) connects from 127.0.0.1, so the agent's limit of 200 connections per
 * client address, meant for one client per address, is raised.
 */
export async function consulDevAgentArgs(name: string, httpPort: number, hcl: readonly string[] = []): Promise<string[]> {
  const [serverPort, serfLanPort, serfWanPort] = await freePorts(3, [httpPort]);
  return [
    'agent',
    '-dev',
    `-node=${name}`,
    '-bind=127.0.0.1',
    '-client=127.0.0.1',
    `-http-port=${httpPort}`,
    '-dns-port=-1',
    '-grpc-port=-1',
    `-server-port=${serverPort}`,
    `-serf-lan-port=${serfLanPort}`,
    `-serf-wan-port=${serfWanPort}`,
    '-log-level=warn',
    ...['ports { grpc_tls = -1 }', 'limits { http_max_conns_per_client = 4096 }', ...hcl].map((h) => `-hcl=${h}`),
  ];
}

/**
 * Starts a Consul dev agent on free loopback ports and waits until it serves its catalog (and,
 * with ACLs, accepts its management token). The name becomes the node name, so a person can tell
 * agents apart. A port picked free can be taken before the agent binds it, so a start that fails
 * with "address already in use" is tried again on other ports, up to three times (a dev agent
 * keeps no data to clean up).
 */
export async function startConsulAgent(binary: string, o: { name: string; logFile: string; acl: boolean }): Promise<ConsulAgent> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startConsulAgentOnce(binary, o);
    } catch (err: unknown) {
      if (attempt >= 3 || !/address already in use/i.test(err instanceof Error ? err.message : String(err))) throw err;
    }
  }
}

async function startConsulAgentOnce(binary: string, o: { name: string; logFile: string; acl: boolean }): Promise<ConsulAgent> {
  const token = o.acl ? randomUUID() : undefined;
  const port = await freePort();
  const address = `http://127.0.0.1:${port}`;
  const hcl = token
    ? [
        `acl { enabled = true default_policy = "deny" enable_token_persistence = false tokens { initial_management = "${token}" agent = "${token}" } }`,
      ]
    : [];
  const args = await consulDevAgentArgs(o.name, port, hcl);
  const proc = new ManagedProcess(`consul ${o.name}`, binary, args, o.logFile);
  const headers: Record<string, string> = token ? { 'X-Consul-Token': token } : {};
  try {
    await proc.waitUntil(
      'ready',
      async () => {
        const leader = (await (await fetch(`${address}/v1/status/leader`, { signal: AbortSignal.timeout(2000) })).json()) as string;
        if (!leader) return false;
        // The catalog answers only once the agent has synced itself in (and, with ACLs, once the
        // management token is bootstrapped).
        return (await fetch(`${address}/v1/catalog/nodes`, { headers, signal: AbortSignal.timeout(2000) })).ok;
      },
      60_000,
    );
  } catch (err: unknown) {
    await proc.stop();
    throw err;
  }
  return { address, token, process: proc, stop: () => proc.stop() };
}

/** A running bed. */
export interface Bed {
  readonly dir: string;
  readonly kubeconfig: string;
  readonly apiserverUrl: string;
  readonly pki: Pki;
  readonly registryEtcd: EtcdServer;
  readonly apiserverEtcd: EtcdServer;
  readonly consulAddr: string;
  /** Consul management token when ACLs are on. */
  readonly consulToken: string | undefined;
  readonly zookeeper: ZooKeeperServer;
  readonly toolchain: Toolchain;
  readonly versions: BedVersions;
  /** `KEY=value` environment a person or a test uses to reach the bed. */
  readonly env: Readonly<Record<string, string>>;
  /** Restarts kube-apiserver on the same port and storage. */
  restartApiserver(): Promise<void>;
  /** Stops every server and removes the data directory. */
  stop(): Promise<void>;
}

function kubeconfigYaml(server: string, pki: Pki): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: testbed',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority: ${pki.caCert}`,
    'users:',
    '- name: admin',
    '  user:',
    `    client-certificate: ${pki.adminCert}`,
    `    client-key: ${pki.adminKey}`,
    'contexts:',
    '- name: testbed',
    '  context: {cluster: testbed, user: admin}',
    'current-context: testbed',
    '',
  ].join('\n');
}

/**
 * Starts a server on ports picked free, and adds it to `started` once it runs. A port picked free
 * can be taken before the server binds it (a client's ephemeral port, another test's server), so a
 * start that fails with "address already in use" is tried again on other ports and a clean data
 * directory, up to three times.
 */
async function startOnFreePorts<T extends { start(): Promise<void>; stop(): Promise<void> }>(
  dataDir: string,
  make: () => Promise<T>,
  started: { stop(): Promise<void> }[],
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const server = await make();
    try {
      await server.start();
      started.push(server);
      return server;
    } catch (err: unknown) {
      await server.stop().catch(() => undefined);
      if (attempt >= 3 || !/address already in use/i.test(err instanceof Error ? err.message : String(err))) throw err;
      await rm(dataDir, { recursive: true, force: true });
    }
  }
}

/**
 * Provisions the binaries (building them on the first run), starts every server and waits until
 * each is healthy. On any failure it stops what it started before rethrowing.
 */
export async function startBed(options: BedOptions = {}): Promise<Bed> {
  const log = options.log ?? ((l: string) => console.error(l));
  const toolchain = await provision(log);
  const dir = await mkdtemp(join(tmpdir(), 'kube-registrar-bed-'));
  const logs = join(dir, 'logs');
  await mkdir(logs, { recursive: true });
  const started: { stop(): Promise<void> }[] = [];
  const stopAll = async (): Promise<void> => {
    for (const s of started.reverse()) await s.stop().catch(() => undefined);
    started.length = 0;
    if (!options.keepData) await rm(dir, { recursive: true, force: true });
  };
  try {
    const pki = await createPki(toolchain.openssl, await mkdirp(join(dir, 'pki')));

    const etcd = async (name: string): Promise<EtcdServer> =>
      startOnFreePorts(
        join(dir, name),
        async () => new EtcdServer(toolchain.etcd, name, join(dir, name), await freePort(), await freePort(), join(logs, `${name}.log`)),
        started,
      );
    const [apiserverEtcd, registryEtcd] = await Promise.all([etcd('apiserver-etcd'), etcd('registry-etcd')]);

    const apiserverPort = await freePort();
    const apiserverUrl = `https://127.0.0.1:${apiserverPort}`;
    const apiserverArgs = [
      `--etcd-servers=${apiserverEtcd.clientUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiserverPort}`,
      `--cert-dir=${join(dir, 'apiserver-certs')}`,
      `--tls-cert-file=${pki.servingCert}`,
      `--tls-private-key-file=${pki.servingKey}`,
      `--client-ca-file=${pki.caCert}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki.serviceAccountPub}`,
      `--service-account-signing-key-file=${pki.serviceAccountKey}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--allow-privileged=true',
      // No controller-manager creates default ServiceAccounts, so pods could not be admitted.
      '--disable-admission-plugins=ServiceAccount',
      // Watches from resource version 0 would otherwise be served as streaming lists, which need
      // an etcd with RequestWatchProgress (3.5 or newer); the bed's is Debian's 3.4, on which
      // every such watch fails once and its client falls back to listing (kwok's informers do).
      '--feature-gates=WatchList=false',
      '--profiling=false',
      '--v=0',
    ];
    const certs = { ca: await readFile(pki.caCert), cert: await readFile(pki.adminCert), key: await readFile(pki.adminKey) };
    let apiserver = new ManagedProcess('kube-apiserver', toolchain.kubeApiserver, apiserverArgs, join(logs, 'kube-apiserver.log'));
    const apiserverHandle = { stop: () => apiserver.stop(10_000) };
    started.push(apiserverHandle);
    const waitApiserver = (): Promise<void> =>
      apiserver.waitUntil('ready', async () => (await httpsGet(`${apiserverUrl}/readyz`, certs)).status === 200, 120_000);
    await waitApiserver();

    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, kubeconfigYaml(apiserverUrl, pki), { mode: 0o600 });

    if (options.controlPlane === true)
      started.push(await startControlPlane({ toolchain, dir: await mkdirp(join(dir, 'control-plane')), logs, kubeconfig, pki }));

    const consul = await startConsulAgent(toolchain.consul, {
      name: basename(dir),
      logFile: join(logs, 'consul.log'),
      acl: options.consulAcl === true,
    });
    started.push(consul);
    const consulAddr = consul.address;
    const consulToken = consul.token;
    const consulHeaders: Record<string, string> = consulToken ? { 'X-Consul-Token': consulToken } : {};

    const zookeeper = await startOnFreePorts(
      join(dir, 'zookeeper'),
      async () =>
        new ZooKeeperServer(
          { java: toolchain.java, classpath: toolchain.zookeeperClasspath },
          'zookeeper',
          join(dir, 'zookeeper'),
          await freePort(),
          join(logs, 'zookeeper.log'),
        ),
      started,
    );

    const kubeVersion =
      (JSON.parse((await httpsGet(`${apiserverUrl}/version`, certs)).body) as { gitVersion?: string }).gitVersion ?? 'unknown';
    const consulSelf = (await (await fetch(`${consulAddr}/v1/agent/self`, { headers: consulHeaders })).json()) as {
      Config?: { Version?: string };
    };
    const versions: BedVersions = {
      kubernetes: kubeVersion,
      etcd: await registryEtcd.version(),
      consul: consulSelf.Config?.Version ? `v${consulSelf.Config.Version}` : toolchain.consulVersion,
      helm: toolchain.helmVersion,
      zookeeper: await zookeeper.version(),
    };
    const env: Record<string, string> = {
      KUBECONFIG: kubeconfig,
      ETCD_ENDPOINTS: registryEtcd.clientUrl,
      ETCDCTL_API: '3',
      CONSUL_HTTP_ADDR: consulAddr,
      ZOOKEEPER_CONNECT: zookeeper.connectString,
      ZOOKEEPER_SUPER_AUTH: zookeeper.superAuth,
      HELM: toolchain.helm,
      KUBECTL: toolchain.kubectl,
      ETCDCTL: toolchain.etcdctl,
      HADOLINT: toolchain.hadolint,
      CONSUL: toolchain.consul,
      GRPC_RESOLVER_PROBE: toolchain.grpcResolverProbe,
      ZOOKEEPER_JAVA_READER: toolchain.zookeeperJavaReader,
      TESTBED_DIR: dir,
      TESTBED_KUBERNETES_VERSION: versions.kubernetes,
      TESTBED_ETCD_VERSION: versions.etcd,
      TESTBED_CONSUL_VERSION: versions.consul,
      TESTBED_HELM_VERSION: versions.helm,
      TESTBED_ZOOKEEPER_VERSION: versions.zookeeper,
    };
    if (consulToken) env['CONSUL_HTTP_TOKEN'] = consulToken;
    return {
      dir,
      kubeconfig,
      apiserverUrl,
      pki,
      registryEtcd,
      apiserverEtcd,
      consulAddr,
      consulToken,
      zookeeper,
      toolchain,
      versions,
      env,
      restartApiserver: async () => {
        await apiserver.stop(10_000);
        apiserver = new ManagedProcess('kube-apiserver', toolchain.kubeApiserver, apiserverArgs, join(logs, 'kube-apiserver.log'));
        await waitApiserver();
      },
      stop: stopAll,
    };
  } catch (err: unknown) {
    await stopAll();
    throw err;
  }
}

/**
 * Fault injection for the fault, bad-input and isolation suite (test/integration/faults-*.test.ts):
 * an operator process started against any kubeconfig (so tests can run it on their own bed), a TCP
 * proxy that can cut, black-hole or slow a link, a Consul dev agent that can be stopped and started
 * again on the same ports, an etcd with authentication on, read-only views of what landed in etcd
 * and Consul, a scan for leaked secrets, and a tally of what the suite did for BENCHMARKS.md.
 *
 * Everything here talks to real servers; nothing imitates one. The proxy only moves bytes.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { consulDevAgentArgs, EtcdServer } from '../../testbed/bed.ts';
import { freePort, ManagedProcess } from '../../testbed/processes.ts';
import { provision, REPO_ROOT } from '../../testbed/provision.ts';

// --- the operator ---------------------------------------------------------------------------

/** A running operator process whose log the test reads. */
export interface FaultOperator {
  readonly process: ManagedProcess;
  readonly healthUrl: string;
  /** The operator's /metrics, when it was started with `metrics: true`. */
  readonly metricsUrl?: string;
  /** Every line the process wrote so far (JSON logs on stdout, anything else on stderr). */
  log(): Promise<string>;
}

/** Options of {@link startOperatorOn}. */
export interface OperatorOptions {
  /** Kubeconfig the operator uses; tests on their own bed pass that bed's (or a proxied) one. */
  readonly kubeconfig: string;
  readonly flags?: readonly string[];
  /** Log file to append to, so that restarts of one operator keep one log. */
  readonly logFile?: string;
  /** Serve /metrics on a free port (see {@link FaultOperator.metricsUrl}); off by default. */
  readonly metrics?: boolean;
}

/**
 * Starts `node src/main.ts` against `kubeconfig`, the way a user runs it, and waits until /readyz
 * answers. The log is kept in a file the test can read and scan.
 */
export async function startOperatorOn(options: OperatorOptions): Promise<FaultOperator> {
  const logFile = options.logFile ?? join(await mkdtemp(join(tmpdir(), 'kr-faults-op-')), 'operator.log');
  for (let attempt = 1; ; attempt++) {
    const logSize = await stat(logFile).then(
      (s) => s.size,
      () => 0,
    );
    try {
      return await startOperatorOnce(options, logFile);
    } catch (err: unknown) {
      // A port found free can be taken by another socket (an outgoing connection's ephemeral
      // port) before the operator binds it: choose others, and leave no trace of the failed
      // start in the log a test scans for crashes.
      if (attempt >= 3 || !String(err).includes('EADDRINUSE')) throw err;
      await truncate(logFile, logSize);
    }
  }
}

async function startOperatorOnce(options: OperatorOptions, logFile: string): Promise<FaultOperator> {
  const healthPort = await freePort();
  const metricsAddress = options.metrics ? `127.0.0.1:${await freePort()}` : '';
  const args = [
    join(REPO_ROOT, 'src', 'main.ts'),
    `--kubeconfig=${options.kubeconfig}`,
    `--metrics-address=${metricsAddress}`,
    `--health-address=127.0.0.1:${healthPort}`,
    '--log-level=debug',
    ...(options.flags ?? []),
  ];
  const proc = new ManagedProcess('kube-registrar', process.execPath, args, logFile);
  const healthUrl = `http://127.0.0.1:${healthPort}`;
  try {
    await proc.waitUntil('ready', async () => (await fetch(`${healthUrl}/readyz`, { signal: AbortSignal.timeout(1000) })).ok, 90_000);
  } catch (err: unknown) {
    await proc.kill();
    throw err;
  }
  return {
    process: proc,
    healthUrl,
    ...(metricsAddress ? { metricsUrl: `http://${metricsAddress}/metrics` } : {}),
    log: () => readFile(logFile, 'utf8').catch(() => ''),
  };
}

/**
 * Lines of an operator log that show a crash or an unhandled failure: a fatal log, an uncaught
 * exception or unhandled rejection, or a stack trace printed by Node itself.
 */
export function crashLines(log: string): string[] {
  return log
    .split('\n')
    .filter((l) => /"level":"fatal"|Uncaught|UnhandledPromiseRejection|unhandledRejection|^\s+at .*\(node:internal/.test(l));
}

/** Health probe that never throws: the process runs and /healthz answers 200. */
export async function operatorAlive(op: FaultOperator): Promise<boolean> {
  if (!op.process.running) return false;
  try {
    return (await fetch(`${op.healthUrl}/healthz`, { signal: AbortSignal.timeout(3000) })).ok;
  } catch {
    return false;
  }
}

// --- proof that the operator resynced -----------------------------------------------------------

/**
 * ServiceInstance reconciles an operator has finished other than by failing: the sum of
 * `kube_registrar_reconcile_total` over every outcome but `error`, read from its /metrics. A
 * failed reconcile is retried on a backoff of its own (200 ms, doubling up to a minute), not once
 * per resync period, so counting those would let a ServiceInstance that keeps failing stand in for
 * the resyncs of the others.
 */
export async function pacedReconciles(metricsUrl: string): Promise<number> {
  const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`GET ${metricsUrl}: ${res.status}`);
  let sum = 0;
  for (const m of (await res.text()).matchAll(/^kube_registrar_reconcile_total\{outcome="([^"]*)"\} (\S+)$/gm)) {
    if (m[1] !== 'error') sum += Number(m[2]);
  }
  return sum;
}

/** How many ServiceInstances the cluster of `kc` holds in `namespaces`, or in all namespaces. */
export async function countServiceInstances(kc: KubeConfig, namespaces?: readonly string[]): Promise<number> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const list = async (namespace?: string): Promise<number> => {
    const what = { group: 'registrar.dev', version: 'v1alpha1', plural: 'serviceinstances' };
    const res = (
      namespace === undefined ? await api.listClusterCustomObject(what) : await api.listNamespacedCustomObject({ ...what, namespace })
    ) as { items: unknown[] };
    return res.items.length;
  };
  if (namespaces === undefined) return list();
  let n = 0;
  for (const ns of namespaces) n += await list(ns);
  return n;
}

/**
 * Waits until an operator has resynced each of the `serviceInstances` ServiceInstances it watches
 * at least `rounds` times (1 to 4) since the call, so that a check that nothing changed meanwhile
 * covers those resyncs instead of trusting a sleep. Proof by counting: the operator queues every
 * ServiceInstance again one resync period ±10 % after it was reconciled, so while any one of them
 * has been reconciled fewer than `rounds` times, none has been reconciled more than `rounds` + 1
 * times; hence (`rounds` + 1) × `serviceInstances` finished reconciles include `rounds` of each,
 * as long as nothing else makes the operator reconcile meanwhile. Returns the reconciles counted.
 */
export async function waitForResyncs(metricsUrl: string, serviceInstances: number, rounds: number, timeoutMs: number): Promise<number> {
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 4)
    throw new Error(`waitForResyncs counts 1 to 4 rounds, not ${rounds}: beyond 4 the ±10 % jitter breaks the bound`);
  if (serviceInstances < 1) throw new Error('waitForResyncs needs at least one ServiceInstance to count resyncs of');
  const from = await pacedReconciles(metricsUrl);
  const needed = (rounds + 1) * serviceInstances;
  let done = 0;
  try {
    return await waitFor(
      `${rounds} resync(s) of ${serviceInstances} ServiceInstance(s)`,
      async () => {
        done = (await pacedReconciles(metricsUrl)) - from;
        return done >= needed ? done : undefined;
      },
      timeoutMs,
    );
  } catch (err: unknown) {
    throw new Error(
      `the operator finished ${done} of the ${needed} reconciles that prove ${rounds} resync(s) of ${serviceInstances} ServiceInstance(s)`,
      { cause: err },
    );
  }
}

// --- a link that can fail -----------------------------------------------------------------------

/**
 * How a cut link fails: connections closed at once (clients see them drop, like a server going
 * away), or silently swallowed (a network partition). Closing uses destroy(), not
 * resetAndDestroy(): sockets reset with pending writes made Node spin at process exit.
 */
export type CutMode = 'close' | 'blackhole';

interface Link {
  readonly client: Socket;
  /** Undefined while the link is black-holed: the client's bytes go nowhere. */
  upstream: Socket | undefined;
}

/**
 * A TCP proxy on 127.0.0.1 in front of one server. Clients pointed at it can be cut off (every
 * connection closed, or black-holed so that calls hang until their deadline), healed again, or
 * slowed down by a delay on every chunk in both directions. The server behind it keeps running, so
 * leases and TTL checks expire on the server's own clock while the client cannot reach it.
 */
export class TcpProxy {
  readonly port: number;
  readonly #target: { readonly host: string; readonly port: number };
  readonly #server: Server;
  readonly #links = new Set<Link>();
  #mode: CutMode | undefined;
  #delayMs = 0;
  #accepted = 0;

  private constructor(port: number, target: { host: string; port: number }, server: Server) {
    this.port = port;
    this.#target = target;
    this.#server = server;
  }

  /** Starts a proxy to `target` (`http://host:port` or `https://host:port`). */
  static async start(target: string): Promise<TcpProxy> {
    const url = new URL(target);
    const port = await freePort();
    const server = createServer();
    const proxy = new TcpProxy(port, { host: url.hostname, port: Number(url.port) }, server);
    server.on('connection', (client) => proxy.#accept(client));
    await new Promise<void>((resolveListen, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolveListen());
    });
    return proxy;
  }

  /** `scheme://127.0.0.1:<port>` to hand to clients instead of the real address. */
  url(scheme: 'http' | 'https'): string {
    return `${scheme}://127.0.0.1:${this.port}`;
  }

  /** Connections clients opened through the proxy so far. */
  get connectionsAccepted(): number {
    return this.#accepted;
  }

  /** Cuts every client off: open connections are closed or frozen, new ones get the same. */
  cut(mode: CutMode): void {
    this.#mode = mode;
    for (const link of [...this.#links]) {
      if (mode === 'close') {
        this.#drop(link);
      } else {
        link.upstream?.destroy();
        link.upstream = undefined;
      }
    }
  }

  /**
   * Ends the cut: new connections get through again. Connections frozen by a black hole stay
   * frozen, as half-open connections do after a real partition (nothing tells the client they are
   * dead), so only a client that puts deadlines on its calls recovers from them.
   */
  heal(): void {
    this.#mode = undefined;
  }

  /** Delays every chunk by `ms` in both directions (0 for none), keeping the order of bytes. */
  slow(ms: number): void {
    this.#delayMs = ms;
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    for (const link of [...this.#links]) this.#drop(link);
    await new Promise<void>((resolveClose) => this.#server.close(() => resolveClose()));
  }

  #drop(link: Link): void {
    this.#links.delete(link);
    link.client.destroy();
    link.upstream?.destroy();
    link.upstream = undefined;
  }

  #accept(client: Socket): void {
    this.#accepted++;
    client.on('error', () => undefined);
    if (this.#mode === 'close') {
      client.destroy();
      return;
    }
    const link: Link = { client, upstream: undefined };
    this.#links.add(link);
    client.on('close', () => this.#drop(link));
    if (this.#mode !== 'blackhole') {
      const upstream = connect(this.#target.port, this.#target.host);
      link.upstream = upstream;
      upstream.on('error', () => undefined);
      upstream.on('close', () => {
        // An upstream closed by a black-hole cut leaves the client hanging on purpose.
        if (link.upstream === upstream) this.#drop(link);
      });
      this.#forward(upstream, () => client);
    }
    this.#forward(client, () => link.upstream);
  }

  /** Copies `from`'s bytes to whatever `to()` is at the time, in order, after the configured delay. */
  #forward(from: Socket, to: () => Socket | undefined): void {
    let chain = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      const delay = this.#delayMs;
      chain = chain.then(async () => {
        if (delay > 0) await sleep(delay);
        const dest = to();
        if (dest !== undefined && !dest.destroyed && this.#mode !== 'blackhole') dest.write(chunk);
      });
    });
  }
}

/**
 * Writes a copy of `kubeconfig` whose server is `server` (e.g. a {@link TcpProxy} in front of the
 * apiserver); the serving certificate is for 127.0.0.1, so TLS still verifies. Returns its path.
 */
export async function kubeconfigVia(kubeconfig: string, server: string): Promise<string> {
  const text = await readFile(kubeconfig, 'utf8');
  const file = join(await mkdtemp(join(tmpdir(), 'kr-faults-kc-')), 'kubeconfig');
  await writeFile(file, text.replace(/server: \S+/, `server: ${server}`), { mode: 0o600 });
  return file;
}

// --- a Consul agent that can go away ----------------------------------------------------------

/**
 * A Consul dev agent on fixed ports that can be stopped and started again. A dev agent keeps its
 * state in memory, so a restart comes back empty: every service, check and heartbeat is gone, the
 * Consul counterpart of an etcd lease that expired.
 */
export class RestartableConsul {
  readonly address: string;
  readonly #binary: string;
  readonly #args: readonly string[];
  readonly #dir: string;
  #process: ManagedProcess | undefined;

  private constructor(binary: string, dir: string, address: string, args: readonly string[]) {
    this.#binary = binary;
    this.#dir = dir;
    this.address = address;
    this.#args = args;
  }

  /** Starts an agent with the bed's Consul binary on free ports. */
  static async start(): Promise<RestartableConsul> {
    const binary = process.env['CONSUL'] ?? (await provision()).consul;
    const dir = await mkdtemp(join(tmpdir(), 'kr-faults-consul-'));
    const port = await freePort();
    // Fixed ports, so that clients find it again after a restart.
    const agent = new RestartableConsul(binary, dir, `http://127.0.0.1:${port}`, await consulDevAgentArgs('faults', port));
    await agent.resume();
    return agent;
  }

  /** Starts the agent again (empty) and waits until it serves its catalog. */
  async resume(): Promise<void> {
    if (this.#process?.running) return;
    this.#process = new ManagedProcess('consul-faults', this.#binary, this.#args, join(this.#dir, 'consul.log'));
    await this.#process.waitUntil(
      'ready',
      async () => {
        const leader = (await (await fetch(`${this.address}/v1/status/leader`, { signal: AbortSignal.timeout(2000) })).json()) as string;
        return leader !== '' && (await fetch(`${this.address}/v1/catalog/nodes`, { signal: AbortSignal.timeout(2000) })).ok;
      },
      60_000,
    );
  }

  /** Stops the agent (its state is lost). */
  async pause(): Promise<void> {
    await this.#process?.stop();
  }

  /** Stops the agent for good and removes its directory. */
  async close(): Promise<void> {
    await this.pause();
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** A service registered on a Consul agent, with its aggregated health. */
export interface AgentService {
  readonly id: string;
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly meta: Readonly<Record<string, string>>;
  readonly tags: readonly string[];
}

/** Deadline of the test's own calls to Consul: generous, a loaded agent with thousands of services is slow. */
const CALL_TIMEOUT_MS = 20_000;

function consulHeaders(token: string | undefined): Record<string, string> {
  return token ? { 'X-Consul-Token': token } : {};
}

/** Every service the agent holds (its local state), optionally filtered. */
export async function agentServices(address: string, token?: string, filter?: string): Promise<AgentService[]> {
  const qs = filter ? `?filter=${encodeURIComponent(filter)}` : '';
  const res = await fetch(`${address}/v1/agent/services${qs}`, {
    headers: consulHeaders(token),
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  if (!res.ok) throw new Error(`GET /v1/agent/services: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as Record<
    string,
    { ID: string; Service: string; Address: string; Port: number; Meta?: Record<string, string> | null; Tags?: string[] | null }
  >;
  return Object.values(body).map((s) => ({
    id: s.ID,
    name: s.Service,
    address: s.Address,
    port: s.Port,
    meta: s.Meta ?? {},
    tags: s.Tags ?? [],
  }));
}

/** `address:port` of every passing instance of a service, sorted: what a consumer would dial. */
export async function passingInstances(address: string, name: string, token?: string): Promise<string[]> {
  const res = await fetch(`${address}/v1/health/service/${encodeURIComponent(name)}?passing=true`, {
    headers: consulHeaders(token),
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  if (!res.ok) throw new Error(`GET /v1/health/service/${name}: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { Service: { Address: string; Port: number } }[];
  return body.map((e) => `${e.Service.Address}:${e.Service.Port}`).sort();
}

// --- etcd ---------------------------------------------------------------------------------------

/** Runs etcdctl against `endpoint`, as `user` (`name:password`) when given; resolves its stdout. */
export async function etcdctl(binary: string, endpoint: string, args: readonly string[], user?: string): Promise<string> {
  const argv = [`--endpoints=${endpoint}`, ...(user ? [`--user=${user}`] : []), ...args];
  return new Promise((resolveRun, reject) => {
    const child = spawn(binary, argv, { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolveRun(out) : reject(new Error(`etcdctl ${args.join(' ')} exited with ${String(code)}: ${err.trim()}`)),
    );
  });
}

/** An etcd of its own, for tests that turn authentication on or compact it. Stop it with `close()`. */
export interface OwnEtcd {
  readonly server: EtcdServer;
  readonly clientUrl: string;
  readonly etcdctlBinary: string;
  /** Runs etcdctl against this server. */
  ctl(args: readonly string[], user?: string): Promise<string>;
  close(): Promise<void>;
}

/** Starts a separate etcd on free ports with the bed's etcd binary. */
export async function startOwnEtcd(): Promise<OwnEtcd> {
  const toolchain = await provision(() => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'kr-faults-etcd-'));
  const server = new EtcdServer(
    toolchain.etcd,
    'faults-etcd',
    join(dir, 'data'),
    await freePort(),
    await freePort(),
    join(dir, 'etcd.log'),
  );
  try {
    await server.start();
  } catch (err: unknown) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    server,
    clientUrl: server.clientUrl,
    etcdctlBinary: toolchain.etcdctl,
    ctl: (args, user) => etcdctl(toolchain.etcdctl, server.clientUrl, args, user),
    close: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A key-value pair as etcd holds it, with the lease it hangs on ('0' for none). */
export interface StoredKey {
  readonly key: string;
  readonly value: string;
  readonly lease: string;
}

/** Reads every key under `prefix` (all of etcd for '') with its lease. */
export async function etcdKeys(client: Etcd3, prefix: string): Promise<StoredKey[]> {
  const res = prefix === '' ? await client.getAll().exec() : await client.getAll().prefix(prefix).exec();
  return res.kvs.map((kv) => ({ key: kv.key.toString('utf8'), value: kv.value.toString('utf8'), lease: kv.lease }));
}

/** Keys under `dir` (ending in `/`), relative to it: `service/address:port` under a registry namespace's directory. */
export async function etcdChildren(client: Etcd3, dir: string): Promise<string[]> {
  return (await etcdKeys(client, dir)).map((kv) => kv.key.slice(dir.length));
}

/** The passing instances of each of `services` in Consul, named `<ns>-<service>`, as `service/address:port`. */
export async function consulNamespace(address: string, ns: string, services: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const s of services) for (const i of await passingInstances(address, `${ns}-${s}`)) out.push(`${s}/${i}`);
  return out;
}

// --- Kubernetes ---------------------------------------------------------------------------------

/** Every event in a namespace (message, reason, object), for scans. */
export async function eventsIn(
  kc: KubeConfig,
  namespace: string,
): Promise<{ object: string; reason: string; message: string; type: string }[]> {
  const list = await kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace });
  return list.items.map((e) => ({
    object: `${e.involvedObject.kind ?? ''}/${e.involvedObject.name ?? ''}`,
    reason: e.reason ?? '',
    message: e.message ?? '',
    type: e.type ?? '',
  }));
}

/** A Registry as the test reads it (undefined when gone). */
export async function getRegistry(
  kc: KubeConfig,
  name: string,
): Promise<
  | {
      metadata: { name: string };
      status?: {
        entries?: number;
        conditions?: { type: string; status: string; reason: string; message: string }[];
        leases?: { namespace: string; leaseID: string }[];
      };
    }
  | undefined
> {
  try {
    return (await kc
      .makeApiClient(CustomObjectsApi)
      .getClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'registries', name })) as never;
  } catch (err: unknown) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

/** Deletes a Registry (404 counts as done). */
export async function deleteRegistry(kc: KubeConfig, name: string): Promise<void> {
  try {
    await kc
      .makeApiClient(CustomObjectsApi)
      .deleteClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'registries', name });
  } catch (err: unknown) {
    if ((err as { code?: number }).code !== 404) throw err;
  }
}

// --- secrets ----------------------------------------------------------------------------------

/**
 * Where any of `secrets` shows up in `haystacks` (name → text), as itself or base64-encoded
 * (Secrets travel base64 in the API, so that is the other form a leak would take).
 */
export function findSecrets(haystacks: Readonly<Record<string, string>>, secrets: readonly string[]): string[] {
  const found: string[] = [];
  for (const secret of secrets) {
    const forms = [secret, Buffer.from(secret).toString('base64')];
    for (const [name, text] of Object.entries(haystacks)) {
      for (const form of forms)
        if (text.includes(form))
          found.push(`${name} contains ${form === secret ? 'a secret' : 'a base64-encoded secret'} (${secret.slice(0, 3)}...)`);
    }
  }
  return found;
}

// --- the tally --------------------------------------------------------------------------------

/**
 * What one test file did, for the "Faults and isolation" section of BENCHMARKS.md: faults injected
 * (servers stopped, links cut or slowed, processes killed, watches expired), bad inputs tried,
 * registry entries checked against the desired state, and entries lost (desired but missing once
 * the operator had converged, or removed while they should have stayed). Printed as one line.
 */
export class FaultTally {
  readonly #file: string;
  faults = 0;
  badInputs = 0;
  entriesChecked = 0;
  entriesLost = 0;

  constructor(file: string) {
    this.#file = file;
  }

  /** Counts one injected fault. */
  fault(): void {
    this.faults++;
  }

  /** Counts `n` entries compared with the desired state, `lost` of them missing. */
  checked(n: number, lost = 0): void {
    this.entriesChecked += n;
    this.entriesLost += lost;
  }

  /** The line the suite prints; BENCHMARKS.md sums these. */
  line(): string {
    return `faults-tally ${JSON.stringify({ file: this.#file, faultsInjected: this.faults, badInputs: this.badInputs, entriesChecked: this.entriesChecked, entriesLost: this.entriesLost })}`;
  }
}

/**
 * Waits until `read()` gives exactly `expected` (in any order, repeats counted), then counts the entries
 * as checked. On timeout it counts the desired entries that are missing as lost and fails with
 * what was there instead.
 */
export async function converge(
  tally: FaultTally,
  what: string,
  read: () => Promise<readonly string[]>,
  expected: readonly string[],
  timeoutMs: number,
): Promise<void> {
  const want = [...expected].sort();
  let last: string[] = [];
  try {
    await waitFor(
      what,
      async () => {
        last = [...(await read())].sort();
        return JSON.stringify(last) === JSON.stringify(want) ? true : undefined;
      },
      timeoutMs,
    );
  } catch (err: unknown) {
    const missing = want.filter((w) => !last.includes(w));
    tally.checked(want.length, missing.length);
    const extra = last.filter((l) => !want.includes(l));
    throw new Error(`${what}: missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(extra)}`, { cause: err });
  }
  tally.checked(want.length);
}

/** Polls `check` every `everyMs` until it returns a value other than undefined or `timeoutMs` passes. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err: unknown) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: last });
    await sleep(everyMs);
  }
}

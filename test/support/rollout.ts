/**
 * Rollouts under real controllers (a bed with kube-controller-manager, the scheduler and kwok):
 * kwok nodes, Deployments, a watch of their pods, and a watcher of the registry as a consumer
 * sees it (an etcd watch, a Consul blocking query), so that tests and the benchmark compare what
 * the pods did with what the registry showed, event by event.
 */
import {
  AppsV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type V1Pod,
  type V1Toleration,
} from '@kubernetes/client-node';
import type { Etcd3, Watcher } from 'etcd3';

import { startBed, type Bed } from '../../testbed/bed.ts';
import { eventually } from './kube.ts';

/** A bed with its control plane (controllers, scheduler, kwok) and the admin's clients to it. */
export interface ControlPlaneBed {
  readonly bed: Bed;
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
}

/** Starts a bed of the test's own with kube-controller-manager, kube-scheduler and kwok. */
export async function startControlPlaneBed(): Promise<ControlPlaneBed> {
  const bed = await startBed({ controlPlane: true, log: () => undefined });
  const kc = new KubeConfig();
  kc.loadFromFile(bed.kubeconfig);
  return { bed, kc, core: kc.makeApiClient(CoreV1Api), apps: kc.makeApiClient(AppsV1Api) };
}

// --- nodes --------------------------------------------------------------------------------------

/** Creates a Node that kwok manages (its annotation), labelled `labels` and with its hostname. */
export async function createKwokNode(core: CoreV1Api, name: string, labels: Record<string, string> = {}): Promise<void> {
  await core.createNode({
    body: {
      metadata: {
        name,
        annotations: { 'kwok.x-k8s.io/node': 'fake' },
        labels: { type: 'kwok', 'kubernetes.io/hostname': name, ...labels },
      },
    },
  });
}

/** The status of a node's Ready condition ('True', 'False', 'Unknown'), undefined before it has one. */
export async function nodeReady(core: CoreV1Api, name: string): Promise<string | undefined> {
  const node = await core.readNode({ name });
  return node.status?.conditions?.find((c) => c.type === 'Ready')?.status;
}

/** Creates kwok nodes `names` and waits until every one of them is Ready. */
export async function createReadyKwokNodes(
  core: CoreV1Api,
  names: readonly string[],
  labels: (name: string) => Record<string, string> = () => ({}),
): Promise<void> {
  for (const name of names) await createKwokNode(core, name, labels(name));
  for (const name of names)
    await eventually(`node ${name} Ready`, async () => ((await nodeReady(core, name)) === 'True' ? true : undefined), 60_000);
}

/** Turns a kwok node NotReady: kwok's node-not-ready stage acts on this label. */
export async function makeNodeNotReady(core: CoreV1Api, name: string): Promise<void> {
  await core.patchNode(
    { name, body: { metadata: { labels: { 'node-not-ready.stage.kwok.x-k8s.io': 'true' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/**
 * Tolerating an unreachable or NotReady node for `seconds` instead of the default 300, so that
 * eviction follows within a test's time.
 */
export function notReadyTolerations(seconds: number): V1Toleration[] {
  return ['node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable'].map((key) => ({
    key,
    operator: 'Exists',
    effect: 'NoExecute',
    tolerationSeconds: seconds,
  }));
}

/**
 * What `kubectl drain` does: cordons the node, then evicts each of its pods through the Eviction
 * API (so that PodDisruptionBudgets would apply). Resolves the names of the pods evicted.
 */
export async function drainNode(core: CoreV1Api, name: string): Promise<string[]> {
  await core.patchNode({ name, body: { spec: { unschedulable: true } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  const pods = (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${name}` })).items;
  const evicted: string[] = [];
  for (const pod of pods) {
    const podName = pod.metadata?.name ?? '';
    const namespace = pod.metadata?.namespace ?? '';
    await core.createNamespacedPodEviction({ name: podName, namespace, body: { metadata: { name: podName, namespace } } });
    evicted.push(podName);
  }
  return evicted;
}

// --- Deployments --------------------------------------------------------------------------------

export interface DeploymentOptions {
  readonly replicas: number;
  readonly maxUnavailable?: number;
  readonly maxSurge?: number;
  readonly terminationGracePeriodSeconds?: number;
  /** Merged into the pod spec (node selectors, tolerations). */
  readonly podSpec?: Record<string, unknown>;
}

/** A Deployment of pods labelled app=`name` with one container port named `http` (8080). */
export async function createDeployment(apps: AppsV1Api, namespace: string, name: string, o: DeploymentOptions): Promise<void> {
  await apps.createNamespacedDeployment({
    namespace,
    body: {
      metadata: { name },
      spec: {
        replicas: o.replicas,
        selector: { matchLabels: { app: name } },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: o.maxUnavailable ?? 0, maxSurge: o.maxSurge ?? 2 } },
        template: {
          metadata: { labels: { app: name } },
          spec: {
            containers: [{ name: 'app', image: `registry.invalid/${name}:1`, ports: [{ name: 'http', containerPort: 8080 }] }],
            terminationGracePeriodSeconds: o.terminationGracePeriodSeconds ?? 10,
            ...o.podSpec,
          },
        },
      },
    },
  });
}

export async function scaleDeployment(apps: AppsV1Api, namespace: string, name: string, replicas: number): Promise<void> {
  await apps.patchNamespacedDeployment(
    { namespace, name, body: { spec: { replicas } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/** What `kubectl rollout restart` does: a new pod template annotation, hence a new ReplicaSet. */
export async function restartDeployment(apps: AppsV1Api, namespace: string, name: string): Promise<void> {
  await apps.patchNamespacedDeployment(
    {
      namespace,
      name,
      body: { spec: { template: { metadata: { annotations: { 'kube-registrar.test/restartedAt': new Date().toISOString() } } } } },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

export function isPodReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && !pod.metadata?.deletionTimestamp;
}

// --- the pods, as a watch sees them -------------------------------------------------------------

/** One pod's life as the test's pod watch saw it; times are Date.now() of this process. */
export interface PodLife {
  readonly name: string;
  readonly uid: string;
  node: string;
  ip: string;
  templateHash: string;
  /** Ready and not terminating now. */
  ready: boolean;
  /** First seen Ready. */
  readyAt?: number;
  /** First seen no longer Ready after it was (a NotReady node marks its pods so), or terminating. */
  unreadyAt?: number;
  /** First seen with a deletionTimestamp. */
  terminatingAt?: number;
  goneAt?: number;
}

/** When a pod stopped serving: marked unready or terminating, whichever was seen first. */
export function stoppedServingAt(p: PodLife): number | undefined {
  const times = [p.unreadyAt, p.terminatingAt].filter((t): t is number => t !== undefined);
  return times.length === 0 ? undefined : Math.min(...times);
}

/** Every pod labelled app=`app` in a namespace, followed by a watch from a list onwards. */
export class PodWatch {
  readonly pods = new Map<string, PodLife>();
  #abort: AbortController | undefined;
  #stopped = false;
  readonly #kc: KubeConfig;
  readonly #namespace: string;
  readonly #app: string;

  private constructor(kc: KubeConfig, namespace: string, app: string) {
    this.#kc = kc;
    this.#namespace = namespace;
    this.#app = app;
  }

  static async start(kc: KubeConfig, namespace: string, app: string): Promise<PodWatch> {
    const w = new PodWatch(kc, namespace, app);
    await w.#begin();
    return w;
  }

  async #begin(): Promise<void> {
    const list = await this.#kc
      .makeApiClient(CoreV1Api)
      .listNamespacedPod({ namespace: this.#namespace, labelSelector: `app=${this.#app}` });
    const now = Date.now();
    const seen = new Set<string>();
    for (const pod of list.items) {
      this.#observe(pod, now);
      seen.add(pod.metadata?.uid ?? '');
    }
    for (const life of this.pods.values()) if (!seen.has(life.uid) && life.goneAt === undefined) life.goneAt = now;
    this.#abort = await new Watch(this.#kc).watch(
      `/api/v1/namespaces/${this.#namespace}/pods`,
      { labelSelector: `app=${this.#app}`, resourceVersion: list.metadata?.resourceVersion ?? '' },
      (phase: string, pod: V1Pod) => {
        if (phase === 'DELETED') {
          this.#observe(pod, Date.now());
          const life = this.pods.get(pod.metadata?.uid ?? '');
          if (life && life.goneAt === undefined) life.goneAt = Date.now();
        } else if (phase === 'ADDED' || phase === 'MODIFIED') this.#observe(pod, Date.now());
      },
      () => {
        // The apiserver ends watches now and then: list again and go on, unless stopped.
        if (!this.#stopped) void this.#begin().catch(() => undefined);
      },
    );
  }

  #observe(pod: V1Pod, at: number): void {
    const uid = pod.metadata?.uid ?? '';
    let life = this.pods.get(uid);
    if (life === undefined) {
      life = { name: pod.metadata?.name ?? '', uid, node: '', ip: '', templateHash: '', ready: false };
      this.pods.set(uid, life);
    }
    life.node = pod.spec?.nodeName ?? life.node;
    life.ip = pod.status?.podIP ?? life.ip;
    life.templateHash = pod.metadata?.labels?.['pod-template-hash'] ?? life.templateHash;
    const ready = isPodReady(pod);
    if (ready && life.readyAt === undefined) life.readyAt = at;
    if (!ready && life.readyAt !== undefined && life.unreadyAt === undefined) life.unreadyAt = at;
    if (pod.metadata?.deletionTimestamp && life.terminatingAt === undefined) life.terminatingAt = at;
    life.ready = ready;
  }

  /** Pods that exist now (not seen deleted). */
  live(): PodLife[] {
    return [...this.pods.values()].filter((p) => p.goneAt === undefined);
  }

  /** Pods Ready now. */
  ready(): PodLife[] {
    return this.live().filter((p) => p.ready);
  }

  /**
   * The Ready pods when exactly `replicas` pods exist, all Ready (none terminating), `accept`
   * holds of them, and every one of `registries` holds exactly their IPs; otherwise undefined.
   */
  settled(
    replicas: number,
    registries: readonly RegistryWatch[],
    accept: (ready: PodLife[]) => boolean = () => true,
  ): PodLife[] | undefined {
    const ready = this.ready();
    if (this.live().length !== replicas || ready.length !== replicas || !accept(ready)) return undefined;
    const ips = JSON.stringify(ready.map((p) => p.ip).sort());
    return registries.every((r) => JSON.stringify(r.sorted()) === ips) ? ready : undefined;
  }

  stop(): void {
    this.#stopped = true;
    this.#abort?.abort();
  }
}

// --- the registry, as a consumer sees it --------------------------------------------------------

/** One change of the registry's entries as its watcher saw it. */
export interface RegistryEvent {
  readonly at: number;
  /** add: a new address; remove: an address gone; rewrite: an entry present written again. */
  readonly kind: 'add' | 'remove' | 'rewrite';
  /** The instance's IP. */
  readonly ip: string;
}

/** The instances of one service in a registry, by IP, and every change to them since start. */
export abstract class RegistryWatch {
  readonly ips = new Set<string>();
  readonly events: RegistryEvent[] = [];
  /** The fewest instances held since the last mark(). */
  min = Number.POSITIVE_INFINITY;

  /** Records one change; the count is checked by settle(), once per consistent state. */
  protected record(kind: RegistryEvent['kind'], ip: string): void {
    if (kind === 'remove') this.ips.delete(ip);
    else this.ips.add(ip);
    this.events.push({ at: Date.now(), kind, ip });
  }

  /**
   * Ends a group of changes a consumer sees at once (one etcd revision, one Consul answer): only
   * the state after it counts towards the fewest instances held.
   */
  protected settle(): void {
    this.min = Math.min(this.min, this.ips.size);
  }

  /** Starts counting the fewest instances from now. */
  mark(): void {
    this.min = this.ips.size;
  }

  sorted(): string[] {
    return [...this.ips].sort();
  }

  abstract stop(): Promise<void>;
}

/** A watch of the etcd keys under `dir` (one per instance, `<dir><ip>:<port>`). */
export class EtcdRegistryWatch extends RegistryWatch {
  /** Puts and deletes under the dir, for counting writes. */
  puts = 0;
  deletes = 0;
  #watcher: Watcher | undefined;

  static async start(etcd: Etcd3, dir: string): Promise<EtcdRegistryWatch> {
    const w = new EtcdRegistryWatch();
    const ipOf = (key: string): string => key.slice(dir.length).replace(/:\d+$/, '');
    const res = await etcd.getAll().prefix(dir).exec();
    for (const kv of res.kvs) w.ips.add(ipOf(kv.key.toString()));
    // From the revision read on: no change between the read and the watch goes unseen.
    w.#watcher = await etcd
      .watch()
      .prefix(dir)
      .startRevision(String(Number(res.header.revision) + 1))
      .create();
    // One transaction is one revision, which etcd never splits across watch responses: its
    // changes are applied together, as a consumer reading at any revision sees them.
    w.#watcher.on('data', (res) => {
      let revision: string | undefined;
      for (const event of res.events) {
        if (revision !== undefined && event.kv.mod_revision !== revision) w.settle();
        revision = event.kv.mod_revision;
        const ip = ipOf(event.kv.key.toString());
        if (event.type === 'Put') {
          w.puts++;
          w.record(w.ips.has(ip) ? 'rewrite' : 'add', ip);
        } else {
          w.deletes++;
          w.record('remove', ip);
        }
      }
      w.settle();
    });
    return w;
  }

  async stop(): Promise<void> {
    await this.#watcher?.cancel();
  }
}

/**
 * Blocking queries on a Consul service's passing instances, as a consumer of Consul follows them
 * (`/v1/health/service/<name>?passing&index=…`). Consul answers with the state at its index, so
 * changes closer together than one answer show as one.
 */
export class ConsulRegistryWatch extends RegistryWatch {
  readonly #abort = new AbortController();
  #loop: Promise<void> | undefined;

  static async start(address: string, service: string): Promise<ConsulRegistryWatch> {
    const w = new ConsulRegistryWatch();
    const first = await w.#query(address, service, 0);
    for (const ip of first.ips) w.ips.add(ip);
    w.#loop = w.#follow(address, service, first.index);
    return w;
  }

  async #query(address: string, service: string, index: number): Promise<{ index: number; ips: Set<string> }> {
    const res = await fetch(`${address}/v1/health/service/${encodeURIComponent(service)}?passing=true&index=${index}&wait=5s`, {
      signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(30_000)]),
    });
    if (!res.ok) throw new Error(`GET /v1/health/service/${service}: ${res.status} ${await res.text()}`);
    const body = (await res.json()) as { Service: { Address: string } }[];
    return { index: Number(res.headers.get('X-Consul-Index') ?? '0'), ips: new Set(body.map((e) => e.Service.Address)) };
  }

  async #follow(address: string, service: string, from: number): Promise<void> {
    let index = from;
    while (!this.#abort.signal.aborted) {
      let answer;
      try {
        answer = await this.#query(address, service, index);
      } catch {
        if (this.#abort.signal.aborted) return;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      // An index that goes backwards means start over (Consul's documented rule).
      index = answer.index < index ? 0 : answer.index;
      for (const ip of [...this.ips]) if (!answer.ips.has(ip)) this.record('remove', ip);
      for (const ip of answer.ips) if (!this.ips.has(ip)) this.record('add', ip);
      this.settle();
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}

/**
 * Bulk Kubernetes fixtures for the benchmarks: namespaces, Registries, ServiceInstances and pods
 * created with bounded concurrency through one set of API clients, and pod readiness set through
 * the status subresource (the bed has no kubelet). Every call retries what the apiserver sheds
 * under load (429, 5xx, resets), because a fixture that fails half-way spoils the whole run.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, Watch, type KubeConfig } from '@kubernetes/client-node';
import { OperatorKubeConfig } from '../../src/kube/kube-config.ts';
import { mapBounded } from './stats.ts';

const GROUP = 'registrar.dev';
const VERSION = 'v1alpha1';
const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** Requests in flight at once while building fixtures: well under the apiserver's max-in-flight limits. */
export const FIXTURE_CONCURRENCY = 32;

/** The IP of the i-th benchmark endpoint (10.0.0.0/8, never .0 or .255 in the last octet). */
export function benchIp(i: number, block = 0): string {
  const n = i + Math.floor(i / 254) * 2 + 1;
  return `10.${(block * 16 + ((n >> 16) & 15)) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

function code(err: unknown): number | undefined {
  const c = (err as { code?: unknown } | undefined)?.code;
  return typeof c === 'number' ? c : undefined;
}

function transient(err: unknown): boolean {
  const c = code(err);
  if (c === 429 || (c !== undefined && c >= 500)) return true;
  const text = err instanceof Error ? `${err.message} ${String((err.cause as Error | undefined)?.message ?? '')}` : String(err);
  return c === undefined && /ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|socket hang up|other side closed|fetch failed/i.test(text);
}

/** Runs `call`, retrying transient apiserver failures with a short backoff. */
export async function retrying<T>(what: string, call: () => Promise<T>, attempts = 8): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await call();
    } catch (err: unknown) {
      if (i >= attempts || !transient(err)) throw new Error(`${what} failed after ${i} attempt(s)`, { cause: err });
      await sleep(Math.min(2000, 50 * 2 ** i));
    }
  }
}

/** A ServiceInstance to create. */
export interface ServiceInstanceFixture {
  readonly name: string;
  readonly spec: Record<string, unknown>;
}

/** A pod to create; `ip` set means it is made Ready with that IP. */
export interface PodFixture {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly ip?: string;
}

/** The fixtures' API clients for one bed. */
export class BenchKube {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;

  constructor(kubeconfigFile: string) {
    // The operator's KubeConfig: one connection pool (else every fixture request pays its own TLS
    // handshake) and a deadline generous enough for lists of tens of thousands of pods.
    this.kc = new OperatorKubeConfig(120_000);
    this.kc.loadFromFile(kubeconfigFile);
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.custom = this.kc.makeApiClient(CustomObjectsApi);
  }

  /** Creates namespaces with labels. */
  async createNamespaces(names: readonly string[], labels: Record<string, string>): Promise<void> {
    await mapBounded(names, 8, (name) =>
      retrying(`create namespace ${name}`, () => this.core.createNamespace({ body: { metadata: { name, labels } } })),
    );
  }

  /** Creates a cluster-scoped Registry. */
  async createRegistry(name: string, spec: Record<string, unknown>): Promise<void> {
    await retrying(`create Registry ${name}`, () =>
      this.custom.createClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: 'registries',
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'Registry', metadata: { name }, spec },
      }),
    );
  }

  /** Creates ServiceInstances in one namespace, `FIXTURE_CONCURRENCY` at a time. */
  async createServiceInstances(namespace: string, items: readonly ServiceInstanceFixture[]): Promise<void> {
    await mapBounded(items, FIXTURE_CONCURRENCY, (si) =>
      retrying(`create ServiceInstance ${namespace}/${si.name}`, () =>
        this.custom.createNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          plural: 'serviceinstances',
          namespace,
          body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'ServiceInstance', metadata: { name: si.name }, spec: si.spec },
        }),
      ),
    );
  }

  /** Creates pods, then sets the Ready ones' status; `FIXTURE_CONCURRENCY` requests at a time. */
  async createPods(namespace: string, pods: readonly PodFixture[]): Promise<void> {
    await mapBounded(pods, FIXTURE_CONCURRENCY, async (p) => {
      await this.createPod(namespace, p);
      if (p.ip !== undefined) await this.setPodReady(namespace, p.name, p.ip, true);
    });
  }

  /** Creates one pod (never started: the bed has no kubelet). */
  async createPod(namespace: string, p: PodFixture): Promise<void> {
    await retrying(`create pod ${namespace}/${p.name}`, () =>
      this.core.createNamespacedPod({
        namespace,
        body: {
          metadata: { name: p.name, labels: p.labels },
          spec: {
            containers: [{ name: 'app', image: 'registry.invalid/app:1', ports: [{ name: 'http', containerPort: 8080 }] }],
            terminationGracePeriodSeconds: 0,
          },
        },
      }),
    );
  }

  /** Sets a pod's Ready condition and IP through the status subresource, as a kubelet would. */
  async setPodReady(namespace: string, name: string, ip: string, ready: boolean): Promise<void> {
    await retrying(`set pod ${namespace}/${name} ready=${String(ready)}`, () =>
      this.core.patchNamespacedPodStatus(
        {
          namespace,
          name,
          body: {
            status: {
              phase: 'Running',
              podIP: ip,
              podIPs: [{ ip }],
              conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: new Date() }],
            },
          },
        },
        MERGE,
      ),
    );
  }

  /** Deletes a pod at once (grace period 0). */
  async deletePod(namespace: string, name: string): Promise<void> {
    await retrying(`delete pod ${namespace}/${name}`, () => this.core.deleteNamespacedPod({ namespace, name, gracePeriodSeconds: 0 }));
  }

  /** Merge-patches a ServiceInstance's spec. */
  async patchServiceInstance(namespace: string, name: string, spec: Record<string, unknown>): Promise<void> {
    await retrying(`patch ServiceInstance ${namespace}/${name}`, () =>
      this.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, plural: 'serviceinstances', namespace, name, body: { spec } },
        MERGE,
      ),
    );
  }

  /** Every object of a list path, paged. */
  async listAll<T>(
    list: (cont: string | undefined) => Promise<{ items: T[]; metadata?: { _continue?: string; resourceVersion?: string } }>,
  ): Promise<{ items: T[]; resourceVersion: string }> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await retrying('list', () => list(cont));
      items.push(...page.items);
      cont = page.metadata?._continue || undefined;
      rv = page.metadata?.resourceVersion ?? rv;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  /** Every ServiceInstance in the cluster (as plain objects). */
  async listServiceInstances(): Promise<{ items: ServiceInstanceView[]; resourceVersion: string }> {
    return this.listAll(async (cont) => {
      // Custom objects come back as plain JSON, whose list metadata spells the token `continue`
      // (the typed lists' `_continue` is the client's renaming): without this only the first page is read.
      const page = (await this.custom.listClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: 'serviceinstances',
        limit: 500,
        _continue: cont,
      })) as { items: ServiceInstanceView[]; metadata?: { continue?: string; resourceVersion?: string } };
      return { items: page.items, metadata: { _continue: page.metadata?.continue, resourceVersion: page.metadata?.resourceVersion } };
    });
  }

  /**
   * Watches `path` from `resourceVersion` and calls `onEvent` with the arrival time of each event;
   * resolves a function that stops the watch. Restarts a watch the server ends, from the last
   * version seen, so a long measurement window is never left blind.
   */
  async watch(path: string, resourceVersion: string, onEvent: (phase: string, obj: unknown, at: number) => void): Promise<() => void> {
    const watch = new Watch(this.kc);
    let rv = resourceVersion;
    let stopped = false;
    let abort: AbortController | undefined;
    const start = async (): Promise<void> => {
      abort = await watch.watch(
        path,
        { resourceVersion: rv, allowWatchBookmarks: true },
        (phase: string, obj: unknown) => {
          const at = performance.now();
          const v = (obj as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
          if (v) rv = v;
          if (phase !== 'BOOKMARK') onEvent(phase, obj, at);
        },
        () => {
          if (!stopped) setTimeout(() => void start().catch(() => undefined), 100);
        },
      );
    };
    await start();
    return () => {
      stopped = true;
      abort?.abort();
    };
  }
}

/** What the benchmarks read from a ServiceInstance. */
export interface ServiceInstanceView {
  metadata: { name: string; namespace: string; generation?: number; resourceVersion?: string; finalizers?: string[] };
  spec: {
    service: string;
    weight?: number;
    selector?: { matchLabels?: Record<string, string> };
    endpoints?: { address: string; port?: number }[];
    port?: number | string;
  };
  status?: {
    observedGeneration?: number;
    conditions?: { type: string; status: string }[];
    endpoints?: { total: number; ready: number; registered: number };
  };
}

/** Whether a ServiceInstance's status says it converged with `expected` registered endpoints. */
export function statusConverged(si: ServiceInstanceView, expected: number): boolean {
  const s = si.status;
  if (!s || s.observedGeneration !== si.metadata.generation) return false;
  if (s.endpoints?.registered !== expected || s.endpoints.ready !== expected) return false;
  const ready = s.conditions?.find((c) => c.type === 'Registered');
  return ready?.status === 'True';
}

/** Runs the tasks `FIXTURE_CONCURRENCY` at a time. */
export async function mapAll(tasks: readonly (() => Promise<void>)[]): Promise<void> {
  await mapBounded(tasks, FIXTURE_CONCURRENCY, (t) => t());
}

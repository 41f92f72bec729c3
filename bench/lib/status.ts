/**
 * ServiceInstance status from the harness's side: a tracker that follows status through a watch
 * and records when every one of them has converged (observed its generation and reports the
 * expected number of registered endpoints), and the raw limit of the status side: how fast the
 * same apiserver takes merge patches of the status subresource with the status the operator writes.
 */
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { FINALIZER, type ServiceInstanceStatus } from '../../src/api/v1alpha1/types.ts';
import { retrying, statusConverged, type BenchKube, type ServiceInstanceView } from './kube.ts';
import { mapBounded } from './stats.ts';

const GROUP = 'registrar.dev';
const VERSION = 'v1alpha1';
const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** Tracks convergence of a known set of ServiceInstances. */
export class StatusTracker {
  /** performance.now() when all had converged at once for the first time; NaN until then. */
  convergedAt = Number.NaN;
  /** performance.now() when all carried the operator's finalizer for the first time; NaN until then. */
  finalizedAt = Number.NaN;
  readonly #expected: ReadonlyMap<string, number>;
  readonly #converged = new Set<string>();
  readonly #finalized = new Set<string>();
  #stop: (() => void) | undefined;

  private constructor(expected: ReadonlyMap<string, number>) {
    this.#expected = expected;
  }

  /** Lists the ServiceInstances, then watches them; `expected` maps `namespace/name` to registered endpoints. */
  static async start(kube: BenchKube, expected: ReadonlyMap<string, number>): Promise<StatusTracker> {
    const t = new StatusTracker(expected);
    const { items, resourceVersion } = await kube.listServiceInstances();
    for (const si of items) t.#observe(si, performance.now());
    t.#stop = await kube.watch('/apis/registrar.dev/v1alpha1/serviceinstances', resourceVersion, (phase, obj, at) => {
      if (phase === 'ADDED' || phase === 'MODIFIED') t.#observe(obj as ServiceInstanceView, at);
    });
    return t;
  }

  #observe(si: ServiceInstanceView, at: number): void {
    const key = `${si.metadata.namespace}/${si.metadata.name}`;
    const want = this.#expected.get(key);
    if (want === undefined) return;
    if (statusConverged(si, want)) this.#converged.add(key);
    else this.#converged.delete(key);
    if (Number.isNaN(this.convergedAt) && this.#converged.size === this.#expected.size) this.convergedAt = at;
    if (si.metadata.finalizers?.includes(FINALIZER)) this.#finalized.add(key);
    else this.#finalized.delete(key);
    if (Number.isNaN(this.finalizedAt) && this.#finalized.size === this.#expected.size) this.finalizedAt = at;
  }

  /** How many have converged now. */
  get converged(): number {
    return this.#converged.size;
  }

  /** How many are tracked. */
  get total(): number {
    return this.#expected.size;
  }

  /** Stops the watch. */
  stop(): void {
    this.#stop?.();
  }
}

/** A ServiceInstance whose status the raw measurement writes. */
export interface StatusTarget {
  readonly namespace: string;
  readonly name: string;
  readonly service: string;
  readonly generation: number;
  /** Endpoints it registers (its converged status reports this many total, ready and registered). */
  readonly endpoints: number;
}

/**
 * The status the operator writes for a converged ServiceInstance registered in one etcd Registry
 * (service-instance-reconciler's #status: two conditions, the ready ratio, the counts and one
 * registration with its sync time), so raw patches have the operator's size and shape.
 */
export function convergedStatus(t: StatusTarget, registry: string, now: Date): ServiceInstanceStatus {
  const at = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const gen = { observedGeneration: t.generation };
  const n = t.endpoints;
  return {
    ...gen,
    conditions: [
      {
        type: 'Registered',
        status: 'True',
        reason: 'Synced',
        message: `${n} endpoint(s) registered in ${registry}`,
        ...gen,
        lastTransitionTime: at,
      },
      {
        type: 'Ready',
        status: 'True',
        reason: 'Synced',
        message: `${n}/${n} endpoint(s) ready and registered`,
        ...gen,
        lastTransitionTime: at,
      },
    ],
    readyRatio: `${n}/${n}`,
    endpoints: { total: n, ready: n, registered: n },
    registrations: [{ registry, namespace: t.namespace, service: t.service, entries: n, lastSyncTime: at, message: 'in sync' }],
  };
}

/** Result of {@link rawStatusPatches}. */
export interface RawStatusResult {
  readonly patches: number;
  readonly concurrency: number;
  readonly seconds: number;
  readonly patchesPerSecond: number;
}

async function patchStatus(kube: BenchKube, t: StatusTarget, status: unknown): Promise<void> {
  await retrying(`patch the status of ServiceInstance ${t.namespace}/${t.name}`, () =>
    kube.custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, plural: 'serviceinstances', namespace: t.namespace, name: t.name, body: { status } },
      MERGE,
    ),
  );
}

/**
 * The raw limit of the status side: one merge patch of the status subresource per target (the
 * body the operator sends for an object without status), `concurrency` in flight, through the
 * harness's client (one connection pool, as the operator's, warmed by as many reads first), as
 * fast as the apiserver answers.
 */
export async function rawStatusPatches(
  kube: BenchKube,
  targets: readonly StatusTarget[],
  registry: string,
  concurrency: number,
): Promise<RawStatusResult> {
  const bodies = targets.map((t) => convergedStatus(t, registry, new Date()));
  // Connections opened before the clock starts: by the time the operator's caches have synced,
  // its own connections are open too (it has listed everything), so neither side pays handshakes.
  await mapBounded(
    Array.from({ length: targets.length === 0 ? 0 : concurrency }, (_, i) => targets[i % targets.length] as StatusTarget),
    concurrency,
    (t) =>
      retrying(`read ServiceInstance ${t.namespace}/${t.name}`, () =>
        kube.custom.getNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          plural: 'serviceinstances',
          namespace: t.namespace,
          name: t.name,
        }),
      ),
  );
  const started = performance.now();
  await mapBounded(targets, concurrency, (t, i) => patchStatus(kube, t, bodies[i]));
  const seconds = (performance.now() - started) / 1000;
  return { patches: targets.length, concurrency, seconds, patchesPerSecond: targets.length / seconds };
}

/**
 * Removes the status of every target again (a merge patch of `status: null`), then checks that
 * none has one left, so the operator starts from objects exactly as created. Throws if any kept it.
 */
export async function clearStatuses(kube: BenchKube, targets: readonly StatusTarget[], concurrency: number): Promise<void> {
  await mapBounded(targets, concurrency, (t) => patchStatus(kube, t, null));
  const wanted = new Set(targets.map((t) => `${t.namespace}/${t.name}`));
  const left = (await kube.listServiceInstances()).items.filter(
    (si) => wanted.has(`${si.metadata.namespace}/${si.metadata.name}`) && si.status !== undefined && Object.keys(si.status).length > 0,
  );
  if (left.length > 0)
    throw new Error(
      `${left.length} ServiceInstance(s) kept a status after the raw status patches were undone (e.g. ${left[0]?.metadata.namespace}/${left[0]?.metadata.name}); ` +
        'the operator would start from converged statuses and the cold sync would not be cold: check that the status subresource accepts a merge patch of status: null',
    );
}

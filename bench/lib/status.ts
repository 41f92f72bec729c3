/**
 * Follows ServiceInstance status through a watch and records when every one of them has
 * converged (observed its generation and reports the expected number of registered endpoints).
 */
import { statusConverged, type BenchKube, type ServiceInstanceView } from './kube.ts';

/** Tracks convergence of a known set of ServiceInstances. */
export class StatusTracker {
  /** performance.now() when all had converged at once for the first time; NaN until then. */
  convergedAt = Number.NaN;
  readonly #expected: ReadonlyMap<string, number>;
  readonly #converged = new Set<string>();
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

/**
 * Writes to our custom objects: finalizers with optimistic concurrency, and status through the
 * status subresource (so the write never bumps metadata.generation or retriggers a reconcile).
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';

/** Identifies a custom resource type. */
export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
}

/** The metadata this module reads from an object. */
export interface WritableObject {
  readonly metadata?: {
    readonly name?: string;
    readonly namespace?: string;
    readonly resourceVersion?: string;
    readonly finalizers?: readonly string[];
  };
}

/** Whether an API error is 404 Not Found. */
export function isNotFound(err: unknown): boolean {
  return (err as { code?: unknown }).code === 404;
}

/** Whether an API error is 409 Conflict (stale resourceVersion). */
export function isConflict(err: unknown): boolean {
  return (err as { code?: unknown }).code === 409;
}

/** Finalizer and status writes for one namespaced or cluster-scoped custom resource type. */
export class CustomObjectWriter {
  readonly #api: CustomObjectsApi;
  readonly #type: ResourceType;

  constructor(kc: KubeConfig, type: ResourceType) {
    this.#api = kc.makeApiClient(CustomObjectsApi);
    this.#type = type;
  }

  async #patch(obj: WritableObject, body: unknown, status: boolean): Promise<unknown> {
    const name = obj.metadata?.name ?? '';
    const ns = obj.metadata?.namespace;
    const opts = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const base = { ...this.#type, name, body };
    if (ns) {
      return status
        ? this.#api.patchNamespacedCustomObjectStatus({ ...base, namespace: ns }, opts)
        : this.#api.patchNamespacedCustomObject({ ...base, namespace: ns }, opts);
    }
    return status ? this.#api.patchClusterCustomObjectStatus(base, opts) : this.#api.patchClusterCustomObject(base, opts);
  }

  /**
   * Sets the finalizer list, guarded by the object's resourceVersion: if the object changed since
   * it was read, the write fails with 409 and the caller's reconcile retries on fresh data.
   */
  async setFinalizers(obj: WritableObject, finalizers: readonly string[]): Promise<unknown> {
    return this.#patch(obj, { metadata: { finalizers: [...finalizers], resourceVersion: obj.metadata?.resourceVersion } }, false);
  }

  /** Adds a finalizer if missing; returns the updated object or undefined when nothing changed. */
  async addFinalizer(obj: WritableObject, finalizer: string): Promise<unknown> {
    const current = obj.metadata?.finalizers ?? [];
    if (current.includes(finalizer)) return undefined;
    return this.setFinalizers(obj, [...current, finalizer]);
  }

  /** Removes a finalizer if present; a 404 (object already gone) counts as done. */
  async removeFinalizer(obj: WritableObject, finalizer: string): Promise<void> {
    const current = obj.metadata?.finalizers ?? [];
    if (!current.includes(finalizer)) return;
    try {
      await this.setFinalizers(
        obj,
        current.filter((f) => f !== finalizer),
      );
    } catch (err: unknown) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** Replaces the status (merge patch of the whole status object through the status subresource). */
  async patchStatus(obj: WritableObject, status: unknown): Promise<void> {
    try {
      await this.#patch(obj, { status }, true);
    } catch (err: unknown) {
      if (!isNotFound(err)) throw err;
    }
  }
}

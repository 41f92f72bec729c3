/**
 * Writes to our custom objects: finalizers with optimistic concurrency, and status through the
 * status subresource (so the write never bumps metadata.generation or retriggers a reconcile).
 */
import { kubeRequest, PatchType, seg } from './api.ts';
import type { KubeConfig } from './client.ts';

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
  /** The status as last read; fields it has that a new status lacks are removed by patchStatus. */
  readonly status?: unknown;
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
  readonly #kc: KubeConfig;
  readonly #type: ResourceType;

  constructor(kc: KubeConfig, type: ResourceType) {
    this.#kc = kc;
    this.#type = type;
  }

  /** A merge patch of the object, or of its status subresource. */
  async #patch(obj: WritableObject, body: unknown, status: boolean): Promise<unknown> {
    const { group, version, plural } = this.#type;
    const ns = obj.metadata?.namespace;
    const path =
      `/apis/${seg(group)}/${seg(version)}/${ns ? `namespaces/${seg(ns)}/` : ''}${seg(plural)}/${seg(obj.metadata?.name ?? '')}` +
      (status ? '/status' : '');
    return kubeRequest(this.#kc, { method: 'PATCH', path, body, contentType: PatchType.Merge });
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
      await this.#patch(obj, { status: withRemovals(obj.status, status) }, true);
    } catch (err: unknown) {
      if (!isNotFound(err)) throw err;
    }
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A merge patch that turns `previous` into `next`: `next` with an explicit null for every field of
 * `previous` (at any depth of nested objects) that `next` no longer has. A merge patch leaves
 * absent fields alone, so without the nulls a field the status stopped reporting (e.g.
 * `status.health` once the health check is removed) would stay for ever.
 */
export function withRemovals(previous: unknown, next: unknown): unknown {
  if (!isPlainObject(previous) || !isPlainObject(next)) return next;
  const patch: Record<string, unknown> = {};
  for (const key of Object.keys(previous)) if (!Object.hasOwn(next, key)) patch[key] = null;
  for (const [key, value] of Object.entries(next)) patch[key] = withRemovals(previous[key], value);
  return patch;
}

/**
 * Ownership as a wrapper around a backend, as external-dns's TXT registry does it: backends store
 * and return owners, this wrapper decides what one ServiceInstance may see and touch.
 */
import { entryKey, sameOwner } from '../plan/plan.ts';
import type { Changes, Owner, Registry, RegistryEntry, Scope } from './types.ts';

/**
 * Owner reported by backends for entries that carry no (readable) owner, e.g. a hand-written
 * `host:port` value. It matches no real owner, so such entries are never modified or deleted.
 */
export const UNKNOWN_OWNER: Owner = Object.freeze({ clusterId: '', namespace: '', name: '' });

/** Human-readable owner for messages: `cluster <id>, ServiceInstance <ns>/<name>`. */
export function describeOwner(owner: Owner): string {
  if (sameOwner(owner, UNKNOWN_OWNER)) return 'nobody known (it carries no kube-registrar owner)';
  return `cluster ${JSON.stringify(owner.clusterId)}, ServiceInstance ${owner.namespace}/${owner.name}`;
}

/** What the wrapper was asked to do with an entry it refused to touch. */
export type ConflictOperation = 'create' | 'update' | 'delete';

/**
 * A change refused because the entry at its key belongs to someone else. Plain data, meant for the
 * ServiceInstance's status and events.
 */
export interface ForeignEntryConflict {
  readonly operation: ConflictOperation;
  /** The entry the plan wanted to write (create/update) or remove (delete). */
  readonly entry: RegistryEntry;
  /** Owner of what is at that key now (or claimed by the change itself). */
  readonly foreignOwner: Owner;
  /** User-facing: what collided and what to do about it. */
  readonly message: string;
}

/** Result of {@link OwnedRegistry.applyChanges}: what was handed to the backend and what was refused. */
export interface OwnedApplyResult {
  readonly applied: Changes;
  readonly conflicts: readonly ForeignEntryConflict[];
}

/** Whether `entry` belongs to `owner`. */
export function isOwnedBy(entry: RegistryEntry, owner: Owner): boolean {
  return sameOwner(entry.owner, owner);
}

function place(entry: RegistryEntry): string {
  return `${entry.registryNamespace}/${entry.endpoint.service}/${entry.endpoint.instanceId}`;
}

function conflict(operation: ConflictOperation, entry: RegistryEntry, foreignOwner: Owner, owner: Owner): ForeignEntryConflict {
  const verb = { create: 'register', update: 'update', delete: 'remove' }[operation];
  const message =
    `cannot ${verb} registry entry ${place(entry)}: it belongs to ${describeOwner(foreignOwner)}, ` +
    `not to ${describeOwner(owner)}, and kube-registrar never modifies entries it does not own. ` +
    `Remove the other entry by hand if it is stale, or change this ServiceInstance's service name or endpoints so they do not collide.`;
  return { operation, entry, foreignOwner, message };
}

function scopeKey(scope: Scope): string {
  return JSON.stringify([scope.registryNamespace, scope.service]);
}

/**
 * The part of `changes` that touches only `owner`'s entries, given what is in the registry at
 * each key (`existing`, by {@link entryKey}, every owner's entries), and the rest as conflicts.
 * Deletes of keys that are already empty are dropped.
 */
export function partitionByOwner(changes: Changes, owner: Owner, existing: ReadonlyMap<string, RegistryEntry>): OwnedApplyResult {
  const conflicts: ForeignEntryConflict[] = [];
  // Foreign owner of the key's current occupant, or of the change itself, or undefined if clear.
  const foreignAt = (entry: RegistryEntry): Owner | undefined => {
    if (!isOwnedBy(entry, owner)) return entry.owner;
    const there = existing.get(entryKey(entry));
    return there !== undefined && !isOwnedBy(there, owner) ? there.owner : undefined;
  };

  const create: RegistryEntry[] = [];
  for (const entry of changes.create) {
    const foreign = foreignAt(entry);
    if (foreign === undefined) create.push(entry);
    else conflicts.push(conflict('create', entry, foreign, owner));
  }

  const updateOld: RegistryEntry[] = [];
  const updateNew: RegistryEntry[] = [];
  changes.updateNew.forEach((next, i) => {
    const old = changes.updateOld[i] ?? next;
    const foreign = foreignAt(old) ?? foreignAt(next);
    if (foreign === undefined) {
      updateOld.push(old);
      updateNew.push(next);
    } else {
      conflicts.push(conflict('update', next, foreign, owner));
    }
  });

  const remove: RegistryEntry[] = [];
  for (const entry of changes.delete) {
    const foreign = foreignAt(entry);
    if (foreign !== undefined) conflicts.push(conflict('delete', entry, foreign, owner));
    else if (existing.has(entryKey(entry))) remove.push(entry);
  }

  return { applied: { create, updateOld, updateNew, delete: remove }, conflicts };
}

/**
 * One owner's view of a backend. `records()` shows only the owner's entries; `applyChanges()`
 * looks at what is in the registry at every key it is about to touch (as this view's last
 * `records()` of that scope read it, or by reading it now) and refuses, with a
 * {@link ForeignEntryConflict}, any change that would overwrite or remove someone else's entry. The
 * rest is applied. A view lives for one reconcile: read, plan, apply.
 *
 * The check and the write are not atomic: a foreign writer landing between them is overwritten, and
 * the next reconcile reports the collision. Closing is the backend's business, since one backend
 * serves many owners.
 */
export class OwnedRegistry {
  readonly #backend: Registry;
  /** The owner this view acts for. */
  readonly owner: Owner;
  /** What the last records() call read per scope, every owner's entries: applyChanges checks against it. */
  readonly #read = new Map<string, readonly RegistryEntry[]>();

  constructor(backend: Registry, owner: Owner) {
    this.#backend = backend;
    this.owner = owner;
  }

  /** Entries under `scope` owned by this view's owner. */
  async records(scope: Scope): Promise<RegistryEntry[]> {
    const all = await this.#backend.records(scope);
    this.#read.set(scopeKey(scope), all);
    return all.filter((entry) => isOwnedBy(entry, this.owner));
  }

  /**
   * Applies the part of `changes` that touches only this owner's entries and reports the rest.
   * Deletes of keys that are already empty are dropped. Errors of the backend propagate unchanged.
   */
  async applyChanges(changes: Changes): Promise<OwnedApplyResult> {
    const result = partitionByOwner(changes, this.owner, await this.#existingAt(changes));
    const { applied } = result;
    if (applied.create.length + applied.updateNew.length + applied.delete.length > 0) await this.#backend.applyChanges(applied);
    return result;
  }

  async #existingAt(changes: Changes): Promise<Map<string, RegistryEntry>> {
    const scopes = new Map<string, Scope>();
    for (const entry of [...changes.create, ...changes.updateOld, ...changes.updateNew, ...changes.delete]) {
      const scope = { registryNamespace: entry.registryNamespace, service: entry.endpoint.service };
      scopes.set(scopeKey(scope), scope);
    }
    const byKey = new Map<string, RegistryEntry>();
    // A scope this view has just read (a reconcile reads, plans, then applies) is not read again.
    const reads = await Promise.all(
      [...scopes.entries()].map(async ([key, scope]) => this.#read.get(key) ?? (await this.#backend.records(scope))),
    );
    for (const entry of reads.flat()) byKey.set(entryKey(entry), entry);
    return byKey;
  }
}

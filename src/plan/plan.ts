/**
 * The plan: a pure diff between what a registry holds and what should be there.
 *
 * Modelled on external-dns's plan package: plain data in, plain data out, no I/O, so that most of
 * the sync logic can be tested with tables.
 */
import type { Changes, Owner, RegistryEntry } from '../registry/types.ts';

/**
 * How far the operator may go to make the registry match the desired state.
 * - `sync`: create, update and delete owned entries.
 * - `upsert-only`: create and update, never delete.
 */
export type Policy = 'sync' | 'upsert-only';

/** Input of {@link calculatePlan}. */
export interface PlanInput {
  /** Entries read from the registry, already filtered to those owned by `owner`. */
  readonly current: readonly RegistryEntry[];
  /** Entries that should be in the registry; every one must be owned by `owner`. */
  readonly desired: readonly RegistryEntry[];
  /** Owner on whose behalf the plan is made. */
  readonly owner: Owner;
  readonly policy: Policy;
}

/** Raised when the caller hands the plan desired entries that belong to someone else. */
export class PlanInputError extends Error {
  override readonly name = 'PlanInputError';
}

/**
 * Identity of an entry in a registry: (registryNamespace, service, instanceId). Two entries with the
 * same key occupy the same place in the registry.
 */
export function entryKey(entry: RegistryEntry): string {
  // JSON keeps the three parts apart whatever characters they contain.
  return JSON.stringify([entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId]);
}

/** Whether two owners denote the same cluster and ServiceInstance. */
export function sameOwner(a: Owner, b: Owner): boolean {
  return a.clusterId === b.clusterId && a.namespace === b.namespace && a.name === b.name;
}

function sameStringMap(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const aKeys = Object.keys(a);
  if (aKeys.length !== Object.keys(b).length) return false;
  return aKeys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/**
 * Whether two entries agree on every field that is written to a registry, so that replacing one by
 * the other would change nothing a consumer can see.
 */
export function sameEntry(a: RegistryEntry, b: RegistryEntry): boolean {
  const ea = a.endpoint;
  const eb = b.endpoint;
  return (
    a.registryNamespace === b.registryNamespace &&
    a.k8sNamespace === b.k8sNamespace &&
    sameOwner(a.owner, b.owner) &&
    ea.service === eb.service &&
    ea.instanceId === eb.instanceId &&
    ea.address === eb.address &&
    ea.port === eb.port &&
    ea.weight === eb.weight &&
    ea.source === eb.source &&
    sameStringMap(ea.tags, eb.tags) &&
    sameStringMap(ea.metadata, eb.metadata) &&
    ea.health?.status === eb.health?.status &&
    ea.health?.output === eb.health?.output
  );
}

function byKey(entries: readonly RegistryEntry[]): Map<string, RegistryEntry> {
  const map = new Map<string, RegistryEntry>();
  for (const entry of entries) {
    // First wins: two sources claiming one address:port must not make the plan flap between them.
    const key = entryKey(entry);
    if (!map.has(key)) map.set(key, entry);
  }
  return map;
}

function sortedByKey(entries: RegistryEntry[]): RegistryEntry[] {
  if (entries.length <= 1) return entries;
  // Sorted output makes batches, logs and tests deterministic.
  return entries
    .map((entry) => [entryKey(entry), entry] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, entry]) => entry);
}

/**
 * Computes the changes that turn `current` into `desired`.
 *
 * Entries are matched by {@link entryKey}. A desired entry with no current counterpart is created; a
 * current entry with no desired counterpart is deleted (unless the policy is `upsert-only`); a pair
 * that differs in any registered field, or whose current side is flagged `needsRewrite`, is an
 * update. Current entries not owned by `owner` are ignored,
 * so a caller that forgot to filter still cannot delete someone else's entry. When `desired` holds
 * the same key twice, the first occurrence wins. Output lists are sorted by key.
 *
 * @throws {PlanInputError} when a desired entry is owned by someone other than `owner`.
 */
export function calculatePlan(input: PlanInput): Changes {
  const { owner, policy } = input;
  for (const entry of input.desired) {
    if (!sameOwner(entry.owner, owner)) {
      throw new PlanInputError(
        `desired entry ${entryKey(entry)} is owned by ${JSON.stringify(entry.owner)}, ` +
          `not by ${JSON.stringify(owner)}: the plan only writes entries of its own owner`,
      );
    }
  }
  // Nothing there yet (a cold start, entries gone with their lease): everything desired is created.
  if (input.current.length === 0) {
    const create = input.desired.length <= 1 ? [...input.desired] : sortedByKey([...byKey(input.desired).values()]);
    return { create, updateOld: [], updateNew: [], delete: [] };
  }
  const current = byKey(input.current.filter((entry) => sameOwner(entry.owner, owner)));
  const desired = byKey(input.desired);

  const create: RegistryEntry[] = [];
  const updates: Array<readonly [RegistryEntry, RegistryEntry]> = [];
  const remove: RegistryEntry[] = [];

  for (const [key, want] of desired) {
    const have = current.get(key);
    if (have === undefined) create.push(want);
    else if (have.needsRewrite === true || !sameEntry(have, want)) updates.push([have, want]);
  }
  if (policy === 'sync') {
    for (const [key, have] of current) {
      if (!desired.has(key)) remove.push(have);
    }
  }

  const updateNew = sortedByKey(updates.map(([, want]) => want));
  const oldByKey = new Map(updates.map(([have]) => [entryKey(have), have] as const));
  const updateOld = updateNew.map((want) => oldByKey.get(entryKey(want)) as RegistryEntry);
  return { create: sortedByKey(create), updateOld, updateNew, delete: sortedByKey(remove) };
}

/** Whether a plan changes nothing. */
export function isEmptyPlan(changes: Changes): boolean {
  return changes.create.length === 0 && changes.updateNew.length === 0 && changes.delete.length === 0;
}

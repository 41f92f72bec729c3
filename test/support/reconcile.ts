/**
 * One reconcile of one scope, as the operator's controller does it, for tests that drive a
 * backend directly: the owner's records → plan → apply through the ownership wrapper.
 */
import { calculatePlan, isEmptyPlan, type Policy } from '../../src/plan/plan.ts';
import { OwnedRegistry, type ForeignEntryConflict } from '../../src/registry/owner.ts';
import type { Owner, Registry, RegistryEntry, Scope } from '../../src/registry/types.ts';

/** Converges `scope` of `backend` to `desired` as `owner`; resolves the changes refused as someone else's. */
export async function reconcileOnce(
  backend: Registry,
  owner: Owner,
  scope: Scope,
  desired: RegistryEntry[],
  policy: Policy = 'sync',
): Promise<readonly ForeignEntryConflict[]> {
  const owned = new OwnedRegistry(backend, owner);
  const current = await owned.records(scope);
  const changes = calculatePlan({ current, desired, owner, policy });
  if (isEmptyPlan(changes)) return [];
  return (await owned.applyChanges(changes)).conflicts;
}

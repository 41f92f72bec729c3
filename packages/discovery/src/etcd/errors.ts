/** Errors of self-registration in etcd. */
import { DiscoveryError } from '../errors.ts';
import type { EntryOwner } from './record.ts';

/** Who owns an entry, for messages. */
export function describeOwner(owner: EntryOwner | undefined): string {
  if (owner === undefined) return 'nobody known (its value carries no kube-registrar owner)';
  if (owner.clusterId.startsWith('process:')) return `the process registration ${owner.clusterId} (${owner.namespace}/${owner.name})`;
  return `cluster ${JSON.stringify(owner.clusterId)}, ServiceInstance ${owner.namespace}/${owner.name}`;
}

/**
 * `register()` found someone else's entry at the key it would write (the operator's, another
 * host's, or a hand-written one) and left it alone.
 */
export class EntryOwnedElsewhereError extends DiscoveryError {
  override name = 'EntryOwnedElsewhereError';
  /** The etcd key in question. */
  readonly key: string;
  /** Its owner, undefined when the entry carries none. */
  readonly owner: EntryOwner | undefined;

  constructor(key: string, owner: EntryOwner | undefined, self: EntryOwner) {
    super(
      `cannot register ${key}: the entry there belongs to ${describeOwner(owner)}, not to ${describeOwner(self)}, ` +
        'and register() never overwrites an entry it does not own. Register another address or port, ' +
        'or remove the other entry (its ServiceInstance, or the key by hand if it is stale).',
    );
    this.key = key;
    this.owner = owner;
  }
}

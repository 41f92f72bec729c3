/**
 * Reads of the etcd backend: the entries of a scope, decoded, with this cluster's entries that are
 * not as they would be written now marked `needsRewrite`; and every entry of this cluster. Each
 * read of a scope also refreshes the namespace's memory of owned keys and revisions.
 */
import { EtcdPermissionDeniedError } from 'etcd3';

import { UNKNOWN_OWNER } from '../owner.ts';
import type { RegistryEntry, Scope } from '../types.ts';
import type { StoredKeyValue } from './client.ts';
import { decodeEntry } from './codec.ts';
import type { EtcdBackendContext } from './context.ts';
import { describe, EtcdRegistryError } from './errors.ts';
import { EtcdKeyLayout } from './keys.ts';
import type { EtcdLeases } from './leases.ts';
import type { NamespaceState } from './namespace-state.ts';

/** An entry at a key whose value no format decodes: someone else's, so owned by nobody known. */
function unknownEntry(scope: Scope, instanceId: string): RegistryEntry {
  return {
    registryNamespace: scope.registryNamespace,
    k8sNamespace: '',
    owner: UNKNOWN_OWNER,
    endpoint: { service: scope.service, instanceId, address: '', port: 0, weight: 0, tags: {}, metadata: {}, source: '' },
  };
}

/**
 * Every entry under the scope, whoever owns it. This cluster's entries that are stored in another
 * format or are not attached to the namespace's live lease come back with `needsRewrite`. A
 * namespace whose lease is not settled yet adopts it through `leases` first.
 */
export async function readRecords(ctx: EtcdBackendContext, leases: EtcdLeases, scope: Scope): Promise<RegistryEntry[]> {
  const state = ctx.namespaces.use(scope.registryNamespace);
  try {
    // With the lease settled, reads need not wait for the namespace's writes and lease work.
    if (state.lease !== undefined && !state.lost) return await readScope(ctx, state, scope, state.lease);
    return await state.serial(async () => {
      const lease = await leases.ensure(state, false);
      return readScope(ctx, state, scope, lease);
    });
  } catch (err: unknown) {
    throw new EtcdRegistryError(`reading ${scope.registryNamespace}/${scope.service} from etcd failed: ${describe(err)}`, { cause: err });
  }
}

/**
 * Every entry of this cluster under the prefix, in every registry namespace the credentials may
 * list (else in the namespaces this backend has used).
 */
export async function readOwnedByCluster(ctx: EtcdBackendContext): Promise<RegistryEntry[]> {
  const { client, keys, clusterId } = ctx;
  const root = `${keys.prefix}/`;
  let namespaces: string[];
  try {
    const [found = []] = await client.rangePrefixes([root], { keysOnly: true });
    namespaces = [
      ...new Set(found.map((kv) => kv.key.slice(root.length).split('/')[0] ?? '').filter((ns) => ns !== '' && !ns.startsWith('_'))),
    ];
  } catch (err: unknown) {
    if (!(err instanceof EtcdPermissionDeniedError))
      throw new EtcdRegistryError(`listing registry namespaces under ${root} failed: ${describe(err)}`, { cause: err });
    namespaces = [...ctx.namespaces.keys()];
  }
  const out: RegistryEntry[] = [];
  for (const ns of namespaces) {
    let valuePrefix: string;
    let indexPrefix: string;
    try {
      valuePrefix = keys.namespacePrefix(ns);
      indexPrefix = keys.ownerIndexNamespacePrefix(ns);
    } catch {
      continue; // not a registry namespace this backend could have written
    }
    const [values = [], index = []] = await client.rangePrefixes([valuePrefix, indexPrefix]);
    const indexByKey = new Map(index.map((kv) => [kv.key.slice(indexPrefix.length), kv.value]));
    for (const kv of values) {
      const [service, instanceId, ...rest] = kv.key.slice(valuePrefix.length).split('/');
      if (service === undefined || instanceId === undefined || rest.length > 0) continue;
      const decoded = decodeEntry(kv.value, indexByKey.get(`${service}/${instanceId}`), { registryNamespace: ns, service, instanceId });
      if (decoded !== undefined && decoded.entry.owner.clusterId === clusterId) out.push(decoded.entry);
    }
  }
  return out;
}

/** The entry this cluster wrote at a key, from the value remembered for it, if any. */
function rememberedEntry(
  value: string | undefined,
  ownerIndex: string | undefined,
  scope: Scope,
  instanceId: string,
  clusterId: string,
): RegistryEntry | undefined {
  if (value === undefined) return undefined;
  const decoded = decodeEntry(value, ownerIndex, { registryNamespace: scope.registryNamespace, service: scope.service, instanceId });
  return decoded?.entry.owner.clusterId === clusterId ? decoded.entry : undefined;
}

async function readScope(
  ctx: EtcdBackendContext,
  state: NamespaceState,
  scope: Scope,
  lease: bigint | undefined,
): Promise<RegistryEntry[]> {
  const { client, keys, clusterId, format, logger } = ctx;
  const valuePrefix = keys.servicePrefix(scope.registryNamespace, scope.service);
  const indexPrefix = keys.ownerIndexServicePrefix(scope.registryNamespace, scope.service);
  const epoch = state.epoch;
  const [values = [], index = []] = await client.rangePrefixes([valuePrefix, indexPrefix]);
  const leaseDec = lease?.toString();
  // What this backend wrote at each key, before the read replaces that memory: a value edited by
  // hand into something no format decodes is still ours to repair if we wrote the key.
  const remembered = new Map<string, string>();
  for (const kv of values) {
    const value = state.owned.get(kv.key);
    if (value !== undefined) remembered.set(kv.key, value);
  }
  // Writes that landed while the read ran are newer than what it saw: then the memory of owned
  // keys is left to those writes (it is kept current by every write that lands), so a stale read
  // neither forgets a key just written nor brings back one just deleted.
  state.recordRead({ valuePrefix, indexPrefix, values, index, lease: leaseDec }, state.epoch === epoch);

  const indexByInstance = new Map<string, StoredKeyValue>();
  for (const kv of index) {
    const instanceId = EtcdKeyLayout.childName(indexPrefix, kv.key);
    if (instanceId !== undefined) indexByInstance.set(instanceId, kv);
  }
  const entries: RegistryEntry[] = [];
  for (const kv of values) {
    const instanceId = EtcdKeyLayout.childName(valuePrefix, kv.key);
    if (instanceId === undefined) continue;
    const idx = indexByInstance.get(instanceId);
    const decoded = decodeEntry(kv.value, idx?.value, { registryNamespace: scope.registryNamespace, service: scope.service, instanceId });
    if (decoded === undefined) {
      const ours = rememberedEntry(remembered.get(kv.key), idx?.value, scope, instanceId, clusterId);
      if (ours !== undefined) {
        // Our entry, edited by hand into garbage: repaired like any other hand edit, and still
        // remembered as ours until the repair lands.
        state.owned.set(kv.key, remembered.get(kv.key) ?? '');
        entries.push({ ...ours, needsRewrite: true });
        continue;
      }
      // Not ours to judge: someone else's value at a key we might want. Reported as an entry of
      // nobody known, so the plan never overwrites or deletes it.
      logger.debug({ etcdKey: kv.key }, 'etcd key whose value is not an endpoint in any known format belongs to nobody known');
      entries.push(unknownEntry(scope, instanceId));
      continue;
    }
    const { entry, format: stored } = decoded;
    if (entry.owner.clusterId !== clusterId) {
      entries.push(entry);
      continue;
    }
    const attached = kv.lease === leaseDec && (stored !== 'hostport' || idx?.lease === leaseDec);
    const strayIndex = format !== 'hostport' && idx !== undefined;
    entries.push(stored !== format || !attached || strayIndex ? { ...entry, needsRewrite: true } : entry);
  }
  return entries;
}

/**
 * Reads of the etcd backend: the entries of a scope, decoded, with this cluster's entries that are
 * not as they would be written now marked `needsRewrite`; and every entry of this cluster. Each
 * read of a scope also refreshes the namespace's memory of owned keys and revisions.
 */
import { EtcdPermissionDeniedError } from 'etcd3';

import { UNKNOWN_OWNER } from '../owner.ts';
import type { RegistryEntry, Scope } from '../types.ts';
import type { StoredKeyValue } from './client.ts';
import { decodeEntry, usesOwnerIndex } from './codec.ts';
import type { EtcdBackendContext } from './context.ts';
import { describe, EtcdRegistryError } from './errors.ts';
import { EtcdKeyLayout, RESERVED_SEGMENT } from './keys.ts';
import type { EtcdLeases } from './leases.ts';
import type { NamespaceState } from './namespace-state.ts';
import { NamespaceView } from './namespace-view.ts';

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
    const fromView = readFromView(ctx, state, scope);
    if (fromView !== undefined) return fromView;
    // With the lease settled, reads need not wait for the namespace's writes and lease work.
    if (state.lease !== undefined && !state.lost) return await readScope(ctx, state, scope, state.lease);
    if (leaselessLately(ctx, state)) return await readScope(ctx, state, scope, undefined);
    const lease = await state.serial(() => leases.ensure(state, false));
    return await readScope(ctx, state, scope, lease);
  } catch (err: unknown) {
    throw new EtcdRegistryError(`reading ${scope.registryNamespace}/${scope.service} from etcd failed: ${describe(err)}`, { cause: err });
  }
}

/**
 * No lease of ours was found alive a moment ago (all expired during an outage, or a namespace never
 * written): reads within the view age do not look again, one look per namespace is enough.
 */
function leaselessLately(ctx: EtcdBackendContext, state: NamespaceState): boolean {
  return state.lease === undefined && !state.lost && state.leaselessAt !== undefined && ctx.now() - state.leaselessAt <= ctx.viewMaxAgeMs;
}

/**
 * The entries of a scope straight from the namespace's view, without waiting for anything: when
 * the view is fresh and the namespace's lease settled (or lately known to be absent). Undefined
 * when the read has to go through {@link readRecords}' slower path.
 */
export function readFromView(ctx: EtcdBackendContext, state: NamespaceState, scope: Scope): RegistryEntry[] | undefined {
  const view = state.view;
  if (ctx.viewMaxAgeMs <= 0 || view === undefined || ctx.now() - view.takenAt > ctx.viewMaxAgeMs) return undefined;
  let lease: bigint | undefined;
  if (state.lease !== undefined && !state.lost) lease = state.lease;
  else if (!leaselessLately(ctx, state)) return undefined;
  ctx.keys.servicePrefix(scope.registryNamespace, scope.service); // refuses a service etcd keys cannot hold, as a read from etcd does
  const { values, index } = view.service(scope.service);
  if (values.length === 0) return []; // only entry keys make entries
  return decodeScope(ctx, state, scope, lease, { values, index, remembered: (key) => view.rememberedAt(key) });
}

/**
 * Every entry of this cluster under the prefix, in every registry namespace the credentials may
 * list (else in the namespaces this backend has used).
 */
export async function readOwnedByCluster(ctx: EtcdBackendContext): Promise<RegistryEntry[]> {
  const { client, keys } = ctx;
  const root = `${keys.prefix}/`;
  try {
    // One read of the whole prefix: entries and the owner index under the reserved segment.
    const [all = []] = await client.rangePrefixes([root]);
    return ownedIn(ctx, root, all);
  } catch (err: unknown) {
    if (!(err instanceof EtcdPermissionDeniedError))
      throw new EtcdRegistryError(`reading this cluster's entries under ${root} failed: ${describe(err)}`, { cause: err });
  }
  // Credentials limited to some registry namespaces: read the ones this backend has used.
  const out: RegistryEntry[] = [];
  for (const ns of ctx.namespaces.keys()) {
    const [values = [], index = []] = await client.rangePrefixes([keys.namespacePrefix(ns), keys.ownerIndexNamespacePrefix(ns)]);
    out.push(...ownedIn(ctx, root, [...values, ...index]));
  }
  return out;
}

/** This cluster's entries among keys read under `root`, each decoded with its owner index. */
function ownedIn(ctx: EtcdBackendContext, root: string, kvs: readonly StoredKeyValue[]): RegistryEntry[] {
  const indexRoot = `${root}${RESERVED_SEGMENT}/owners/`;
  const index = new Map<string, string>();
  for (const kv of kvs) if (kv.key.startsWith(indexRoot)) index.set(kv.key.slice(indexRoot.length), kv.value);
  const out: RegistryEntry[] = [];
  for (const kv of kvs) {
    const path = kv.key.slice(root.length);
    const [ns, service, instanceId, ...rest] = path.split('/');
    if (ns === undefined || ns === '' || ns.startsWith('_') || service === undefined || instanceId === undefined || rest.length > 0)
      continue;
    const decoded = decodeEntry(kv.value, index.get(path), { registryNamespace: ns, service, instanceId });
    if (decoded !== undefined && decoded.entry.owner.clusterId === ctx.clusterId) out.push(decoded.entry);
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

/**
 * The namespace's view, read again when it is older than the backend's view age (a change of the
 * namespace's lease drops it). Scope reads that arrive while it is being read share that read.
 */
async function namespaceView(ctx: EtcdBackendContext, state: NamespaceState, lease: bigint | undefined): Promise<NamespaceView> {
  const fresh = (v: NamespaceView | undefined): v is NamespaceView => v !== undefined && ctx.now() - v.takenAt <= ctx.viewMaxAgeMs;
  if (fresh(state.view)) return state.view;
  if (state.viewLoading) {
    const shared = await state.viewLoading;
    if (fresh(shared)) return shared;
  }
  const loading = loadView(ctx, state, lease);
  state.viewLoading = loading;
  try {
    return await loading;
  } finally {
    if (state.viewLoading === loading) state.viewLoading = undefined;
  }
}

async function loadView(ctx: EtcdBackendContext, state: NamespaceState, lease: bigint | undefined): Promise<NamespaceView> {
  const { client, keys } = ctx;
  const valuePrefix = keys.namespacePrefix(state.registryNamespace);
  const indexPrefix = keys.ownerIndexNamespacePrefix(state.registryNamespace);
  const takenAt = ctx.now();
  const epoch = state.epoch;
  state.beginViewRead();
  let view: NamespaceView | undefined;
  try {
    // Keys the view holds at the revision read come back as they are (their values not decoded again).
    const previous = state.view;
    const known = previous && ((key: string, modRevision: string) => previous.held(key, modRevision));
    // Refreshes one at a time (see viewReads); a first read of a namespace goes at once, since a
    // cold start or a recovery waits for it before writing there.
    const read = (): Promise<StoredKeyValue[][]> => client.rangePrefixes([valuePrefix, indexPrefix], known);
    const [values = [], index = []] = await (previous ? ctx.viewReads.add(read) : read());
    const current = state.epoch === epoch;
    const remembered = state.recordNamespaceRead(values, index, lease?.toString(), current);
    if (current && lease !== undefined) keepGarbledOwned(state, values, remembered, valuePrefix);
    view = (state.view ?? new NamespaceView(valuePrefix, indexPrefix)).refresh(values, index, takenAt, remembered);
    return view;
  } finally {
    state.endViewRead(view);
  }
}

/**
 * Keys of ours that someone overwrote with a value no format decodes stay ours until the repair
 * lands, as a scope read keeps them: a later view must still know that the garbage sits where we
 * wrote. A key someone else now claims with a value that decodes is not kept.
 */
function keepGarbledOwned(
  state: NamespaceState,
  values: readonly StoredKeyValue[],
  remembered: ReadonlyMap<string, string>,
  valuePrefix: string,
): void {
  if (remembered.size === 0) return;
  for (const kv of values) {
    const mine = remembered.get(kv.key);
    if (mine === undefined || state.owned.has(kv.key)) continue;
    const [service, instanceId, ...rest] = kv.key.slice(valuePrefix.length).split('/');
    if (service === undefined || instanceId === undefined || rest.length > 0) continue;
    if (decodeEntry(kv.value, undefined, { registryNamespace: state.registryNamespace, service, instanceId }) === undefined)
      state.owned.set(kv.key, mine);
  }
}

/** The keys of a scope and what this backend remembered writing there: from the namespace's view, or read afresh when views are off. */
async function scopeKeys(
  ctx: EtcdBackendContext,
  state: NamespaceState,
  scope: Scope,
  lease: bigint | undefined,
): Promise<{ values: readonly StoredKeyValue[]; index: readonly StoredKeyValue[]; remembered: (key: string) => string | undefined }> {
  if (ctx.viewMaxAgeMs > 0) {
    const view = await namespaceView(ctx, state, lease);
    const { values, index } = view.service(scope.service);
    return { values, index, remembered: (key) => view.rememberedAt(key) };
  }
  const valuePrefix = ctx.keys.servicePrefix(scope.registryNamespace, scope.service);
  const indexPrefix = ctx.keys.ownerIndexServicePrefix(scope.registryNamespace, scope.service);
  const epoch = state.epoch;
  const [values = [], index = []] = await ctx.client.rangePrefixes([valuePrefix, indexPrefix]);
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
  state.recordRead({ valuePrefix, indexPrefix, values, index, lease: lease?.toString() }, state.epoch === epoch);
  return { values, index, remembered: (key) => remembered.get(key) };
}

async function readScope(
  ctx: EtcdBackendContext,
  state: NamespaceState,
  scope: Scope,
  lease: bigint | undefined,
): Promise<RegistryEntry[]> {
  return decodeScope(ctx, state, scope, lease, await scopeKeys(ctx, state, scope, lease));
}

/** The entries of a scope from its keys. */
function decodeScope(
  ctx: EtcdBackendContext,
  state: NamespaceState,
  scope: Scope,
  lease: bigint | undefined,
  keysRead: { values: readonly StoredKeyValue[]; index: readonly StoredKeyValue[]; remembered: (key: string) => string | undefined },
): RegistryEntry[] {
  const { values, index, remembered } = keysRead;
  if (values.length === 0) return [];
  const { keys, clusterId, format, logger } = ctx;
  const valuePrefix = keys.servicePrefix(scope.registryNamespace, scope.service);
  const indexPrefix = keys.ownerIndexServicePrefix(scope.registryNamespace, scope.service);
  const leaseDec = lease?.toString();

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
      const ours = rememberedEntry(remembered(kv.key), idx?.value, scope, instanceId, clusterId);
      if (ours !== undefined) {
        // Our entry, edited by hand into garbage: repaired like any other hand edit, and still
        // remembered as ours until the repair lands.
        state.owned.set(kv.key, remembered(kv.key) ?? '');
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
    const attached = kv.lease === leaseDec && (!usesOwnerIndex(stored) || idx?.lease === leaseDec);
    const strayIndex = !usesOwnerIndex(format) && idx !== undefined;
    const stale = stored !== format || decoded.objectMetadata === true;
    entries.push(stale || !attached || strayIndex ? { ...entry, needsRewrite: true } : entry);
  }
  return entries;
}

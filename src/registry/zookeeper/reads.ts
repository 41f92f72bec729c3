/**
 * Reads of the ZooKeeper backend: the entries of a scope, decoded, with this cluster's entries
 * that are not as they would be written now marked `needsRewrite`; and every entry of this cluster.
 * ZooKeeper has no range read, so a scope costs one children listing per parent and one getData
 * per node, all sent at once (the client pipelines them on its one connection).
 */
import { UNKNOWN_OWNER } from '../owner.ts';
import { sameOwner } from '../../plan/plan.ts';
import type { RegistryEntry, Scope } from '../types.ts';
import type { ZooKeeperSession, ZooKeeperNode } from './client.ts';
import { decodeZooKeeperEntry } from './codec.ts';
import { hasZooKeeperCode } from './errors.ts';
import { RESERVED_SEGMENT } from './paths.ts';
import { describe } from '../../errors.ts';
import { ZooKeeperRegistryError, type ZooKeeperBackendContext } from './backend-state.ts';

/** An entry at a path whose data no format decodes: someone else's, so owned by nobody known. */
function unknownEntry(scope: Scope, instanceId: string): RegistryEntry {
  return {
    registryNamespace: scope.registryNamespace,
    k8sNamespace: '',
    owner: UNKNOWN_OWNER,
    endpoint: { service: scope.service, instanceId, address: '', port: 0, weight: 0, tags: {}, metadata: {}, source: '' },
  };
}

/** Children of `path`, none when it does not exist. */
export async function childrenOf(session: ZooKeeperSession, path: string): Promise<string[]> {
  try {
    return await session.getChildren(path);
  } catch (err: unknown) {
    if (hasZooKeeperCode(err, 'NO_NODE')) return [];
    throw err;
  }
}

/** Every child of `parent` in `names` with its data and Stat; children deleted meanwhile are left out. */
async function readChildren(session: ZooKeeperSession, parent: string, names: readonly string[]): Promise<Map<string, ZooKeeperNode>> {
  const out = new Map<string, ZooKeeperNode>();
  await Promise.all(
    names.map(async (name) => {
      try {
        out.set(name, await session.getData(`${parent}/${name}`));
      } catch (err: unknown) {
        if (!hasZooKeeperCode(err, 'NO_NODE')) throw err;
      }
    }),
  );
  return out;
}

/**
 * Every entry under the scope, whoever owns it. This cluster's entries that are stored in another
 * format, or are not ephemeral nodes of the backend's session (written by hand, or left by a
 * session that ended) come back with `needsRewrite`.
 */
export async function readRecords(ctx: ZooKeeperBackendContext, scope: Scope): Promise<RegistryEntry[]> {
  try {
    return await readScope(ctx, scope);
  } catch (err: unknown) {
    throw new ZooKeeperRegistryError(`reading ${scope.registryNamespace}/${scope.service} from ZooKeeper failed: ${describe(err)}`, {
      cause: err,
    });
  }
}

async function readScope(ctx: ZooKeeperBackendContext, scope: Scope): Promise<RegistryEntry[]> {
  const { layout, state, clusterId, format, keeper, logger } = ctx;
  const session = await keeper.current();
  const sessionId = session.sessionId;
  const servicePath = layout.servicePath(scope.registryNamespace, scope.service);
  const indexPath = layout.ownerIndexServicePath(scope.registryNamespace, scope.service);
  const epoch = state.epoch;
  const [names, indexNames] = await Promise.all([childrenOf(session, servicePath), childrenOf(session, indexPath)]);
  const [nodes, index] = await Promise.all([readChildren(session, servicePath, names), readChildren(session, indexPath, indexNames)]);
  // Writes that landed while the read ran are newer than what it saw: then they keep the memory.
  const current = state.epoch === epoch;
  const remember = (path: string, node: ZooKeeperNode | undefined): void => {
    if (node === undefined) {
      if (current) state.nodes.delete(path);
      return;
    }
    if (current || !state.nodes.has(path)) state.nodes.set(path, { version: node.stat.version, owner: node.stat.ephemeralOwner });
  };
  for (const [name, node] of index) remember(`${indexPath}/${name}`, node);
  if (current) {
    for (const [path] of [...state.nodes.childrenOf(servicePath)])
      if (!nodes.has(path.slice(servicePath.length + 1))) state.nodes.delete(path);
    for (const [path] of [...state.nodes.childrenOf(indexPath)]) if (!index.has(path.slice(indexPath.length + 1))) state.nodes.delete(path);
  }

  const entries: RegistryEntry[] = [];
  const seen = new Set<string>();
  for (const [instanceId, node] of nodes) {
    const path = `${servicePath}/${instanceId}`;
    seen.add(path);
    remember(path, node);
    const idx = index.get(instanceId);
    const at = { registryNamespace: scope.registryNamespace, service: scope.service, instanceId };
    const decoded = decodeZooKeeperEntry(node.data.toString('utf8'), idx?.data.toString('utf8'), at);
    const held = state.held.get(path);
    if (decoded === undefined || sameOwner(decoded.entry.owner, UNKNOWN_OWNER)) {
      if (held !== undefined) {
        // Our entry, edited by hand into something without our owner: repaired like any hand edit.
        entries.push({ ...held.entry, needsRewrite: true });
        continue;
      }
      if (decoded === undefined) {
        logger.debug({ zookeeperPath: path }, 'ZooKeeper node whose data is not an endpoint in any known format belongs to nobody known');
        entries.push(unknownEntry(scope, instanceId));
      } else entries.push(decoded.entry);
      continue;
    }
    const { entry } = decoded;
    if (entry.owner.clusterId !== clusterId) {
      entries.push(entry);
      continue;
    }
    if (decoded.registeredAtMs !== undefined) state.registeredAt.set(path, decoded.registeredAtMs);
    const attached =
      node.stat.ephemeralOwner === sessionId && (format !== 'hostport' || (idx !== undefined && idx.stat.ephemeralOwner === sessionId));
    const strayIndex = format !== 'hostport' && idx !== undefined;
    const stale = decoded.format !== format;
    if (current && attached) state.held.set(path, { entry });
    entries.push(stale || !attached || strayIndex ? { ...entry, needsRewrite: true } : entry);
  }
  // Entries of ours deleted by hand are forgotten here (the plan writes them again); while the
  // session is lost they are kept, since they are what the recovery re-creates.
  if (current && !keeper.lapsed() && sessionId === keeper.sessionId) {
    for (const [path] of [...state.held.childrenOf(servicePath)]) if (!seen.has(path)) state.held.delete(path);
  }
  return entries;
}

/**
 * Every entry of this cluster under the base path, in every registry namespace the credentials
 * may list (namespaces whose listing is refused are skipped, and the ones this backend holds
 * entries in are read by scope).
 */
export async function readOwnedByCluster(ctx: ZooKeeperBackendContext): Promise<RegistryEntry[]> {
  const { layout, keeper, state } = ctx;
  const session = await keeper.current();
  const scopes = new Map<string, Scope>();
  const add = (registryNamespace: string, service: string): void => {
    scopes.set(JSON.stringify([registryNamespace, service]), { registryNamespace, service });
  };
  try {
    for (const ns of await childrenOf(session, layout.root)) {
      if (ns.startsWith('_') || (layout.basePath === '' && ns === 'zookeeper')) continue;
      try {
        for (const service of await childrenOf(session, layout.namespacePath(ns))) add(ns, service);
      } catch (err: unknown) {
        if (!hasZooKeeperCode(err, 'NO_AUTH')) throw err;
      }
    }
  } catch (err: unknown) {
    if (!hasZooKeeperCode(err, 'NO_AUTH'))
      throw new ZooKeeperRegistryError(`listing ${layout.root} in ZooKeeper failed: ${describe(err)}`, { cause: err });
  }
  for (const path of state.held.keys()) {
    const [ns, service] = path.slice(layout.basePath.length + 1).split('/');
    if (ns !== undefined && service !== undefined && ns !== RESERVED_SEGMENT) add(ns, service);
  }
  const out: RegistryEntry[] = [];
  for (const scope of scopes.values()) {
    for (const entry of await readRecords(ctx, scope)) if (entry.owner.clusterId === ctx.clusterId) out.push(entry);
  }
  return out;
}

/**
 * Reads of the Consul backend, from the agent (authoritative for what it registered): the services
 * of a scope, served from the backend's view of the agent (agent-view.ts), with this cluster's services that differ from what would be written now marked
 * `needsRewrite`; and every instance of this cluster. An instance marked critical by its health
 * check reads back with that mark (from Meta) and counts as any other: it is neither dead nor foreign.
 */
import type { RegistryEntry, Scope } from '../types.ts';
import type { AgentCheckRecord, AgentServiceRecord } from './client.ts';
import { decodeService, differsFromRegistration, drainCheckId, healthCheckUpdate, isHeartbeat, META } from './codec.ts';
import type { ConsulBackendContext } from './context.ts';
import { ConsulRegistryError } from './errors.ts';
import type { ConsulHeartbeats } from './heartbeats.ts';
import type { NamespaceState } from './namespace-state.ts';
import { lit } from './naming.ts';

/** Every instance of this cluster on the agent (in every Consul namespace when a template is set). */
export async function readOwnedByCluster(ctx: ConsulBackendContext): Promise<RegistryEntry[]> {
  const { calls, naming, clusterId } = ctx;
  await calls.checkAgent();
  const filter = `Meta[${lit(META.ownerCluster)}] == ${lit(clusterId)}`;
  let found: AgentServiceRecord[];
  try {
    found = await calls.call(() => calls.client.services(filter, naming.usesConsulNamespaces ? '*' : ''));
  } catch (err: unknown) {
    throw new ConsulRegistryError(`listing this cluster's services on the Consul agent at ${calls.address} failed: ${calls.explain(err)}`, {
      cause: err,
    });
  }
  const out: RegistryEntry[] = [];
  for (const record of found) {
    const registryNamespace = record.Meta[META.registryNamespace];
    const service = record.Meta[META.service];
    if (registryNamespace === undefined || service === undefined) continue;
    const decoded = decodeService(record, { registryNamespace, service }, false);
    if (decoded?.managed === true && decoded.entry.owner.clusterId === clusterId) out.push(decoded.entry);
  }
  return out;
}

/**
 * Every service of the scope on the agent, whoever owns it: this cluster's last, so that where two
 * clusters registered the same endpoint the owner wrapper sees ours. This cluster's services that
 * differ from what would be written now (hand edits, a changed template or TTL, a missing
 * heartbeat) come back with `needsRewrite`. Hands what it found of the namespace's heartbeat to
 * `heartbeats`, which adopts it if it exists.
 */
export async function readRecords(ctx: ConsulBackendContext, heartbeats: ConsulHeartbeats, scope: Scope): Promise<RegistryEntry[]> {
  const { calls, naming, clusterId } = ctx;
  await calls.checkAgent();
  const state = ctx.namespaces.use(scope.registryNamespace);
  const name = naming.serviceName(scope.registryNamespace, scope.service);
  const view = ctx.views.of(state.consulNamespace);
  let services: AgentServiceRecord[];
  let checksOf: ReadonlyMap<string, readonly AgentCheckRecord[]>;
  try {
    const registrations = state.registrations;
    await view.ready();
    // Our services under a name from an earlier serviceName template come along, so they are renamed, not orphaned.
    ({ services, checks: checksOf } = view.scope(name, state.heartbeatServiceId, scope.registryNamespace, scope.service));
    const heartbeat = services.find((s) => s.ID === state.heartbeatServiceId && isHeartbeat(s));
    await heartbeats.applyRead(state, heartbeat, registrations);
  } catch (err: unknown) {
    throw new ConsulRegistryError(
      `reading ${scope.registryNamespace}/${scope.service} (Consul service ${name}) from the agent at ${calls.address} failed: ${calls.explain(err)}`,
      { cause: err },
    );
  }

  const foreign: RegistryEntry[] = [];
  const own: RegistryEntry[] = [];
  for (const record of services) {
    const serviceChecks = checksOf.get(record.ID) ?? [];
    const decoded = decodeService(
      record,
      scope,
      serviceChecks.some((c) => c.CheckID === drainCheckId(record.ID)),
    );
    if (decoded === undefined) continue;
    const { entry } = decoded;
    if (!decoded.managed || entry.owner.clusterId !== clusterId) {
      foreign.push(entry);
      continue;
    }
    own.push(isStale(ctx, state, record, serviceChecks, entry) ? { ...entry, needsRewrite: true } : entry);
  }
  return [...foreign, ...own];
}

function isStale(
  ctx: ConsulBackendContext,
  state: NamespaceState,
  record: AgentServiceRecord,
  checks: readonly AgentCheckRecord[],
  entry: RegistryEntry,
): boolean {
  if (!state.present || !state.current) return true;
  try {
    const wanted = ctx.naming.registration(state.heartbeatServiceId, entry);
    return differsFromRegistration(record, checks, wanted, healthCheckUpdate(wanted.ID, entry.endpoint.health));
  } catch {
    // Cannot be encoded any more (limits): let the plan try, and fail with the encoding error.
    return true;
  }
}

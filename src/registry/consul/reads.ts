/**
 * Reads of the Consul backend, from the agent (authoritative for what it registered): the services
 * of a scope, with this cluster's services that differ from what would be written now marked
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
  const serviceFilter =
    `Service == ${lit(name)} or ID == ${lit(state.heartbeatServiceId)} or ` +
    // Our services under a name from an earlier serviceName template, so they are renamed, not orphaned.
    `(Meta[${lit(META.registryNamespace)}] == ${lit(scope.registryNamespace)} and Meta[${lit(META.service)}] == ${lit(scope.service)})`;
  let services: AgentServiceRecord[];
  let checks: AgentCheckRecord[];
  try {
    const registrations = state.registrations;
    [services, checks] = await Promise.all([
      calls.call(() => calls.client.services(serviceFilter, state.consulNamespace)),
      calls.call(() => calls.client.checks(`ServiceName == ${lit(name)}`, state.consulNamespace)),
    ]);
    const heartbeat = services.find((s) => s.ID === state.heartbeatServiceId && isHeartbeat(s));
    await heartbeats.applyRead(state, heartbeat, registrations);
  } catch (err: unknown) {
    throw new ConsulRegistryError(
      `reading ${scope.registryNamespace}/${scope.service} (Consul service ${name}) from the agent at ${calls.address} failed: ${calls.explain(err)}`,
      { cause: err },
    );
  }

  const checksOf = new Map<string, AgentCheckRecord[]>();
  for (const check of checks) checksOf.set(check.ServiceID, [...(checksOf.get(check.ServiceID) ?? []), check]);
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

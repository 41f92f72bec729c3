/**
 * What kube-registrar writes to Consul and how it reads it back: service ids, Meta keys, the
 * registration bodies of instances and heartbeats, and the way from an agent's service record back
 * to a {@link RegistryEntry}. Pure functions, so the mapping is tested without an agent.
 *
 * Consul limits Meta to 64 pairs, keys of `[A-Za-z0-9_-]` up to 128 characters and values up to
 * 512 bytes. Tags and metadata maps are therefore stored as JSON (split over several keys when
 * long), which round-trips any key; metadata keys that are valid Meta keys are also copied as plain
 * pairs so consumers can filter on `Service.Meta.<key>`.
 *
 * An endpoint that fails its active health check (Endpoint.health) stays registered with one more
 * check, held critical with the probe's output, and the mark in Meta (`kr-health`,
 * `kr-health-output`), which is what reading it back goes by.
 */
import { createHash } from 'node:crypto';

import { UNKNOWN_OWNER } from '../owner.ts';
import { HEALTH_OUTPUT_MAX } from '../types.ts';
import type { EndpointHealthMark, Owner, RegistryEntry } from '../types.ts';
import type { AgentCheckRecord, AgentServiceRecord, CheckDefinition, ServiceRegistration } from './client.ts';

/** Meta keys kube-registrar writes. The `kr-` prefix keeps them apart from users' metadata. */
export const META = {
  ownerCluster: 'kr-owner-cluster',
  ownerNamespace: 'kr-owner-namespace',
  ownerName: 'kr-owner-name',
  k8sNamespace: 'kr-k8s-namespace',
  registryNamespace: 'kr-registry-namespace',
  service: 'kr-service',
  instance: 'kr-instance',
  source: 'kr-source',
  tags: 'kr-tags',
  metadata: 'kr-metadata',
  /** Instances: id of the heartbeat service whose health they mirror. */
  heartbeat: 'kr-heartbeat',
  /** Seconds a critical instance or heartbeat waits before the agent reaps it. */
  deregisterAfter: 'kr-deregister-after',
  /** Heartbeat services only: `heartbeat`. */
  role: 'kr-role',
  /** Heartbeat services only: TTL of the heartbeat check in seconds. */
  ttl: 'kr-ttl',
  /**
   * Heartbeat services only: the Registry that registered it. Another Registry of the same cluster
   * on the same agent leaves it alone when it adopts its heartbeats at startup.
   */
  registry: 'kr-registry',
  /** Instances failing their active health check only: `critical`. */
  health: 'kr-health',
  /**
   * With {@link META.health}: the probe's output, split at character boundaries over
   * `kr-health-output`, `kr-health-output-1` when its UTF-8 form is longer than a Meta value may be.
   */
  healthOutput: 'kr-health-output',
} as const;

/** Prefix of every Meta key kube-registrar owns; users' metadata keys with it are JSON-only. */
export const META_PREFIX = 'kr-';
/** Value of {@link META.role} on heartbeat services. */
export const HEARTBEAT_ROLE = 'heartbeat';
/** The `{service}` a heartbeat's name is rendered from through the serviceName template. */
export const HEARTBEAT_SERVICE = 'kube-registrar-heartbeat';

/** Consul's limits on service Meta (agent/structs ValidateServiceMetadata). */
export const META_MAX_PAIRS = 64;
export const META_MAX_KEY_LENGTH = 128;
export const META_MAX_VALUE_BYTES = 512;
const META_KEY = /^[A-Za-z0-9_-]+$/;

/** An entry that cannot be represented in Consul; the message says what to shorten. */
export class ConsulEncodingError extends Error {
  override readonly name = 'ConsulEncodingError';
}

function hash(parts: readonly string[], length: number): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, length);
}

function readable(value: string): string {
  return value.replace(/[^A-Za-z0-9._:-]/g, '_');
}

/**
 * Service id of an instance: deterministic from (clusterId, registryNamespace, service, instanceId),
 * so that a restarted operator or a new leader finds the services it wrote, and two clusters never
 * share an id. The readable part is for people; the hash makes it unique.
 */
export function instanceServiceId(clusterId: string, registryNamespace: string, service: string, instanceId: string): string {
  return `kr-${readable(service)}-${readable(instanceId)}-${hash([clusterId, registryNamespace, service, instanceId], 12)}`;
}

/** Service id of the heartbeat of one cluster in one registry namespace. */
export function heartbeatServiceId(clusterId: string, registryNamespace: string): string {
  return `kr-heartbeat-${readable(registryNamespace)}-${hash([clusterId, registryNamespace], 12)}`;
}

/** Id of the TTL check the operator keeps passing: the lease id reported in status. */
export function heartbeatCheckId(heartbeatId: string): string {
  return `${heartbeatId}:ttl`;
}

/** Id of an instance's alias check on its heartbeat. */
export function aliasCheckId(serviceId: string): string {
  return `${serviceId}:alive`;
}

/** Id of the check that keeps a weight-0 instance out of `?passing=true` results. */
export function drainCheckId(serviceId: string): string {
  return `${serviceId}:weight-zero`;
}

/** Id of the check held critical, with the probe's output, while an instance fails its active health check. */
export function healthCheckId(serviceId: string): string {
  return `${serviceId}:health`;
}

/** Name of the check that marks an instance failing its active health check. */
export const HEALTH_CHECK_NAME = 'kube-registrar health check';

/** TTL of the checks held critical: ten years, so they never expire and get Consul's "TTL expired" output. */
const HELD_CRITICAL_TTL = '87600h';

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedEntries(map: Readonly<Record<string, string>>): [string, string][] {
  return Object.entries(map).sort(([a], [b]) => compare(a, b));
}

/** JSON with non-ASCII escaped, so that string length equals UTF-8 length and chunks never split a character. */
function asciiJson(map: Readonly<Record<string, string>>): string {
  return JSON.stringify(Object.fromEntries(sortedEntries(map))).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** `key`, `key-1`, `key-2`, ...: one value split over as many keys as it needs. */
function chunked(key: string, value: string): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i === 0 || i * META_MAX_VALUE_BYTES < value.length; i++) {
    out.push([i === 0 ? key : `${key}-${i}`, value.slice(i * META_MAX_VALUE_BYTES, (i + 1) * META_MAX_VALUE_BYTES)]);
  }
  return out;
}

/**
 * Like {@link chunked} for a value kept readable rather than escaped: each piece at most
 * {@link META_MAX_VALUE_BYTES} bytes of UTF-8, cut between characters.
 */
function chunkedUtf8(key: string, value: string): [string, string][] {
  const pieces: string[] = [];
  let piece = '';
  let bytes = 0;
  for (const char of value) {
    const size = byteLength(char);
    if (bytes + size > META_MAX_VALUE_BYTES) {
      pieces.push(piece);
      piece = '';
      bytes = 0;
    }
    piece += char;
    bytes += size;
  }
  pieces.push(piece);
  return pieces.map((p, i) => [i === 0 ? key : `${key}-${i}`, p]);
}

function unchunked(meta: Readonly<Record<string, string>>, key: string): string | undefined {
  let value = meta[key];
  if (value === undefined) return undefined;
  for (let i = 1; ; i++) {
    const next = meta[`${key}-${i}`];
    if (next === undefined) return value;
    value += next;
  }
}

function parseStringMap(json: string | undefined): Record<string, string> | undefined {
  if (json === undefined) return undefined;
  try {
    const value = JSON.parse(json) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
    const entries = Object.entries(value);
    if (entries.some(([, v]) => typeof v !== 'string')) return undefined;
    // fromEntries defines own properties: assigning out['__proto__'] would drop that key, and the
    // entry would then differ from the desired one and be rewritten on every resync.
    return Object.fromEntries(entries);
  } catch {
    return undefined;
  }
}

function byteLength(value: string): number {
  return Buffer.byteLength(value, 'utf8');
}

/** Whether `key` can be a plain Meta key holding a user's metadata value. */
function isPlainMetaKey(key: string, value: string): boolean {
  return (
    META_KEY.test(key) &&
    key.length <= META_MAX_KEY_LENGTH &&
    !key.startsWith(META_PREFIX) &&
    !key.startsWith('consul-') &&
    byteLength(value) <= META_MAX_VALUE_BYTES
  );
}

/**
 * The probe output as written to Consul: at most {@link HEALTH_OUTPUT_MAX} UTF-16 code units, never
 * ending in half a surrogate pair. The source keeps outputs that short already; a longer one is cut
 * here rather than refused, so the endpoint is still marked (and, differing from what reads back,
 * written again on every resync).
 */
export function healthOutput(output: string): string {
  if (output.length <= HEALTH_OUTPUT_MAX) return output;
  const cut = output.slice(0, HEALTH_OUTPUT_MAX);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/** The Meta pairs of a health mark; none for a healthy endpoint. */
function healthMeta(health: EndpointHealthMark | undefined): [string, string][] {
  if (health === undefined) return [];
  return [[META.health, health.status], ...chunkedUtf8(META.healthOutput, healthOutput(health.output))];
}

/** The health mark Meta records, or undefined when it records none (or one this version does not know). */
function healthFromMeta(meta: Readonly<Record<string, string>>): EndpointHealthMark | undefined {
  if (meta[META.health] !== 'critical') return undefined;
  return { status: 'critical', output: unchunked(meta, META.healthOutput) ?? '' };
}

/** How an instance's liveness is wired: which heartbeat it mirrors and when it is reaped. */
export interface Liveness {
  readonly heartbeatServiceId: string;
  readonly deregisterAfterSeconds: number;
}

/**
 * The Meta of an instance: owner, namespaces, source, tags and metadata, plus plain copies of the
 * metadata keys Consul accepts while room is left.
 *
 * @throws {ConsulEncodingError} when the entry does not fit into Consul's Meta limits.
 */
export function instanceMeta(entry: RegistryEntry, liveness: Liveness): Record<string, string> {
  const { endpoint, owner } = entry;
  const fixed: [string, string][] = [
    [META.ownerCluster, owner.clusterId],
    [META.ownerNamespace, owner.namespace],
    [META.ownerName, owner.name],
    [META.k8sNamespace, entry.k8sNamespace],
    [META.registryNamespace, entry.registryNamespace],
    [META.service, endpoint.service],
    [META.instance, endpoint.instanceId],
    [META.source, endpoint.source],
    [META.heartbeat, liveness.heartbeatServiceId],
    [META.deregisterAfter, String(liveness.deregisterAfterSeconds)],
    ...chunked(META.tags, asciiJson(endpoint.tags)),
    ...chunked(META.metadata, asciiJson(endpoint.metadata)),
    ...healthMeta(endpoint.health),
  ];
  const where = `${entry.registryNamespace}/${endpoint.service}/${endpoint.instanceId}`;
  for (const [key, value] of fixed) {
    if (byteLength(value) > META_MAX_VALUE_BYTES) {
      throw new ConsulEncodingError(
        `cannot register ${where} in Consul: its ${key} (${JSON.stringify(value.slice(0, 40))}...) is longer than Consul's ${META_MAX_VALUE_BYTES}-byte limit for Meta values; shorten it`,
      );
    }
  }
  if (fixed.length > META_MAX_PAIRS) {
    throw new ConsulEncodingError(
      `cannot register ${where} in Consul: its tags and metadata need ${fixed.length} Meta pairs, more than Consul's ${META_MAX_PAIRS}; shorten the ServiceInstance's tags and metadata`,
    );
  }
  const meta: Record<string, string> = Object.fromEntries(fixed);
  let room = META_MAX_PAIRS - fixed.length;
  for (const [key, value] of sortedEntries(endpoint.metadata)) {
    if (room === 0) break;
    if (!isPlainMetaKey(key, value)) continue;
    meta[key] = value;
    room--;
  }
  return meta;
}

/** Consul's Tags of an instance: `key=value`, sorted by key. */
export function instanceTags(tags: Readonly<Record<string, string>>): string[] {
  return sortedEntries(tags).map(([k, v]) => `${k}=${v}`);
}

/** Consul duration of whole seconds. */
export function seconds(value: number): string {
  return `${value}s`;
}

/** Names and liveness an instance registration needs besides the entry itself. */
export interface InstanceContext extends Liveness {
  readonly clusterId: string;
  /** Consul service name: the serviceName template rendered for the entry. */
  readonly name: string;
}

/**
 * The agent registration of an instance. Consul refuses a passing weight of 0, so a weight-0
 * endpoint is registered with weight 1 and a check held critical: out of rotation for every
 * consumer of `?passing=true` and DNS, yet visible, and still owned.
 *
 * An endpoint failing its active health check gets one more check held critical, named
 * {@link healthCheckId}, whose Notes carry the probe output (its Output is set by the call
 * {@link healthCheckUpdate} describes, since a registration cannot set it). Neither of these checks
 * reaps the instance: only the alias check on the heartbeat does, once the operator is gone.
 * Registering again with replace-existing-checks drops a check no longer in the body, so an
 * endpoint that recovers turns passing with the same call.
 *
 * @throws {ConsulEncodingError} when the entry does not fit into Consul's Meta limits.
 */
export function instanceRegistration(entry: RegistryEntry, context: InstanceContext): ServiceRegistration {
  const { endpoint } = entry;
  const id = instanceServiceId(context.clusterId, entry.registryNamespace, endpoint.service, endpoint.instanceId);
  const checks: CheckDefinition[] = [
    {
      CheckID: aliasCheckId(id),
      Name: 'kube-registrar lease',
      Notes: `Mirrors the heartbeat ${context.heartbeatServiceId} that the kube-registrar operator keeps passing; critical when the operator is gone.`,
      AliasService: context.heartbeatServiceId,
      // Written only once the heartbeat passes, so start passing: the agent's first sync to the
      // catalog then shows the instance passing rather than critical until the alias first runs.
      // Registering an existing instance again keeps its current status.
      Status: 'passing',
      DeregisterCriticalServiceAfter: seconds(context.deregisterAfterSeconds),
    },
  ];
  if (endpoint.weight === 0) {
    checks.push({
      CheckID: drainCheckId(id),
      Name: 'kube-registrar weight 0',
      Notes: 'The endpoint has weight 0: out of rotation until its weight is raised.',
      // Never passed, so it stays critical; no DeregisterCriticalServiceAfter, so it is never reaped for it.
      TTL: HELD_CRITICAL_TTL,
      Status: 'critical',
    });
  }
  if (endpoint.health !== undefined) {
    checks.push({
      CheckID: healthCheckId(id),
      Name: HEALTH_CHECK_NAME,
      Notes: healthOutput(endpoint.health.output),
      // Held critical like the weight-0 check, and likewise never reaps: a failing endpoint stays
      // listed (and owned) until it recovers or its ServiceInstance lets it go.
      TTL: HELD_CRITICAL_TTL,
      Status: 'critical',
    });
  }
  return {
    ID: id,
    Name: context.name,
    Tags: instanceTags(endpoint.tags),
    Address: endpoint.address,
    Port: endpoint.port,
    Meta: instanceMeta(entry, context),
    Weights: { Passing: Math.max(1, endpoint.weight), Warning: 1 },
    Checks: checks,
  };
}

/** A TTL check's status and output, as `PUT /v1/agent/check/update/<checkId>` sets them. */
export interface HealthCheckUpdate {
  readonly checkId: string;
  readonly status: 'critical';
  readonly output: string;
}

/**
 * The update that gives the health check of service `serviceId` the probe's output, or undefined
 * for a healthy endpoint. Sent after every registration of a failing endpoint: registering keeps an
 * existing check's status and output, so this is also what turns a check passed by hand critical again.
 */
export function healthCheckUpdate(serviceId: string, health: EndpointHealthMark | undefined): HealthCheckUpdate | undefined {
  if (health === undefined) return undefined;
  return { checkId: healthCheckId(serviceId), status: health.status, output: healthOutput(health.output) };
}

/** What a heartbeat registration needs. */
export interface HeartbeatContext {
  readonly clusterId: string;
  readonly registryNamespace: string;
  /** Rendered serviceName template for {@link HEARTBEAT_SERVICE}, so ACL prefixes cover it. */
  readonly name: string;
  readonly ttlSeconds: number;
  readonly deregisterAfterSeconds: number;
  /** Name of the Registry resource, when known. */
  readonly registry?: string;
}

/**
 * The agent registration of a heartbeat: a service without address whose single TTL check is the
 * lease. Registered passing, so instances come up passing at once.
 */
export function heartbeatRegistration(context: HeartbeatContext): ServiceRegistration {
  const id = heartbeatServiceId(context.clusterId, context.registryNamespace);
  return {
    ID: id,
    Name: context.name,
    Tags: [],
    Address: '',
    Port: 0,
    Meta: {
      [META.role]: HEARTBEAT_ROLE,
      [META.ownerCluster]: context.clusterId,
      [META.registryNamespace]: context.registryNamespace,
      [META.ttl]: String(context.ttlSeconds),
      [META.deregisterAfter]: String(context.deregisterAfterSeconds),
      ...(context.registry !== undefined ? { [META.registry]: context.registry } : {}),
    },
    Weights: { Passing: 1, Warning: 1 },
    Checks: [
      {
        CheckID: heartbeatCheckId(id),
        Name: 'kube-registrar heartbeat',
        Notes: `Passed by the kube-registrar operator of cluster ${context.clusterId} every ${context.ttlSeconds / 3} s; its instances in registry namespace ${context.registryNamespace} alias it.`,
        TTL: seconds(context.ttlSeconds),
        Status: 'passing',
        DeregisterCriticalServiceAfter: seconds(context.deregisterAfterSeconds),
      },
    ],
  };
}

/** Whether a stored heartbeat was registered with the given TTL and reap delay. */
export function heartbeatIsCurrent(record: AgentServiceRecord, ttlSeconds: number, deregisterAfterSeconds: number): boolean {
  return record.Meta[META.ttl] === String(ttlSeconds) && record.Meta[META.deregisterAfter] === String(deregisterAfterSeconds);
}

/** Whether a service is a kube-registrar heartbeat. */
export function isHeartbeat(record: AgentServiceRecord): boolean {
  return record.Meta[META.role] === HEARTBEAT_ROLE;
}

/** `<address>:<port>` with IPv6 literals in brackets: the instance id of a service nobody owns. */
function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function ownerOf(meta: Readonly<Record<string, string>>): Owner | undefined {
  const clusterId = meta[META.ownerCluster];
  const namespace = meta[META.ownerNamespace];
  const name = meta[META.ownerName];
  if (clusterId === undefined || namespace === undefined || name === undefined || clusterId === '') return undefined;
  return { clusterId, namespace, name };
}

/** Where a record is read: the scope asked for and the names this Registry gives it. */
export interface ReadContext {
  readonly registryNamespace: string;
  readonly service: string;
}

/** A service read back, with what it takes to tell whether it is stored the way it would be written now. */
export interface DecodedService {
  readonly entry: RegistryEntry;
  /** Written by kube-registrar (any cluster) at the id its Meta implies. */
  readonly managed: boolean;
}

function tagsFromList(tags: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const tag of tags) {
    const i = tag.indexOf('=');
    if (i < 0) out[tag] = '';
    else out[tag.slice(0, i)] = tag.slice(i + 1);
  }
  return out;
}

/**
 * Turns an agent service into an entry of the scope, or undefined when it belongs to another
 * scope (a kube-registrar service of another registry namespace or service that shares the Consul
 * name) or is a heartbeat.
 *
 * A service counts as kube-registrar's only if its Meta names an owner and it sits at the id that
 * Meta implies; anything else, including a hand-made copy of our Meta under another id, comes back
 * with {@link UNKNOWN_OWNER}, so it is reported and never touched. `drained` says whether the
 * service carries the weight-0 check.
 */
export function decodeService(record: AgentServiceRecord, scope: ReadContext, drained: boolean): DecodedService | undefined {
  if (isHeartbeat(record)) return undefined;
  const meta = record.Meta;
  const registryNamespace = meta[META.registryNamespace];
  const service = meta[META.service];
  const instanceId = meta[META.instance];
  const owner = ownerOf(meta);
  const weight = drained ? 0 : record.Weights.Passing;
  if (owner !== undefined && registryNamespace !== undefined && service !== undefined && instanceId !== undefined) {
    if (registryNamespace !== scope.registryNamespace || service !== scope.service) return undefined;
    if (record.ID === instanceServiceId(owner.clusterId, registryNamespace, service, instanceId)) {
      const health = healthFromMeta(meta);
      const entry: RegistryEntry = {
        registryNamespace,
        k8sNamespace: meta[META.k8sNamespace] ?? owner.namespace,
        owner,
        endpoint: {
          service,
          instanceId,
          address: record.Address,
          port: record.Port,
          weight,
          // A damaged JSON value reads as the Consul tags / no metadata; the plan then rewrites it.
          tags: parseStringMap(unchunked(meta, META.tags)) ?? tagsFromList(record.Tags),
          metadata: parseStringMap(unchunked(meta, META.metadata)) ?? {},
          source: meta[META.source] ?? '',
          ...(health !== undefined ? { health } : {}),
        },
      };
      return { entry, managed: true };
    }
  }
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) if (!k.startsWith(META_PREFIX)) metadata[k] = v;
  const entry: RegistryEntry = {
    registryNamespace: scope.registryNamespace,
    k8sNamespace: '',
    owner: UNKNOWN_OWNER,
    endpoint: {
      service: scope.service,
      instanceId: record.Address !== '' ? hostPort(record.Address, record.Port) : record.ID,
      address: record.Address,
      port: record.Port,
      weight,
      tags: tagsFromList(record.Tags),
      metadata,
      source: `consul/${record.ID}`,
    },
  };
  return { entry, managed: false };
}

function sameMap(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/**
 * Whether the stored service differs from what registering `wanted` (and sending `healthUpdate`)
 * would write: another name, tags, address, port, weights or Meta, missing the alias check (or the
 * weight-0 or health check), a health check that is not critical with the wanted output (passed
 * by hand, or its output never set because that call failed), or one left on a healthy endpoint.
 * Other checks someone added by hand do not count.
 */
export function differsFromRegistration(
  record: AgentServiceRecord,
  checks: readonly AgentCheckRecord[],
  wanted: ServiceRegistration,
  healthUpdate?: HealthCheckUpdate,
): boolean {
  if (
    record.ID !== wanted.ID ||
    record.Service !== wanted.Name ||
    record.Address !== wanted.Address ||
    record.Port !== wanted.Port ||
    record.Weights.Passing !== wanted.Weights.Passing ||
    record.Weights.Warning !== wanted.Weights.Warning ||
    record.Tags.length !== wanted.Tags.length ||
    record.Tags.some((t, i) => t !== wanted.Tags[i]) ||
    !sameMap(record.Meta, wanted.Meta)
  ) {
    return true;
  }
  const held = checks.find((c) => c.CheckID === healthCheckId(wanted.ID) && c.ServiceID === wanted.ID);
  if (healthUpdate === undefined ? held !== undefined : held?.Status !== healthUpdate.status || held.Output !== healthUpdate.output) {
    return true;
  }
  return wanted.Checks.some(
    (w) =>
      !checks.some(
        (c) => c.CheckID === w.CheckID && c.ServiceID === wanted.ID && c.Type === (w.AliasService !== undefined ? 'alias' : 'ttl'),
      ),
  );
}

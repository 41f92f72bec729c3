/**
 * What a process outside Kubernetes registers in Consul: the same name, Tags, Weights and Meta the
 * operator writes for a pod, so consumers cannot tell the two apart, but its own owner and id, so
 * the operator never touches it, and its own TTL check, which this process passes. Pure.
 */
import { createHash } from 'node:crypto';

import { DiscoveryConfigError } from '../errors.ts';
import { hostPort } from '../instance.ts';
import type { SelfEndpoint } from '../source.ts';
import { asciiJson, byteLength, chunked, META, META_MAX_PAIRS, META_MAX_VALUE_BYTES, plainMetadataPairs, tagsToList } from './meta.ts';

/** The owner of a self-registration, as written to Meta. */
export interface SelfOwner {
  /** `process:<hostname>`: tells the entry from those of any Kubernetes cluster. */
  readonly cluster: string;
  /** The registry namespace. */
  readonly namespace: string;
  /** The service. */
  readonly name: string;
}

/** A check in a registration body. */
export interface CheckBody {
  readonly CheckID: string;
  readonly Name: string;
  readonly Notes?: string;
  readonly TTL: string;
  readonly Status: 'passing' | 'critical';
  readonly DeregisterCriticalServiceAfter?: string;
}

/** Body of `PUT /v1/agent/service/register`. */
export interface RegistrationBody {
  readonly ID: string;
  readonly Name: string;
  readonly Tags: string[];
  readonly Address: string;
  readonly Port: number;
  readonly Meta: Record<string, string>;
  readonly Weights: { readonly Passing: number; readonly Warning: number };
  readonly Checks: CheckBody[];
}

/** Everything a registration is built from besides the endpoint. */
export interface SelfContext {
  readonly hostname: string;
  readonly pid: number;
  readonly namespace: string;
  /** Consul service name (the rendered template). */
  readonly name: string;
  readonly ttlSeconds: number;
  readonly deregisterAfterSeconds: number;
}

function readable(value: string): string {
  return value.replace(/[^A-Za-z0-9._:-]/g, '_');
}

/**
 * The service id of a self-registration: `kr-self-<service>-<instance>-<hash>`. The operator's ids
 * are `kr-<service>-<instance>-<hash of its cluster id, ...>`; the hash here covers the host name
 * instead, so the two never meet, and the same process on the same host gets the same id again
 * after a restart (replacing its own leftover instead of adding a second one).
 */
export function selfServiceId(hostname: string, namespace: string, service: string, instance: string): string {
  const hash = createHash('sha256')
    .update(JSON.stringify(['self', hostname, namespace, service, instance]))
    .digest('hex')
    .slice(0, 12);
  return `kr-self-${readable(service)}-${readable(instance)}-${hash}`;
}

/** Id of the TTL check the registrar passes. */
export function selfCheckId(serviceId: string): string {
  return `${serviceId}:ttl`;
}

/** Id of the check held critical while the weight is 0, as the operator does for its endpoints. */
export function selfDrainCheckId(serviceId: string): string {
  return `${serviceId}:weight-zero`;
}

/** The owner written for `service` by this host. */
export function selfOwner(hostname: string, namespace: string, service: string): SelfOwner {
  return { cluster: `process:${hostname}`, namespace, name: service };
}

/** Whether Meta read back names `owner`: a service this host registered, which it may replace. */
export function ownedBy(meta: Readonly<Record<string, string>>, owner: SelfOwner): boolean {
  return meta[META.ownerCluster] === owner.cluster && meta[META.ownerNamespace] === owner.namespace && meta[META.ownerName] === owner.name;
}

/** Describes the owner named in Meta, for messages. */
export function describeOwner(meta: Readonly<Record<string, string>>): string {
  const cluster = meta[META.ownerCluster];
  if (cluster === undefined) return 'nobody kube-registrar knows (no kr-owner-cluster in its Meta)';
  return `${cluster} (${meta[META.ownerNamespace] ?? '?'}/${meta[META.ownerName] ?? '?'})`;
}

/** Refuses an endpoint no consumer could use. */
export function checkEndpoint(endpoint: SelfEndpoint): void {
  const where = `register(${JSON.stringify(endpoint.service)})`;
  if (endpoint.address === '') throw new DiscoveryConfigError(`${where}: address is empty; give the address consumers dial`);
  if (!Number.isInteger(endpoint.port) || endpoint.port < 1 || endpoint.port > 65535) {
    throw new DiscoveryConfigError(`${where}: port ${endpoint.port} is not a TCP port (1-65535)`);
  }
  const weight = endpoint.weight ?? 1;
  if (!Number.isInteger(weight) || weight < 0 || weight > 1000) {
    throw new DiscoveryConfigError(`${where}: weight ${weight} is out of range; use a whole number from 0 (out of rotation) to 1000`);
  }
}

/**
 * The registration of `endpoint`. A weight of 0, which Consul refuses, is written as the operator
 * writes it: weight 1 and a check held critical, so the entry is listed but out of `?passing=true`.
 *
 * @throws {DiscoveryConfigError} when tags and metadata do not fit into Consul's Meta limits.
 */
export function selfRegistration(endpoint: SelfEndpoint, context: SelfContext): RegistrationBody {
  checkEndpoint(endpoint);
  const instance = hostPort(endpoint.address, endpoint.port);
  const id = selfServiceId(context.hostname, context.namespace, endpoint.service, instance);
  const owner = selfOwner(context.hostname, context.namespace, endpoint.service);
  const tags = endpoint.tags ?? {};
  const metadata = endpoint.metadata ?? {};
  const fixed: [string, string][] = [
    [META.ownerCluster, owner.cluster],
    [META.ownerNamespace, owner.namespace],
    [META.ownerName, owner.name],
    [META.registryNamespace, context.namespace],
    [META.service, endpoint.service],
    [META.instance, instance],
    [META.source, `process:${context.hostname}/${context.pid}`],
    ...chunked(META.tags, asciiJson(tags)),
    ...chunked(META.metadata, asciiJson(metadata)),
  ];
  const too = fixed.find(([, v]) => byteLength(v) > META_MAX_VALUE_BYTES);
  if (too !== undefined) {
    throw new DiscoveryConfigError(
      `register(${JSON.stringify(endpoint.service)}): Meta ${too[0]} is longer than Consul's ${META_MAX_VALUE_BYTES} bytes; shorten it`,
    );
  }
  if (fixed.length > META_MAX_PAIRS) {
    throw new DiscoveryConfigError(
      `register(${JSON.stringify(endpoint.service)}): tags and metadata need ${fixed.length} Meta pairs, more than Consul's ${META_MAX_PAIRS}; shorten them`,
    );
  }
  const meta = Object.fromEntries(fixed);
  for (const [k, v] of plainMetadataPairs(metadata).slice(0, META_MAX_PAIRS - fixed.length)) meta[k] = v;
  const weight = endpoint.weight ?? 1;
  const checks: CheckBody[] = [
    {
      CheckID: selfCheckId(id),
      Name: 'kube-registrar self-registration',
      Notes: `Passed every ${context.ttlSeconds / 3} s by process ${context.pid} on ${context.hostname}; critical when it is gone.`,
      TTL: `${context.ttlSeconds}s`,
      Status: 'passing',
      DeregisterCriticalServiceAfter: `${context.deregisterAfterSeconds}s`,
    },
  ];
  if (weight === 0) {
    checks.push({
      CheckID: selfDrainCheckId(id),
      Name: 'kube-registrar weight 0',
      Notes: 'The endpoint has weight 0: out of rotation until its weight is raised.',
      TTL: '87600h', // never passed and never expiring: held critical, never reaps
      Status: 'critical',
    });
  }
  return {
    ID: id,
    Name: context.name,
    Tags: tagsToList(tags),
    Address: endpoint.address,
    Port: endpoint.port,
    Meta: meta,
    Weights: { Passing: Math.max(1, weight), Warning: 1 },
    Checks: checks,
  };
}

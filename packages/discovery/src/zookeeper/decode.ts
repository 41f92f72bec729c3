/**
 * From the node data the operator writes to instances, in each of its ZooKeeper formats:
 *
 * - `curator`: Apache Curator x-discovery's ServiceInstance JSON. Address and port come from the
 *   instance (what Curator and Spring readers dial); weight, tags and metadata from the
 *   kube-registrar record in `payload.kubeRegistrar`.
 * - `hostport`: the plain `host:port`, with the record in the owner index node beside it.
 * - `json`: the etcd backend's json value (the record itself).
 *
 * Every format is recognised whatever the Registry is set to, as for etcd. Curator registrations
 * made by someone else (a Spring Boot or Curator application registering itself under the same
 * base path) are served too: they are instances of the service like any other. They have no
 * kube-registrar record, so they get weight 1, no tags, and the string values of
 * `payload.metadata` as metadata (a Spring `weight` entry stays in metadata; it does not steer
 * the balancer). Data that is no endpoint, and etcd's grpc value, are skipped.
 */
import type { Instance } from '../instance.ts';
import { decodeInstance } from '../etcd/decode.ts';

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function stringMap(value: unknown): Record<string, string> {
  if (!isObject(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((kv): kv is [string, string] => typeof kv[1] === 'string'));
}

/** The operator's test for a Curator ServiceInstance (its codec.ts), so both sides agree on what one is. */
function isCuratorInstance(value: Record<string, unknown>): boolean {
  return 'serviceType' in value || 'registrationTimeUTC' in value || 'uriSpec' in value || ('payload' in value && 'id' in value);
}

function validPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}

function decodeCurator(id: string, instance: Record<string, unknown>): Instance | undefined {
  const { address, port } = instance;
  if (typeof address !== 'string' || address === '' || !validPort(port)) return undefined;
  const payload = isObject(instance.payload) ? instance.payload : {};
  if (isObject(payload.kubeRegistrar)) {
    // The record as a json value, with the instance's own address and port.
    return decodeInstance(id, JSON.stringify({ ...payload.kubeRegistrar, address, port }), undefined);
  }
  return { id, address, port, weight: 1, tags: {}, metadata: stringMap(payload.metadata) };
}

/**
 * True when the node data cannot carry the record itself (a plain `host:port`), so the record is
 * read from the owner index node of the same instance id.
 */
export function needsOwnerIndex(data: string): boolean {
  return !isObject(parseJson(data));
}

/**
 * The instance stored in an entry node, or undefined when its data is no endpoint in any format.
 * `id` is the node's name (the operator's instance id; Curator's instance id for foreign
 * registrations); `ownerIndex` is the data of the owner index node of that id, if there is one.
 */
export function decodeZooKeeperInstance(id: string, data: string, ownerIndex: string | undefined): Instance | undefined {
  const parsed = parseJson(data);
  if (isObject(parsed)) {
    if (isCuratorInstance(parsed)) return decodeCurator(id, parsed);
    if ('Addr' in parsed) return undefined; // etcd's grpc value: not a ZooKeeper format
    return decodeInstance(id, data, undefined);
  }
  return decodeInstance(id, data, ownerIndex);
}

/**
 * What an entry looks like in ZooKeeper, in each of the three formats (README, "ZooKeeper"):
 *
 * - `curator` (default): Apache Curator x-discovery's `ServiceInstance` JSON, as Curator's own
 *   `JsonInstanceSerializer` writes it in its compatible mode (no `enabled` field). The payload is
 *   Spring Cloud Zookeeper's `ZookeeperInstance` (`@class`, `id`, `name`, `metadata` of strings), so
 *   Spring's discovery client and any Curator reader with that class on its classpath read it; the
 *   kube-registrar record (owner, tags, weight, source) rides along in the payload's
 *   `kubeRegistrar` field, which those readers ignore (their mapper does not fail on unknown
 *   properties). `metadata` holds the tags, then `weight` (what Spring Cloud LoadBalancer's weighted
 *   supplier reads), then the user's metadata, later keys winning.
 * - `hostport`: the plain value `host:port` that hand-written clients read; the record lives in the
 *   owner index beside it (ephemeral nodes cannot have children), as in the etcd backend.
 * - `json`: the etcd backend's `json` value, byte for byte.
 *
 * Decoding recognises every format whatever the Registry is configured with, so entries written
 * before a format change are still attributed to their owner and come back to be rewritten.
 * `registrationTimeUTC` is kept from the node read back, so equal entries give equal bytes and a
 * re-sync does not fire data watches.
 */
import { UNKNOWN_OWNER } from '../owner.ts';
import type { RegistryEntry } from '../types.ts';
import { decodeEntry, encodeEntry, fromRecord, toStoredRecord, type EntryLocation } from '../etcd/codec.ts';

/** How an entry's node data is written. */
export type ZooKeeperValueFormat = 'curator' | 'hostport' | 'json';

/** Every supported format, for validation of configuration. */
export const ZOOKEEPER_VALUE_FORMATS: readonly ZooKeeperValueFormat[] = ['curator', 'hostport', 'json'];

/** The payload class Spring Cloud Zookeeper registers and reads (`@class` of the payload). */
export const SPRING_INSTANCE_CLASS = 'org.springframework.cloud.zookeeper.discovery.ZookeeperInstance';

/** Curator's `UriSpec` as it serialises `{scheme}://{address}:{port}`, Spring's default. */
const URI_SPEC = {
  parts: [
    { value: 'scheme', variable: true },
    { value: '://', variable: false },
    { value: 'address', variable: true },
    { value: ':', variable: false },
    { value: 'port', variable: true },
  ],
} as const;

/** What to write for one entry: the node data, and for `hostport` the owner index node's data. */
export interface ZooKeeperEncoded {
  readonly value: string;
  readonly ownerIndex?: string;
}

/** A decoded node and the format it was found in. */
export interface ZooKeeperDecoded {
  readonly entry: RegistryEntry;
  readonly format: ZooKeeperValueFormat;
  /** `registrationTimeUTC` of a `curator` node, to be written again unchanged. */
  readonly registeredAtMs?: number;
}

/** True for the formats whose value cannot carry the owner, which therefore lives in the owner index. */
export function zooKeeperUsesOwnerIndex(format: ZooKeeperValueFormat): boolean {
  return format === 'hostport';
}

/** The metadata a Spring or Curator consumer sees: tags, `weight`, then the user's metadata. */
export function springMetadata(entry: RegistryEntry): Record<string, string> {
  const { tags, weight, metadata } = entry.endpoint;
  const merged: Record<string, string> = { ...tags, weight: String(weight), ...metadata };
  return Object.fromEntries(Object.entries(merged).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * Encodes an entry. `registeredAtMs` is the `registrationTimeUTC` of a `curator` node: the value
 * read back for a node that exists, the time of the first write otherwise.
 */
export function encodeZooKeeperEntry(format: ZooKeeperValueFormat, entry: RegistryEntry, registeredAtMs: number): ZooKeeperEncoded {
  if (format !== 'curator') return encodeEntry(format, entry);
  const { endpoint } = entry;
  const instance = {
    name: endpoint.service,
    id: endpoint.instanceId,
    address: endpoint.address,
    port: endpoint.port,
    sslPort: null,
    payload: {
      '@class': SPRING_INSTANCE_CLASS,
      id: endpoint.instanceId,
      name: endpoint.service,
      metadata: springMetadata(entry),
      kubeRegistrar: toStoredRecord(entry),
    },
    registrationTimeUTC: Math.trunc(registeredAtMs),
    serviceType: 'DYNAMIC',
    uriSpec: URI_SPEC,
  };
  return { value: JSON.stringify(instance) };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringValues(value: unknown): Record<string, string> {
  if (!isRecord(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((kv): kv is [string, string] => typeof kv[1] === 'string'));
}

function isCuratorInstance(value: Record<string, unknown>): boolean {
  return 'serviceType' in value || 'registrationTimeUTC' in value || 'uriSpec' in value || ('payload' in value && 'id' in value);
}

function decodeCurator(instance: Record<string, unknown>, at: EntryLocation): ZooKeeperDecoded | undefined {
  const { address, port } = instance;
  if (typeof address !== 'string' || address === '' || typeof port !== 'number') return undefined;
  const payload = isRecord(instance.payload) ? instance.payload : {};
  const record = isRecord(payload.kubeRegistrar) ? payload.kubeRegistrar : undefined;
  const registered = instance.registrationTimeUTC;
  const registeredAtMs = typeof registered === 'number' && Number.isFinite(registered) ? registered : undefined;
  const entry =
    record !== undefined
      ? fromRecord(record, at, { address, port })
      : // Someone else's Curator registration (a Spring application, say): nobody known owns it.
        fromRecord({ owner: UNKNOWN_OWNER, metadata: stringValues(payload.metadata) }, at, { address, port });
  if (entry === undefined) return undefined;
  return registeredAtMs === undefined ? { entry, format: 'curator' } : { entry, format: 'curator', registeredAtMs };
}

/**
 * Decodes an entry node's data, with the owner index node's data (`hostport`) if one exists.
 * Entries without a readable owner come back owned by {@link UNKNOWN_OWNER}; data that is not an
 * endpoint in any known format gives undefined. The etcd-only `grpc` value counts as unknown here.
 */
export function decodeZooKeeperEntry(value: string, ownerIndex: string | undefined, at: EntryLocation): ZooKeeperDecoded | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value) as unknown;
  } catch {
    parsed = undefined;
  }
  if (isRecord(parsed) && isCuratorInstance(parsed)) return decodeCurator(parsed, at);
  const decoded = decodeEntry(value, ownerIndex, at);
  if (decoded === undefined || decoded.format === 'grpc') return undefined;
  return { entry: decoded.entry, format: decoded.format };
}

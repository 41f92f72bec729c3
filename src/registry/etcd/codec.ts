/**
 * Value formats of the etcd backend (DESIGN.md §2) and the way back from bytes to entries.
 *
 * Decoding recognises every format whatever the Registry is configured with, so that entries
 * written before a format change are still attributed to their owner (and never mistaken for free
 * space); they come back flagged `needsRewrite` so the plan moves them to the configured format.
 *
 * The `grpc` value carries no `Metadata`. etcd's Go resolver (client v3.5.0-v3.5.26 and
 * v3.6.0-v3.6.7) hands `Metadata` to grpc-go as `resolver.Address.Metadata`, and grpc-go's
 * pick_first (the default policy up to grpc-go 1.71) compares the old and new addresses of its
 * connection with `==` on every resolver update: a JSON object arrives as a
 * `map[string]interface{}`, and comparing two of those panics ("comparing uncomparable type",
 * etcd-io/etcd#19700, grpc/grpc-go#8225), which kills a Go client of grpc-go 1.67 the moment an
 * entry it resolved is rewritten. A scalar that changes with the entry (the record as a string,
 * say) would not panic, but pick_first would then drop and redial its connection whenever a tag or
 * a weight changes. So the value is what etcd's own `endpoints.Manager` writes for an endpoint
 * without metadata, and the record (owner, tags, weight, metadata) goes to the owner index on the
 * same lease, as for `hostport`.
 */
import { isIP } from 'node:net';

import { UNKNOWN_OWNER } from '../owner.ts';
import type { Owner, RegistryEntry } from '../types.ts';

/** How an entry's value is written: see DESIGN.md §2. */
export type EtcdValueFormat = 'json' | 'grpc' | 'hostport';

/** Every supported format, for validation of configuration. */
export const ETCD_VALUE_FORMATS: readonly EtcdValueFormat[] = ['json', 'grpc', 'hostport'];

/**
 * The `json` value, also the owner index value of the `grpc` and `hostport` formats. Field order is
 * fixed so equal entries give equal bytes.
 */
export interface StoredRecord {
  readonly serviceName: string;
  /** The IP literal when the address is an IP; absent for host names. */
  readonly ip?: string;
  readonly address: string;
  readonly port: number;
  readonly tags: Readonly<Record<string, string>>;
  readonly weight: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** The registry namespace, i.e. the second key segment. */
  readonly namespace: string;
  readonly owner: Owner;
  readonly source: string;
}

/**
 * etcd's gRPC naming-resolver update (`Op` 0 is Add), without `Metadata`: see the module comment
 * for why.
 */
export interface GrpcResolverValue {
  readonly Op: 0;
  readonly Addr: string;
}

/** True for the formats whose value cannot carry the owner, which therefore lives in the owner index. */
export function usesOwnerIndex(format: EtcdValueFormat): boolean {
  return format !== 'json';
}

/** What to write for one entry: the value at the entry key, and for `grpc` and `hostport` the owner index. */
export interface EncodedEntry {
  readonly value: string;
  readonly ownerIndex?: string;
}

/** Where a value was found; identity always comes from the key, never from the value. */
export interface EntryLocation {
  readonly registryNamespace: string;
  readonly service: string;
  readonly instanceId: string;
}

/** `host:port`, with IPv6 literals in brackets as dialers expect. */
export function formatHostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Inverse of {@link formatHostPort}; undefined if `value` is not `host:port` with a valid port. */
export function parseHostPort(value: string): { address: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.%\w-]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(value.trim());
  if (match === null) return undefined;
  const address = match[1] ?? match[2] ?? '';
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  if (match[1] !== undefined && isIP(address) !== 6) return undefined;
  return { address, port };
}

const EMPTY_MAP: Readonly<Record<string, string>> = Object.freeze({});

function sortedMap(map: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  const keys = Object.keys(map);
  // Most entries carry no tags or metadata: nothing to sort or copy (this runs once per entry written).
  if (keys.length === 0) return EMPTY_MAP;
  return Object.fromEntries(Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The {@link StoredRecord} of an entry. */
export function toStoredRecord(entry: RegistryEntry): StoredRecord {
  const { endpoint, owner } = entry;
  return {
    serviceName: endpoint.service,
    ...(isIP(endpoint.address) !== 0 ? { ip: endpoint.address } : {}),
    address: endpoint.address,
    port: endpoint.port,
    tags: sortedMap(endpoint.tags),
    weight: endpoint.weight,
    metadata: sortedMap(endpoint.metadata),
    namespace: entry.registryNamespace,
    owner: { clusterId: owner.clusterId, namespace: owner.namespace, name: owner.name },
    source: endpoint.source,
  };
}

/** Encodes an entry in `format`. */
export function encodeEntry(format: EtcdValueFormat, entry: RegistryEntry): EncodedEntry {
  const record = toStoredRecord(entry);
  switch (format) {
    case 'json':
      return { value: JSON.stringify(record) };
    case 'grpc': {
      const update: GrpcResolverValue = { Op: 0, Addr: formatHostPort(record.address, record.port) };
      return { value: JSON.stringify(update), ownerIndex: JSON.stringify(record) };
    }
    case 'hostport':
      return { value: formatHostPort(record.address, record.port), ownerIndex: JSON.stringify(record) };
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringMap(value: unknown): Record<string, string> {
  if (!isRecord(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((kv): kv is [string, string] => typeof kv[1] === 'string'));
}

function readOwner(value: unknown): Owner {
  if (!isRecord(value)) return UNKNOWN_OWNER;
  const { clusterId, namespace, name } = value;
  if (typeof clusterId !== 'string' || typeof namespace !== 'string' || typeof name !== 'string') return UNKNOWN_OWNER;
  return { clusterId, namespace, name };
}

function validPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}

/**
 * Builds an entry from a record. Address and port come from `addr` when the format carries them
 * separately (grpc `Addr`, the hostport value), because that is what consumers dial.
 */
export function fromRecord(
  record: Record<string, unknown>,
  at: EntryLocation,
  addr?: { address: string; port: number },
): RegistryEntry | undefined {
  const address = addr?.address ?? record.address;
  const port = addr?.port ?? record.port;
  if (typeof address !== 'string' || address === '' || !validPort(port)) return undefined;
  const owner = readOwner(record.owner);
  const weight = typeof record.weight === 'number' && Number.isFinite(record.weight) ? record.weight : 1;
  return {
    registryNamespace: at.registryNamespace,
    k8sNamespace: owner.namespace,
    owner,
    endpoint: {
      service: at.service,
      instanceId: at.instanceId,
      address,
      port,
      weight,
      tags: stringMap(record.tags),
      metadata: stringMap(record.metadata),
      source: typeof record.source === 'string' ? record.source : '',
    },
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** A decoded value and the format it was found in. */
export interface DecodedEntry {
  readonly entry: RegistryEntry;
  readonly format: EtcdValueFormat;
  /**
   * A `grpc` value whose `Metadata` is a JSON object, as kube-registrar wrote it before: it must be
   * rewritten, since grpc-go 1.67 panics when such an entry changes under a connected client.
   */
  readonly objectMetadata?: true;
}

/**
 * Decodes the value at an entry key, with the owner index (`grpc`, `hostport`) if one exists. Entries without
 * a readable owner come back owned by {@link UNKNOWN_OWNER}. Returns undefined for values that are
 * not an endpoint in any known format.
 */
export function decodeEntry(value: string, ownerIndex: string | undefined, at: EntryLocation): DecodedEntry | undefined {
  const parsed = parseJson(value);
  if (isRecord(parsed)) {
    if (typeof parsed.Addr === 'string') {
      const addr = parseHostPort(parsed.Addr);
      const index = ownerIndex === undefined ? undefined : parseJson(ownerIndex);
      const objectMetadata = isRecord(parsed.Metadata);
      // The owner index is where the record lives now; an object in Metadata is where it lived before.
      const record = isRecord(index) ? index : isRecord(parsed.Metadata) ? parsed.Metadata : {};
      const entry = addr === undefined ? undefined : fromRecord(record, at, addr);
      if (entry === undefined) return undefined;
      return objectMetadata ? { entry, format: 'grpc', objectMetadata } : { entry, format: 'grpc' };
    }
    const entry = fromRecord(parsed, at);
    return entry === undefined ? undefined : { entry, format: 'json' };
  }
  const addr = parseHostPort(value);
  if (addr === undefined) return undefined;
  const index = ownerIndex === undefined ? undefined : parseJson(ownerIndex);
  const entry = fromRecord(isRecord(index) ? index : {}, at, addr);
  return entry === undefined ? undefined : { entry, format: 'hostport' };
}

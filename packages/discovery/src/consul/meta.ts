/**
 * The Meta keys and value encodings kube-registrar writes to Consul, as far as consumers need them:
 * the operator's encoding (src/registry/consul/codec.ts) restated here because this package must
 * not depend on the operator. Tags and metadata maps are stored as JSON with non-ASCII escaped,
 * split over `key`, `key-1`, ... when longer than one Meta value may be; tags are also written as
 * Consul Tags `k=v`, which is what a service registered by hand has.
 */

/** Meta keys kube-registrar writes. */
export const META = {
  ownerCluster: 'kr-owner-cluster',
  ownerNamespace: 'kr-owner-namespace',
  ownerName: 'kr-owner-name',
  registryNamespace: 'kr-registry-namespace',
  service: 'kr-service',
  instance: 'kr-instance',
  source: 'kr-source',
  tags: 'kr-tags',
  metadata: 'kr-metadata',
  /** `heartbeat` on the operator's heartbeat services, which are not endpoints. */
  role: 'kr-role',
} as const;

/** Value of {@link META.role} on the operator's heartbeat services. */
export const HEARTBEAT_ROLE = 'heartbeat';

/** Prefix of every Meta key kube-registrar owns. */
export const META_PREFIX = 'kr-';

/** Consul's limits on service Meta (agent/structs ValidateServiceMetadata). */
export const META_MAX_PAIRS = 64;
export const META_MAX_KEY_LENGTH = 128;
export const META_MAX_VALUE_BYTES = 512;
const META_KEY = /^[A-Za-z0-9_-]+$/;

function sortedEntries(map: Readonly<Record<string, string>>): [string, string][] {
  return Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** JSON with non-ASCII escaped, so that string length equals UTF-8 length and chunks never split a character. */
export function asciiJson(map: Readonly<Record<string, string>>): string {
  return JSON.stringify(Object.fromEntries(sortedEntries(map))).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** `key`, `key-1`, `key-2`, ...: one value split over as many Meta keys as it needs. */
export function chunked(key: string, value: string): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i === 0 || i * META_MAX_VALUE_BYTES < value.length; i++) {
    out.push([i === 0 ? key : `${key}-${i}`, value.slice(i * META_MAX_VALUE_BYTES, (i + 1) * META_MAX_VALUE_BYTES)]);
  }
  return out;
}

/** The value {@link chunked} split, joined again; undefined when `key` is absent. */
export function unchunked(meta: Readonly<Record<string, string>>, key: string): string | undefined {
  let value = meta[key];
  if (value === undefined) return undefined;
  for (let i = 1; ; i++) {
    const next = meta[`${key}-${i}`];
    if (next === undefined) return value;
    value += next;
  }
}

/** A JSON object of strings, or undefined for anything else (absent, damaged, other types). */
export function parseStringMap(json: string | undefined): Record<string, string> | undefined {
  if (json === undefined) return undefined;
  try {
    const value = JSON.parse(json) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
    const entries = Object.entries(value);
    if (entries.some(([, v]) => typeof v !== 'string')) return undefined;
    // fromEntries defines own properties, so a key named __proto__ is kept rather than dropped.
    return Object.fromEntries(entries);
  } catch {
    return undefined;
  }
}

/** Consul Tags as a map: `k=v` splits at the first '=', a tag without '=' is a key with value ''. */
export function tagsFromList(tags: readonly string[]): Record<string, string> {
  const entries: [string, string][] = tags.map((tag) => {
    const i = tag.indexOf('=');
    return i < 0 ? [tag, ''] : [tag.slice(0, i), tag.slice(i + 1)];
  });
  return Object.fromEntries(entries);
}

/** A tags map as Consul Tags: `k=v`, sorted by key, as the operator writes them. */
export function tagsToList(tags: Readonly<Record<string, string>>): string[] {
  return sortedEntries(tags).map(([k, v]) => `${k}=${v}`);
}

/** UTF-8 length, which is what Consul's Meta limits count. */
export function byteLength(value: string): number {
  return Buffer.byteLength(value, 'utf8');
}

/**
 * Whether a metadata pair can also be written as a plain Meta pair, so that consumers can filter on
 * `Service.Meta.<key>` (the operator copies those too).
 */
export function isPlainMetaKey(key: string, value: string): boolean {
  return (
    META_KEY.test(key) &&
    key.length <= META_MAX_KEY_LENGTH &&
    !key.startsWith(META_PREFIX) &&
    !key.startsWith('consul-') &&
    byteLength(value) <= META_MAX_VALUE_BYTES
  );
}

/** Metadata pairs in the order they are copied into Meta. */
export function plainMetadataPairs(metadata: Readonly<Record<string, string>>): [string, string][] {
  return sortedEntries(metadata).filter(([k, v]) => isPlainMetaKey(k, v));
}

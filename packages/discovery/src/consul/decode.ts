/**
 * From `GET /v1/health/service/<name>` entries to instances. Pure, and tolerant: an entry this
 * version cannot use (no address, no port, a heartbeat, something hand-made) is left out and
 * named, never allowed to break the read of the others.
 */
import { instanceId, type Instance } from '../instance.ts';
import { HEARTBEAT_ROLE, META, parseStringMap, tagsFromList, unchunked } from './meta.ts';

/** What a health read gave: the instances, and the entries left out with the reason. */
export interface DecodedHealth {
  readonly instances: Instance[];
  readonly skipped: { readonly id: string; readonly reason: string }[];
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function stringMap(value: unknown): Record<string, string> {
  return Object.fromEntries(Object.entries(record(value)).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((t): t is string => typeof t === 'string') : [];
}

/**
 * One health entry as an instance, or the reason it is not one. `id` is the operator's instance id
 * (`kr-instance`, e.g. `10.0.0.12:8080`), else the Consul service id; the address falls back to the
 * node's, as Consul's DNS interface does; tags and metadata come from the JSON Meta the operator
 * writes, else from Consul's `k=v` Tags and nothing.
 */
export function decodeHealthEntry(entry: unknown): Instance | string {
  const service = record(record(entry)['Service']);
  const meta = stringMap(service['Meta']);
  if (meta[META.role] === HEARTBEAT_ROLE) return 'a kube-registrar heartbeat, not an endpoint';
  const address = text(service['Address']) || text(record(record(entry)['Node'])['Address']);
  if (address === '') return 'no service or node address';
  const port = service['Port'];
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return `port ${String(port)} is not a TCP port`;
  const passing = record(service['Weights'])['Passing'];
  const weight = typeof passing === 'number' && Number.isFinite(passing) && passing >= 0 ? passing : 1;
  const id = meta[META.instance] ?? (text(service['ID']) || undefined);
  return {
    ...(id !== undefined ? { id } : {}),
    address,
    port,
    weight,
    tags: parseStringMap(unchunked(meta, META.tags)) ?? tagsFromList(stringList(service['Tags'])),
    metadata: parseStringMap(unchunked(meta, META.metadata)) ?? {},
  };
}

/**
 * Every usable instance of a health read, sorted by id: the order is then the same whichever
 * server answered, so an unchanged set compares equal and wakes nobody.
 */
export function decodeHealth(entries: readonly unknown[]): DecodedHealth {
  const out: DecodedHealth = { instances: [], skipped: [] };
  for (const entry of entries) {
    const decoded = decodeHealthEntry(entry);
    if (typeof decoded === 'string') out.skipped.push({ id: text(record(record(entry)['Service'])['ID']), reason: decoded });
    else out.instances.push(decoded);
  }
  out.instances.sort((a, b) => {
    const x = instanceId(a);
    const y = instanceId(b);
    return x < y ? -1 : x > y ? 1 : 0;
  });
  return out;
}

/**
 * From the bytes the operator writes to instances. Every format is recognised whatever a Registry
 * is configured with, because a Registry whose format changed keeps old values around until the
 * operator rewrites them, and a consumer must read both meanwhile. Anything that is not an
 * endpoint in a known format is skipped: a consumer never fails because someone wrote garbage
 * next to the entries.
 */
import { isIP } from 'node:net';

import type { Instance } from '../instance.ts';
import type { EntryOwner } from './record.ts';

/** `host:port` split into its parts; undefined unless the port is 1-65535 and an IPv6 host is bracketed. */
export function parseHostPort(value: string): { address: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.%\w-]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(value.trim());
  if (match === null) return undefined;
  const address = match[1] ?? match[2] ?? '';
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  if (match[1] !== undefined && isIP(address) !== 6) return undefined;
  return { address, port };
}

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

function validPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}

/** The record's weight; 0 is kept (out of rotation), anything unusable counts as the default 1. */
function weightOf(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 1;
}

/** The value at an entry key, parsed: where to dial and where the record is. */
interface ParsedValue {
  /** Set when the value carries the address itself (grpc `Addr`, hostport). */
  readonly addr?: { address: string; port: number };
  /** The record inside the value (json, or an old grpc value's `Metadata`), if any. */
  readonly record?: Record<string, unknown>;
  /** Whether the record lives in the owner index (grpc, hostport). */
  readonly indexed: boolean;
}

function parseValue(value: string): ParsedValue | undefined {
  const parsed = parseJson(value);
  if (isObject(parsed)) {
    if (typeof parsed.Addr === 'string') {
      const addr = parseHostPort(parsed.Addr);
      if (addr === undefined) return undefined;
      // Values written before the record moved to the owner index carry it in Metadata.
      return isObject(parsed.Metadata) ? { addr, record: parsed.Metadata, indexed: true } : { addr, indexed: true };
    }
    return { record: parsed, indexed: false };
  }
  const addr = parseHostPort(value);
  return addr === undefined ? undefined : { addr, indexed: true };
}

/** The record that applies to a parsed value: the owner index wins over an old grpc `Metadata`. */
function recordOf(parsed: ParsedValue, ownerIndex: string | undefined): Record<string, unknown> {
  if (!parsed.indexed) return parsed.record ?? {};
  const index = ownerIndex === undefined ? undefined : parseJson(ownerIndex);
  return isObject(index) ? index : (parsed.record ?? {});
}

/**
 * The instance stored at an entry key, or undefined when the value is no endpoint in any format.
 * `id` is the key's last segment (the operator's instance id); `ownerIndex` is the value at the
 * owner index key of the same id, if there is one. Address and port come from the value itself
 * when the format carries them (grpc `Addr`, hostport), since that is what the value's readers dial.
 */
export function decodeInstance(id: string, value: string, ownerIndex: string | undefined): Instance | undefined {
  const parsed = parseValue(value);
  if (parsed === undefined) return undefined;
  const record = recordOf(parsed, ownerIndex);
  const address = parsed.addr?.address ?? record.address;
  const port = parsed.addr?.port ?? record.port;
  if (typeof address !== 'string' || address === '' || !validPort(port)) return undefined;
  return { id, address, port, weight: weightOf(record.weight), tags: stringMap(record.tags), metadata: stringMap(record.metadata) };
}

/** The owner recorded for an entry, or undefined when it carries none that can be read. */
export function decodeOwner(value: string, ownerIndex: string | undefined): EntryOwner | undefined {
  const parsed = parseValue(value);
  if (parsed === undefined) return undefined;
  const owner = recordOf(parsed, ownerIndex).owner;
  if (!isObject(owner)) return undefined;
  const { clusterId, namespace, name } = owner;
  if (typeof clusterId !== 'string' || typeof namespace !== 'string' || typeof name !== 'string') return undefined;
  return { clusterId, namespace, name };
}

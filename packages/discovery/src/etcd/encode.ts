/**
 * From a self-registered endpoint to the bytes the operator would write for it, so consumers (and
 * Go gRPC clients reading the `grpc` format) cannot tell a process's own entry from one the
 * operator wrote, except by its owner.
 */
import { isIP } from 'node:net';

import type { EntryOwner, EtcdValueFormat, StoredRecord } from './record.ts';

/** What is written for one entry: the value, and for grpc/hostport the owner index record. */
export interface EncodedEntry {
  readonly value: string;
  readonly ownerIndex?: string;
}

/** What a record is built from. */
export interface RecordInput {
  readonly service: string;
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  readonly tags: Readonly<Record<string, string>>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly namespace: string;
  readonly owner: EntryOwner;
  readonly source: string;
}

/** `host:port` with IPv6 literals in brackets, as dialers (and the operator) write it. */
export function formatHostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Keys sorted, so equal maps give equal bytes (the operator compares bytes to find what changed). */
function sortedMap(map: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The stored record, fields in the operator's order. */
export function toStoredRecord(input: RecordInput): StoredRecord {
  return {
    serviceName: input.service,
    ...(isIP(input.address) !== 0 ? { ip: input.address } : {}),
    address: input.address,
    port: input.port,
    tags: sortedMap(input.tags),
    weight: input.weight,
    metadata: sortedMap(input.metadata),
    namespace: input.namespace,
    owner: { clusterId: input.owner.clusterId, namespace: input.owner.namespace, name: input.owner.name },
    source: input.source,
  };
}

/** The value (and owner index record) of an entry in `format`. */
export function encodeRecord(format: EtcdValueFormat, input: RecordInput): EncodedEntry {
  const record = toStoredRecord(input);
  switch (format) {
    case 'json':
      return { value: JSON.stringify(record) };
    case 'grpc':
      // No Metadata: grpc-go 1.67's pick_first panics comparing map metadata (see the operator's codec).
      return { value: JSON.stringify({ Op: 0, Addr: formatHostPort(record.address, record.port) }), ownerIndex: JSON.stringify(record) };
    case 'hostport':
      return { value: formatHostPort(record.address, record.port), ownerIndex: JSON.stringify(record) };
  }
}

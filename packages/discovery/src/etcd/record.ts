/**
 * The record the operator stores for an endpoint: the whole `json` value, and the owner index
 * value of the `grpc` and `hostport` formats. Field order is the operator's, so a record encoded
 * here is byte for byte what the operator would write for the same endpoint and owner.
 */

/** The value formats of the operator's etcd backend (DESIGN.md §2). */
export type EtcdValueFormat = 'json' | 'grpc' | 'hostport';

/** Every value format, for validating options. */
export const ETCD_VALUE_FORMATS: readonly EtcdValueFormat[] = ['json', 'grpc', 'hostport'];

/** Who vouches for an entry: a cluster and a ServiceInstance, or for self-registered processes `process:<hostname>`. */
export interface EntryOwner {
  readonly clusterId: string;
  readonly namespace: string;
  readonly name: string;
}

/** The stored record, as the operator writes it. */
export interface StoredRecord {
  readonly serviceName: string;
  /** The IP literal when the address is an IP; absent for host names. */
  readonly ip?: string;
  readonly address: string;
  readonly port: number;
  readonly tags: Readonly<Record<string, string>>;
  readonly weight: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** The registry namespace (the key's second segment). */
  readonly namespace: string;
  readonly owner: EntryOwner;
  readonly source: string;
}

/** True for the formats whose value cannot carry the record, which therefore lives in the owner index. */
export function usesOwnerIndex(format: EtcdValueFormat): boolean {
  return format !== 'json';
}

/**
 * Where the operator's entries live in etcd, read from the consumer side. The layout is the
 * operator's (DESIGN.md §2): entries at `<prefix>/<namespace>/<service>/<instanceId>`, and for the
 * `grpc` and `hostport` formats the full record in an owner index at
 * `<prefix>/_kube-registrar/owners/<namespace>/<service>/<instanceId>`. The prefix may start with
 * '/' (`/services`) or not (`grpc`, as Go gRPC clients need); trailing slashes are dropped, so
 * `/services/` and `/services` name the same place.
 */
import { DiscoveryConfigError } from '../errors.ts';

/** The operator's reserved first segment under the prefix (its owner index and lease ids live there). */
export const RESERVED_SEGMENT = '_kube-registrar';

/** The keys of one service in one registry namespace. */
export interface ServiceKeys {
  /** `<prefix>/<ns>/<service>/`: one key per instance. */
  readonly entries: string;
  /** `<prefix>/_kube-registrar/owners/<ns>/<service>/`: the record of each grpc/hostport instance. */
  readonly ownerIndex: string;
}

/** `prefix` without trailing slashes; '' is the root of the keyspace, as for the operator. */
export function normalisePrefix(prefix: string): string {
  return prefix.replace(/\/+$/, '');
}

/** Refuses a service name that would not stay one key segment. */
export function checkService(service: string): string {
  if (service === '' || service.includes('/') || service === '.' || service === '..') {
    throw new DiscoveryConfigError(
      `service name ${JSON.stringify(service)} cannot be looked up in etcd: it must be non-empty, not '.' or '..', and contain no '/' ` +
        '(use the service name of the ServiceInstance, e.g. user-service)',
    );
  }
  return service;
}

/** The keys of `service` in registry namespace `namespace` under `prefix` (normalised here). */
export function serviceKeys(prefix: string, namespace: string, service: string): ServiceKeys {
  const root = normalisePrefix(prefix);
  checkService(service);
  return {
    entries: `${root}/${namespace}/${service}/`,
    ownerIndex: `${root}/${RESERVED_SEGMENT}/owners/${namespace}/${service}/`,
  };
}

/**
 * The instance id of `key` if it sits directly under `parent` (which ends in '/'), else undefined:
 * deeper keys are not entries of the operator and are left alone.
 */
export function childName(parent: string, key: string): string | undefined {
  if (!key.startsWith(parent)) return undefined;
  const rest = key.slice(parent.length);
  return rest === '' || rest.includes('/') ? undefined : rest;
}

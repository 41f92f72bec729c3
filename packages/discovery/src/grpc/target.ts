/**
 * gRPC dial targets as etcd's Go naming resolver reads them: the target's path without its leading
 * '/' is the key prefix of the service's entries, `<prefix>/<namespace>/<service>`. Parsing is kept
 * apart from the resolver so that it can be tested without grpc-js.
 */
import { DiscoveryConfigError } from '../errors.ts';

/** Where a target's entries live. */
export interface ResolvedTarget {
  /** The Registry's `spec.etcd.prefix`, e.g. `grpc` or `/services`; '' for the root of the keyspace. */
  readonly prefix: string;
  /** The registry namespace. */
  readonly namespace: string;
  /** The service name of the ServiceInstance. */
  readonly service: string;
}

/**
 * Splits a target path as etcd's Go resolver reads it: `grpc/prod/greeter` is prefix `grpc`,
 * namespace `prod`, service `greeter`; `/services/prod/users` (from `etcd:////services/prod/users`)
 * is prefix `/services`. Throws a `DiscoveryConfigError` saying how to write the target when the
 * path names no prefix, namespace and service, or a namespace the operator never writes.
 */
export function parseTargetPath(scheme: string, path: string): ResolvedTarget {
  const segments = path.replace(/\/+$/, '').split('/');
  const service = segments.pop() ?? '';
  const namespace = segments.pop() ?? '';
  if (!isKeySegment(service) || !isKeySegment(namespace) || segments.length === 0) {
    throw new DiscoveryConfigError(
      `gRPC target ${targetString(scheme, path)} does not name a service: dial ${scheme}:///<prefix>/<namespace>/<service>, ` +
        `e.g. ${scheme}:///grpc/prod/greeter for a Registry with spec.etcd.prefix "grpc" ` +
        `(a prefix starting with '/' needs a fourth slash: ${scheme}:////services/prod/greeter)`,
    );
  }
  if (namespace.startsWith('_')) {
    throw new DiscoveryConfigError(
      `gRPC target ${targetString(scheme, path)} names registry namespace ${namespace}, but names starting with '_' are ` +
        `kube-registrar's own bookkeeping, never a namespace of services: check the namespace part of the target`,
    );
  }
  return { prefix: segments.join('/'), namespace, service };
}

/**
 * The authority (HTTP/2 `:authority`, and the TLS server name unless `grpc.ssl_target_name_override`
 * says otherwise) of a channel to `path`: the service name. grpc-js asks for it while constructing
 * the channel, where a throw would surface as an exception from the client's constructor rather
 * than as a failed call; so an unparsable path gets a placeholder here and its calls fail with the
 * resolver's explanation.
 */
export function defaultAuthority(scheme: string, path: string): string {
  try {
    return parseTargetPath(scheme, path).service;
  } catch {
    return 'localhost';
  }
}

/** The target as the user wrote it (up to the authority, which etcd's resolver ignores too). */
export function targetString(scheme: string, path: string): string {
  return `${scheme}:///${path}`;
}

function isKeySegment(value: string): boolean {
  return value !== '' && value !== '.' && value !== '..';
}

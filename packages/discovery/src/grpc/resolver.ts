/**
 * A name resolver for @grpc/grpc-js, so TypeScript gRPC clients dial
 * `etcd:///<prefix>/<namespace>/<service>` as Go clients do with etcd's naming resolver
 * (`go.etcd.io/etcd/client/v3/naming/resolver`): the target's path, without its leading '/', is
 * the key prefix the operator writes the service's entries under. Its last two segments are the
 * registry namespace and the service; what comes before is the Registry's `spec.etcd.prefix`
 * (`etcd:////services/prod/users` reaches a prefix `/services`, as in Go). Entries of every value
 * format are read (`grpc`, `json`, `hostport`), not only the `grpc` one Go needs.
 *
 * Resolution comes from the discovery client's watch caches: channels to one service share one
 * watch, the address set follows every change without polling, and a registry outage leaves
 * channels with the last known addresses instead of none.
 *
 * What applies to gRPC channels: an instance with weight 0 is left out (out of rotation, as for
 * every strategy of the client); every other instance is handed to grpc-js as one address, and
 * grpc-js balances over them itself: `pick_first` (its default) or whatever the channel's service
 * config says, e.g. `{"loadBalancingConfig":[{"round_robin":{}}]}`. Weights above 0, tags, this
 * package's strategies, outlier ejection, breakers and retry budgets do not apply. For those, call
 * through `DiscoveryClient.call()` with a channel per instance instead.
 *
 * grpc-js's own behaviour with an empty set: `round_robin` fails calls at once with UNAVAILABLE
 * and a note naming the service; `pick_first` keeps a connection it already has until that
 * connection breaks.
 *
 * Needs @grpc/grpc-js 1.14 or later (the resolver listener became a function in 1.14), imported
 * from `@kube-registrar/discovery/grpc` so that users without gRPC never load it.
 */
import { experimental } from '@grpc/grpc-js';
import type { IBackoffFactory } from 'cockatiel';

import { DiscoveryClient } from '../client.ts';
import { DiscoveryConfigError } from '../errors.ts';
import { connect, type EtcdConnectionOptions } from '../etcd/client.ts';
import { etcdSource } from '../etcd/source.ts';
import type { DiscoveryLogger } from '../logger.ts';
import type { DiscoverySource } from '../source.ts';
import { resolverClass } from './channel-resolver.ts';
import { parseTargetPath, targetString, type ResolvedTarget } from './target.ts';

export { parseTargetPath, type ResolvedTarget } from './target.ts';

/** Makes the source of one key prefix and registry namespace; called once per pair. */
export type SourceFactory = (prefix: string, namespace: string) => DiscoverySource;

/**
 * A registered resolver scheme. `close()` stops every watch it opened and the etcd client it
 * created: channels that had resolved keep their last addresses (they no longer follow changes),
 * channels to services not yet followed fail with UNAVAILABLE. grpc-js cannot unregister a scheme;
 * registering it again replaces this registration for new channels.
 */
export interface ResolverRegistration {
  /** The URI scheme registered, e.g. `etcd`. */
  readonly scheme: string;
  close(): Promise<void>;
}

/** Options every registration takes. */
export interface ResolverOptions {
  /** URI scheme to register; default `etcd`, as Go clients dial. */
  readonly scheme?: string;
  /**
   * If set, targets in any other registry namespace are refused (their calls fail with
   * UNAVAILABLE saying so): a process pinned to `dev` can then never dial prod by a typo in a target.
   */
  readonly namespace?: string;
  /**
   * How long a new channel waits for the first read of its service before its calls fail with
   * UNAVAILABLE (the watch keeps trying, and the channel resolves again on its next call).
   * Default 10 s.
   */
  readonly initialReadTimeoutMs?: number;
  /** Where the watch caches log registry outages. Pino-compatible. Default: nowhere. */
  readonly logger?: DiscoveryLogger;
}

/** Options of {@link registerDiscoveryResolver}. */
export interface DiscoveryResolverOptions extends ResolverOptions {
  /** Makes the source of one key prefix and registry namespace. */
  readonly sourceFor: SourceFactory;
}

/** Options of {@link registerEtcdResolver}: how to reach etcd, and how to read it. */
export interface EtcdResolverOptions extends EtcdConnectionOptions, ResolverOptions {
  /** Delays between attempts to follow a service again. Default as `etcdSource`'s. */
  readonly backoff?: IBackoffFactory<unknown>;
  /** Deadline of each etcd read, ms. Default 10 s. */
  readonly callTimeoutMs?: number;
}

const DEFAULT_SCHEME = 'etcd';
const DEFAULT_INITIAL_READ_TIMEOUT_MS = 10_000;
/** Schemes grpc-js resolves itself: replacing one would reroute every channel of the process. */
const BUILT_IN_SCHEMES = new Set(['dns', 'ipv4', 'ipv6', 'unix', 'unix-abstract', 'vsock', 'xds']);

/**
 * Registers a grpc-js resolver for `etcd:///…` targets (or `options.scheme`) that reads etcd
 * through one etcd3 client: the caller's `client`, or one created from `hosts` and closed by the
 * registration's `close()`. One watch per service, shared by every channel to it.
 */
export function registerEtcdResolver(options: EtcdResolverOptions): ResolverRegistration {
  const { client: given, hosts, auth, credentials, grpcOptions, dialTimeout, backoff, callTimeoutMs, logger } = options;
  const { client, owned } = connect({ client: given, hosts, auth, credentials, grpcOptions, dialTimeout }, 'registerEtcdResolver');
  const sourceFor: SourceFactory = (prefix, namespace) => etcdSource({ client, prefix, namespace, backoff, callTimeoutMs, logger });
  return register({ ...options, sourceFor }, () => {
    if (owned) client.close();
  });
}

/**
 * Registers a grpc-js resolver for `options.scheme` that reads through discovery sources made by
 * `options.sourceFor`: one source (and so one watch per service) per prefix and namespace, shared
 * by every channel.
 */
export function registerDiscoveryResolver(options: DiscoveryResolverOptions): ResolverRegistration {
  return register(options, () => {});
}

function register(options: DiscoveryResolverOptions, afterClose: () => void): ResolverRegistration {
  const scheme = checkScheme(options.scheme ?? DEFAULT_SCHEME);
  const initialReadTimeoutMs = options.initialReadTimeoutMs ?? DEFAULT_INITIAL_READ_TIMEOUT_MS;
  if (!(initialReadTimeoutMs > 0) || !Number.isFinite(initialReadTimeoutMs)) {
    throw new DiscoveryConfigError(`initialReadTimeoutMs is ${initialReadTimeoutMs}: it must be a positive number of milliseconds`);
  }
  const clients = new Map<string, DiscoveryClient>();
  let closed = false;

  function clientFor(target: ResolvedTarget): DiscoveryClient {
    const key = `${target.prefix}\u0000${target.namespace}`;
    let client = clients.get(key);
    if (client === undefined) {
      client = new DiscoveryClient({ source: options.sourceFor(target.prefix, target.namespace), logger: options.logger });
      clients.set(key, client);
    }
    return client;
  }

  const resolver = resolverClass({
    scheme,
    initialReadTimeoutMs,
    target(uri) {
      const target = parseTargetPath(scheme, uri.path);
      if (options.namespace !== undefined && target.namespace !== options.namespace) {
        throw new DiscoveryConfigError(
          `gRPC target ${targetString(scheme, uri.path)} is in registry namespace ${target.namespace}, but this process is pinned to ` +
            `${options.namespace}: dial ${scheme}:///${target.prefix}/${options.namespace}/${target.service}, or change the resolver's namespace option`,
        );
      }
      return target;
    },
    cache(target) {
      if (closed) {
        throw new DiscoveryConfigError(
          `the ${scheme}: resolver was closed: register it again before creating channels to ${scheme}: targets`,
        );
      }
      return clientFor(target).cache(target.service);
    },
  });
  experimental.registerResolver(scheme, resolver);

  return {
    scheme,
    close: async () => {
      if (closed) return;
      closed = true;
      const all = [...clients.values()];
      clients.clear();
      await Promise.allSettled(all.map((c) => c.close()));
      afterClose();
    },
  };
}

function checkScheme(scheme: string): string {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*$/.test(scheme)) {
    throw new DiscoveryConfigError(
      `resolver scheme ${JSON.stringify(scheme)} is not a URI scheme: use letters, digits, '+', '-' and '.', e.g. etcd`,
    );
  }
  if (BUILT_IN_SCHEMES.has(scheme.toLowerCase())) {
    throw new DiscoveryConfigError(
      `resolver scheme ${scheme} is grpc-js's own: registering it would reroute every channel of this process; use etcd`,
    );
  }
  return scheme;
}

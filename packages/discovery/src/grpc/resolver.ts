/**
 * A name resolver for @grpc/grpc-js, so TypeScript gRPC clients dial
 * `etcd:///<prefix>/<namespace>/<service>` as Go clients do with etcd's naming resolver
 * (`go.etcd.io/etcd/client/v3/naming/resolver`): the target's path, without its leading '/', is
 * the key prefix the operator writes the service's entries under. Its last two segments are the
 * registry namespace and the service; what comes before is the Registry's `spec.etcd.prefix`
 * (`etcd:////services/prod/users` reaches a prefix `/services`, as in Go).
 *
 * Resolution comes from the client's watch caches, so channels to one service share one watch
 * with `call()` and `pick()`, the set follows every change without polling, and a registry outage
 * leaves channels with the last known addresses instead of none. grpc-js load-balances over the
 * addresses itself (`pick_first` unless the service config says `round_robin`): weights, tags and
 * this package's strategies and ejection do not apply to gRPC channels. For those, call through
 * `DiscoveryClient.call()` with a channel per instance instead.
 *
 * Needs @grpc/grpc-js 1.14 or later (the resolver listener became a function in 1.14), imported
 * from `@kube-registrar/discovery/grpc` so that users without gRPC never load it.
 */
import { experimental, status, type ChannelOptions } from '@grpc/grpc-js';

import { DiscoveryClient } from '../client.ts';
import { DiscoveryConfigError } from '../errors.ts';
import type { Instance } from '../instance.ts';
import type { DiscoverySource } from '../source.ts';

type GrpcUri = experimental.GrpcUri;
type ResolverListener = experimental.ResolverListener;

/** Makes the source of one key prefix and registry namespace; called once per pair. */
export type SourceFactory = (prefix: string, namespace: string) => DiscoverySource;

/** Where a target's entries live. */
export interface ResolvedTarget {
  readonly prefix: string;
  readonly namespace: string;
  readonly service: string;
}

/**
 * Splits a target path as etcd's Go resolver reads it: `grpc/prod/greeter` is prefix `grpc`,
 * namespace `prod`, service `greeter`; `/services/prod/users` is prefix `/services`.
 */
export function parseTargetPath(scheme: string, path: string): ResolvedTarget {
  const segments = path.replace(/\/+$/, '').split('/');
  const service = segments.pop();
  const namespace = segments.pop();
  if (service === undefined || service === '' || namespace === undefined || namespace === '' || segments.length === 0) {
    throw new DiscoveryConfigError(
      `gRPC target ${scheme}:///${path} does not name a service: dial ${scheme}:///<prefix>/<namespace>/<service>, ` +
        `e.g. ${scheme}:///grpc/prod/greeter for a Registry with spec.etcd.prefix "grpc" (a prefix starting with '/' needs a fourth slash: ${scheme}:////services/prod/greeter)`,
    );
  }
  return { prefix: segments.join('/'), namespace, service };
}

/** A registered resolver scheme; `close()` stops every watch it opened (channels then keep their last addresses). */
export interface ResolverRegistration {
  close(): Promise<void>;
}

/** Options of {@link registerDiscoveryResolver}. */
export interface DiscoveryResolverOptions {
  /** URI scheme to register; default `etcd`, as Go clients dial. */
  readonly scheme?: string;
  /** Makes the source of one key prefix and registry namespace. */
  readonly sourceFor: SourceFactory;
  /**
   * If set, targets in any other registry namespace are refused: a process pinned to `dev` can
   * then never dial prod by a typo in a target.
   */
  readonly namespace?: string;
}

/**
 * Registers a grpc-js resolver for `scheme` that reads through the discovery client. One client
 * (and so one watch per service) per prefix and namespace, shared by every channel.
 */
export function registerDiscoveryResolver(options: DiscoveryResolverOptions): ResolverRegistration {
  const scheme = options.scheme ?? 'etcd';
  const clients = new Map<string, DiscoveryClient>();

  function clientFor(target: ResolvedTarget): DiscoveryClient {
    const key = `${target.prefix}\u0000${target.namespace}`;
    let client = clients.get(key);
    if (client === undefined) {
      client = new DiscoveryClient({ source: options.sourceFor(target.prefix, target.namespace) });
      clients.set(key, client);
    }
    return client;
  }

  function resolveTarget(uri: GrpcUri): ResolvedTarget {
    const target = parseTargetPath(scheme, uri.path);
    if (options.namespace !== undefined && target.namespace !== options.namespace) {
      throw new DiscoveryConfigError(
        `gRPC target ${scheme}:///${uri.path} is in registry namespace ${target.namespace}, but this process is pinned to ${options.namespace}`,
      );
    }
    return target;
  }

  class DiscoveryResolver implements experimental.Resolver {
    readonly #target: ResolvedTarget | DiscoveryConfigError;
    readonly #listener: ResolverListener;
    #unsubscribe: (() => void) | undefined;
    #reported: readonly Instance[] | undefined;

    constructor(uri: GrpcUri, listener: ResolverListener, _options: ChannelOptions) {
      this.#listener = listener;
      try {
        this.#target = resolveTarget(uri);
      } catch (err: unknown) {
        this.#target = err instanceof DiscoveryConfigError ? err : new DiscoveryConfigError(String(err));
      }
    }

    static getDefaultAuthority(uri: GrpcUri): string {
      return parseTargetPath(scheme, uri.path).service;
    }

    updateResolution(): void {
      const target = this.#target;
      if (target instanceof DiscoveryConfigError) {
        const error = target;
        setImmediate(() => this.#fail(status.INVALID_ARGUMENT, error.message));
        return;
      }
      if (this.#unsubscribe !== undefined) {
        // Watching already: the channel asks again after a failed connection. The watch has the
        // latest set; hand it over again so the policy retries with it.
        const last = this.#reported;
        if (last !== undefined) setImmediate(() => this.#report(last));
        return;
      }
      const cache = clientFor(target).cache(target.service);
      this.#unsubscribe = cache.subscribe((instances) => this.#report(instances));
      if (cache.loaded) {
        const now = cache.instances;
        setImmediate(() => this.#report(now));
      } else {
        cache.loadedWithin(30_000).then(
          () => this.#report(cache.instances),
          (err: unknown) => {
            if (this.#unsubscribe !== undefined) this.#fail(status.UNAVAILABLE, err instanceof Error ? err.message : String(err));
          },
        );
      }
    }

    destroy(): void {
      this.#unsubscribe?.();
      this.#unsubscribe = undefined;
      this.#reported = undefined;
    }

    #report(instances: readonly Instance[]): void {
      if (this.#unsubscribe === undefined) return; // destroyed meanwhile
      this.#reported = instances;
      const endpoints = instances.filter((i) => (i.weight ?? 1) > 0).map((i) => ({ addresses: [{ host: i.address, port: i.port }] }));
      this.#listener(experimental.statusOrFromValue(endpoints), {}, null, endpoints.length === 0 ? 'no instance registered' : '');
    }

    #fail(code: status, details: string): void {
      this.#listener(experimental.statusOrFromError({ code, details }), {}, null, details);
    }
  }

  experimental.registerResolver(scheme, DiscoveryResolver);
  return {
    close: async () => {
      const all = [...clients.values()];
      clients.clear();
      await Promise.all(all.map((c) => c.close()));
    },
  };
}

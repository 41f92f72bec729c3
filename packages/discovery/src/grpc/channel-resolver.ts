/**
 * The resolver grpc-js creates for each channel to a discovery target. It follows the service's
 * watch cache and hands grpc-js the addresses of every instance in rotation, keeping grpc-js 1.14's
 * resolver contract (resolver.d.ts):
 *
 * - the listener is never called synchronously from the constructor or `updateResolution()`;
 * - after `destroy()` nothing reaches the listener until `updateResolution()` is called again
 *   (grpc-js destroys and reuses the resolver when a channel goes idle);
 * - errors are `UNAVAILABLE`: grpc-js turns codes a control plane must not produce, such as
 *   `INVALID_ARGUMENT`, into `INTERNAL` ("Invalid status from control plane"), and an unavailable
 *   resolution is what the channel retries when the next call comes.
 */
import { experimental, Metadata, status, type ChannelOptions } from '@grpc/grpc-js';

import type { ServiceCache } from '../cache.ts';
import { hostPort, type Instance } from '../instance.ts';
import { describeError } from '../logger.ts';
import { defaultAuthority, targetString, type ResolvedTarget } from './target.ts';

type GrpcUri = experimental.GrpcUri;
type ResolverListener = experimental.ResolverListener;
type Endpoint = experimental.Endpoint;
/** What `experimental.registerResolver` takes (grpc-js does not export the type by name). */
export type ResolverConstructor = Parameters<typeof experimental.registerResolver>[1];

/** The service a resolver follows, and how to stop. */
interface Following {
  readonly target: ResolvedTarget;
  readonly cache: ServiceCache;
  readonly unsubscribe: () => void;
}

/** What the resolvers of one registration share. */
export interface ResolverContext {
  readonly scheme: string;
  /** How long a channel waits for the first read of its service before its calls fail with UNAVAILABLE. */
  readonly initialReadTimeoutMs: number;
  /** The target of a channel, or a `DiscoveryError` saying why it cannot be dialled. */
  target(uri: GrpcUri): ResolvedTarget;
  /** The shared watch cache of a target's service; throws a `DiscoveryError` once the registration is closed. */
  cache(target: ResolvedTarget): ServiceCache;
}

/** The resolver class grpc-js instantiates per channel, bound to `context`. */
export function resolverClass(context: ResolverContext): ResolverConstructor {
  return class DiscoveryResolver implements experimental.Resolver {
    readonly #uri: GrpcUri;
    readonly #listener: ResolverListener;
    #following: Following | undefined;
    /** The pending answer to `updateResolution()`; replaced by a newer one, cancelled by `destroy()`. */
    #pending: NodeJS.Immediate | undefined;
    #firstReadTimer: NodeJS.Timeout | undefined;
    /** The addresses (and note) last handed over, so that changes grpc-js cannot use (tags, weights > 0) cause no churn. */
    #reported: string | undefined;

    constructor(uri: GrpcUri, listener: ResolverListener, _options: ChannelOptions) {
      this.#uri = uri;
      this.#listener = listener;
    }

    static getDefaultAuthority(uri: GrpcUri): string {
      return defaultAuthority(context.scheme, uri.path);
    }

    updateResolution(): void {
      let following: Following;
      try {
        following = this.#follow();
      } catch (err: unknown) {
        const details = describeError(err);
        this.#soon(() => this.#fail(details));
        return;
      }
      const { target, cache } = following;
      if (cache.loaded) {
        // Asked again (a connection failed, or the channel left idle): the cache has the latest set;
        // hand it over again so the policy retries with it.
        this.#soon(() => this.#report(target, cache.instances, true));
      } else if (this.#firstReadTimer === undefined) {
        // The first read arrives through the subscription; until then the channel's calls wait.
        this.#firstReadTimer = setTimeout(() => {
          this.#firstReadTimer = undefined;
          if (!cache.loaded) this.#fail(unavailable(context, target, cache));
        }, context.initialReadTimeoutMs);
      }
    }

    destroy(): void {
      this.#following?.unsubscribe();
      this.#following = undefined;
      clearImmediate(this.#pending);
      this.#pending = undefined;
      clearTimeout(this.#firstReadTimer);
      this.#firstReadTimer = undefined;
      this.#reported = undefined;
    }

    /** The followed service, subscribed to on first use. */
    #follow(): Following {
      if (this.#following !== undefined) return this.#following;
      const target = context.target(this.#uri);
      const cache = context.cache(target);
      const unsubscribe = cache.subscribe((instances) => this.#report(target, instances, false));
      this.#following = { target, cache, unsubscribe };
      return this.#following;
    }

    #soon(answer: () => void): void {
      clearImmediate(this.#pending);
      this.#pending = setImmediate(() => {
        this.#pending = undefined;
        answer();
      });
    }

    #report(target: ResolvedTarget, instances: readonly Instance[], again: boolean): void {
      clearTimeout(this.#firstReadTimer);
      this.#firstReadTimer = undefined;
      const endpoints = toEndpoints(instances);
      const note = endpoints.length === 0 ? noInstanceNote(context, target, instances.length) : '';
      const addresses = endpoints.map((e) => e.addresses.map((a) => ('host' in a ? hostPort(a.host, a.port) : a.path)).join()).join(',');
      const reported = `${addresses} ${note}`;
      if (!again && reported === this.#reported) return;
      this.#reported = reported;
      this.#listener(experimental.statusOrFromValue(endpoints), {}, null, note);
    }

    #fail(details: string): void {
      this.#reported = undefined;
      const error = { code: status.UNAVAILABLE, details, metadata: new Metadata() };
      this.#listener(experimental.statusOrFromError(error), {}, null, details);
    }
  };
}

/** One endpoint per instance in rotation: weight 0 takes an instance out, as for every strategy of the client. */
function toEndpoints(instances: readonly Instance[]): Endpoint[] {
  return instances.filter((i) => (i.weight ?? 1) > 0).map((i) => ({ addresses: [{ host: i.address, port: i.port }] }));
}

function describeTarget(context: ResolverContext, target: ResolvedTarget): string {
  const path = `${target.prefix}/${target.namespace}/${target.service}`;
  return `${target.service} in registry namespace ${target.namespace} (target ${targetString(context.scheme, path)})`;
}

function noInstanceNote(context: ResolverContext, target: ResolvedTarget, drained: number): string {
  const base = `no instance of ${describeTarget(context, target)} is registered: is a ServiceInstance registered there?`;
  return drained === 0 ? base : `${base} ${drained} registered with weight 0 (out of rotation): raise the weight to send traffic there.`;
}

function unavailable(context: ResolverContext, target: ResolvedTarget, cache: ServiceCache): string {
  const { lastError } = cache.staleness();
  const why = lastError === undefined ? 'no answer yet' : describeError(lastError);
  return (
    `could not read ${describeTarget(context, target)} from the registry within ${context.initialReadTimeoutMs} ms (${why}): ` +
    'check that the registry is reachable from this process and that its credentials allow reading; the resolver keeps trying'
  );
}

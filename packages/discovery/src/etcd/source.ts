/**
 * `etcdSource()`: the discovery source that reads what the operator writes to etcd, pinned to one
 * registry namespace.
 */
import { ExponentialBackoff, type IBackoffFactory } from 'cockatiel';

import { monotonicClock, type Clock } from '../clock.ts';
import { DiscoveryConfigError } from '../errors.ts';
import { resolveNamespace, type DiscoverySource, type SourceListener, type SourceWatch } from '../source.ts';
import { connect, DEFAULT_CALL_TIMEOUT_MS, type EtcdConnectionOptions } from './client.ts';
import { serviceKeys } from './keys.ts';
import { silentLogger, type DiscoveryLogger } from '../logger.ts';
import { EtcdServiceWatch } from './service-watch.ts';

/** Options of {@link etcdSource}. */
export interface EtcdSourceOptions extends EtcdConnectionOptions {
  /** The Registry's `prefix`, e.g. `/services` or `grpc`. */
  readonly prefix: string;
  /** The registry namespace to read; default `$KUBE_REGISTRAR_NAMESPACE`, else `default`. */
  readonly namespace?: string;
  /** Measures how long a watch was out of step, for logs. Default `performance.now()`. */
  readonly clock?: Clock;
  /** pino-compatible; silent by default. */
  readonly logger?: DiscoveryLogger;
  /** Delays between attempts to follow a service again. Default exponential from 200 ms to 10 s with jitter. */
  readonly backoff?: IBackoffFactory<unknown>;
  /** Deadline of each read, ms. Default 10 s. */
  readonly callTimeoutMs?: number;
}

/** Default delays between attempts: quick at first, never more than 10 s apart, with decorrelated jitter. */
export function defaultEtcdBackoff(): IBackoffFactory<unknown> {
  return new ExponentialBackoff({ initialDelay: 200, maxDelay: 10_000 });
}

/** Checks a call timeout option. */
export function checkCallTimeout(value: number | undefined): number {
  const ms = value ?? DEFAULT_CALL_TIMEOUT_MS;
  if (!(ms > 0) || !Number.isFinite(ms)) {
    throw new DiscoveryConfigError(`callTimeoutMs is ${String(value)}: it must be a positive number of milliseconds`);
  }
  return ms;
}

/**
 * A source that follows services in `<prefix>/<namespace>/` of etcd: entries in every value
 * format the operator writes (`json`, `grpc`, `hostport`, with the owner index of the latter two),
 * one watch per service, kept through outages and compactions (see service-watch.ts).
 */
export function etcdSource(options: EtcdSourceOptions): DiscoverySource {
  const namespace = resolveNamespace(options.namespace);
  const callTimeoutMs = checkCallTimeout(options.callTimeoutMs);
  const { client, owned } = connect(options, 'etcdSource');
  const logger = options.logger ?? silentLogger;
  const clock = options.clock ?? monotonicClock;
  const backoff = options.backoff ?? defaultEtcdBackoff();
  const watches = new Set<SourceWatch>();
  let closed = false;

  return {
    kind: 'etcd',
    namespace,
    watch(service: string, listener: SourceListener): SourceWatch {
      if (closed) throw new DiscoveryConfigError('this etcd source is closed: create a new one');
      const keys = serviceKeys(options.prefix, namespace, service);
      const watch = new EtcdServiceWatch({ client, namespace, service, keys, listener, logger, backoff, callTimeoutMs, clock });
      watches.add(watch);
      return {
        close: async () => {
          watches.delete(watch);
          await watch.close();
        },
      };
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await Promise.allSettled([...watches].map((w) => w.close()));
      watches.clear();
      if (owned) client.close();
    },
  };
}

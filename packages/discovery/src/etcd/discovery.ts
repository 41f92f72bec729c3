/**
 * `etcdDiscovery()`: a `DiscoveryClient` reading and registering through one etcd client, for the
 * common case of one registry per process.
 */
import { DiscoveryClient, type DiscoveryClientOptions } from '../client.ts';
import type { DiscoverySource } from '../source.ts';
import { connect } from './client.ts';
import { etcdRegistrar, type EtcdRegistrarOptions } from './registrar.ts';
import { etcdSource, type EtcdSourceOptions } from './source.ts';

/** Options of {@link etcdDiscovery}: where etcd is, what to read, how to register, how to select. */
export interface EtcdDiscoveryOptions
  extends
    EtcdSourceOptions,
    Pick<EtcdRegistrarOptions, 'format' | 'leaseTtlSeconds'>,
    Omit<DiscoveryClientOptions, 'source' | 'registrar' | 'clock'> {}

/**
 * A discovery client on etcd: `instances()`/`pick()`/`call()` read `<prefix>/<namespace>/`, and
 * `register()` writes there. Closing the client removes its registrations, stops its watches and
 * closes the etcd client if it was created from `hosts`.
 */
export function etcdDiscovery(options: EtcdDiscoveryOptions): DiscoveryClient {
  const { client, owned } = connect(options, 'etcdDiscovery');
  const common = {
    client,
    prefix: options.prefix,
    ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
    ...(options.backoff !== undefined ? { backoff: options.backoff } : {}),
    ...(options.callTimeoutMs !== undefined ? { callTimeoutMs: options.callTimeoutMs } : {}),
  };
  const source = etcdSource({ ...common, ...(options.clock !== undefined ? { clock: options.clock } : {}) });
  const registrar = etcdRegistrar({
    ...common,
    ...(options.format !== undefined ? { format: options.format } : {}),
    ...(options.leaseTtlSeconds !== undefined ? { leaseTtlSeconds: options.leaseTtlSeconds } : {}),
  });
  const closingSource: DiscoverySource = {
    kind: source.kind,
    namespace: source.namespace,
    watch: (service, listener) => source.watch(service, listener),
    close: async () => {
      await Promise.allSettled([registrar.close(), source.close()]);
      if (owned) client.close();
    },
  };
  return new DiscoveryClient({
    source: closingSource,
    registrar,
    ...(options.strategy !== undefined ? { strategy: options.strategy } : {}),
    ...(options.outlier !== undefined ? { outlier: options.outlier } : {}),
    ...(options.latency !== undefined ? { latency: options.latency } : {}),
    ...(options.initialReadTimeoutMs !== undefined ? { initialReadTimeoutMs: options.initialReadTimeoutMs } : {}),
    ...(options.clock !== undefined ? { clock: options.clock } : {}),
    ...(options.random !== undefined ? { random: options.random } : {}),
  });
}

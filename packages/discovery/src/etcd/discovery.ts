/**
 * `etcdDiscovery()`: a `DiscoveryClient` reading and registering through one etcd client, for the
 * common case of one registry per process.
 */
import { DiscoveryClient, type DiscoveryClientOptions } from '../client.ts';
import type { DiscoverySource } from '../source.ts';
import { connect } from './client.ts';
import { etcdRegistrar, type EtcdRegistrarOptions } from './registrar.ts';
import { etcdSource, type EtcdSourceOptions } from './source.ts';

/** Options of {@link etcdDiscovery}: where etcd is, what to read, how to register, how to select and call. */
export interface EtcdDiscoveryOptions
  extends
    EtcdSourceOptions,
    Pick<EtcdRegistrarOptions, 'format' | 'leaseTtlSeconds'>,
    Omit<DiscoveryClientOptions, 'source' | 'registrar'> {}

/**
 * A discovery client on etcd: `instances()`/`pick()`/`call()` read `<prefix>/<namespace>/`, and
 * `register()` writes there. Closing the client removes its registrations, stops its watches and
 * closes the etcd client if it was created from `hosts`.
 */
export function etcdDiscovery(options: EtcdDiscoveryOptions): DiscoveryClient {
  const { client: given, hosts, auth, credentials, grpcOptions, dialTimeout, prefix, namespace, backoff, callTimeoutMs } = options;
  const { format, leaseTtlSeconds, ...clientOptions } = options;
  const { client, owned } = connect({ client: given, hosts, auth, credentials, grpcOptions, dialTimeout }, 'etcdDiscovery');
  const common = { client, prefix, namespace, logger: options.logger, backoff, callTimeoutMs };
  const source = etcdSource({ ...common, clock: options.clock });
  const registrar = etcdRegistrar({ ...common, format, leaseTtlSeconds });
  const closingSource: DiscoverySource = {
    kind: source.kind,
    namespace: source.namespace,
    watch: (service, listener) => source.watch(service, listener),
    close: async () => {
      await Promise.allSettled([registrar.close(), source.close()]);
      if (owned) client.close();
    },
  };
  return new DiscoveryClient({ ...clientOptions, source: closingSource, registrar });
}

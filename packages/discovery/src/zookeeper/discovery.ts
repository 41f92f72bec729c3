/**
 * `zookeeperDiscovery()`: a `DiscoveryClient` reading one registry namespace of ZooKeeper, for the
 * common case of one registry per process. It reads only: the operator registers into ZooKeeper,
 * processes outside Kubernetes register through etcd or Consul (`register()` is refused here).
 */
import { DiscoveryClient, type DiscoveryClientOptions } from '../client.ts';
import { zookeeperSource, type ZooKeeperSourceOptions } from './source.ts';

/** Options of {@link zookeeperDiscovery}: where ZooKeeper is, what to read, how to select and call. */
export interface ZooKeeperDiscoveryOptions extends ZooKeeperSourceOptions, Omit<DiscoveryClientOptions, 'source' | 'registrar'> {}

/**
 * A discovery client on ZooKeeper: `instances()`/`pick()`/`call()` read
 * `<basePath>/<namespace>/<service>`. Closing the client stops its watches and ends its session.
 */
export function zookeeperDiscovery(options: ZooKeeperDiscoveryOptions): DiscoveryClient {
  return new DiscoveryClient({ ...options, source: zookeeperSource(options) });
}

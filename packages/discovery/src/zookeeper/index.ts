/**
 * `@kube-registrar/discovery/zookeeper`: the ZooKeeper source, an entry point of its own so that
 * its optional peer node-zookeeper-client loads only for consumers who import it.
 */
export { zookeeperSource, type ZooKeeperSourceOptions } from './source.ts';
export { zookeeperDiscovery, type ZooKeeperDiscoveryOptions } from './discovery.ts';
export { decodeZooKeeperInstance } from './decode.ts';
export { DEFAULT_BASE_PATH } from './paths.ts';
export { ZOOKEEPER_CODES, ZooKeeperReadError, ZooKeeperUnavailableError } from './errors.ts';

/**
 * `consulDiscovery()`: a `DiscoveryClient` reading and registering through one Consul agent, for
 * the common case of one registry per process.
 */
import { DiscoveryClient, type DiscoveryClientOptions } from '../client.ts';
import { consulRegistrar, type ConsulRegistrarOptions } from './registrar.ts';
import { consulSource, type ConsulSourceOptions } from './source.ts';

/** Options of {@link consulDiscovery}: where the agent is, what to read, how to register, how to select and call. */
export interface ConsulDiscoveryOptions
  extends
    ConsulSourceOptions,
    Pick<ConsulRegistrarOptions, 'ttlSeconds' | 'deregisterAfterSeconds' | 'hostname'>,
    Omit<DiscoveryClientOptions, 'source' | 'registrar'> {}

/**
 * A discovery client on Consul: `instances()`/`pick()`/`call()` read `?passing=true` in the
 * registry namespace, and `register()` writes to the agent with a TTL check this process keeps
 * passing. Closing the client deregisters what it registered and stops its blocking queries.
 */
export function consulDiscovery(options: ConsulDiscoveryOptions): DiscoveryClient {
  const { address, token, dispatcher, consulNamespace, serviceName, namespace, logger } = options;
  const { ttlSeconds, deregisterAfterSeconds, hostname, ...sourceAndClient } = options;
  const source = consulSource(sourceAndClient);
  const registrar = consulRegistrar({
    address,
    token,
    dispatcher,
    consulNamespace,
    serviceName,
    namespace,
    logger,
    ttlSeconds,
    deregisterAfterSeconds,
    hostname,
  });
  return new DiscoveryClient({ ...sourceAndClient, source, registrar });
}

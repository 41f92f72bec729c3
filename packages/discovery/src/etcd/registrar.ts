/**
 * `etcdRegistrar()`: self-registration for processes outside Kubernetes. The entry is the one the
 * operator would write for the same endpoint, in the same format and layout, so every consumer
 * reads it; its owner is the process's host (`process:<hostname>`), which matches no cluster, so
 * the operator never touches it, and it never touches the operator's.
 */
import { hostname } from 'node:os';

import type { IBackoffFactory } from 'cockatiel';

import { DiscoveryConfigError } from '../errors.ts';
import { hostPort } from '../instance.ts';
import { resolveNamespace, type Registrar, type Registration, type SelfEndpoint } from '../source.ts';
import { connect, type EtcdConnectionOptions } from './client.ts';
import { encodeRecord } from './encode.ts';
import { serviceKeys } from './keys.ts';
import { silentLogger, type DiscoveryLogger } from '../logger.ts';
import { ETCD_VALUE_FORMATS, type EntryOwner, type EtcdValueFormat } from './record.ts';
import { EtcdRegistration } from './registration.ts';
import { checkCallTimeout, defaultEtcdBackoff } from './source.ts';

/** Options of {@link etcdRegistrar}. */
export interface EtcdRegistrarOptions extends EtcdConnectionOptions {
  /** The Registry's `prefix`, e.g. `/services` or `grpc`. */
  readonly prefix: string;
  /** The registry namespace to register into; default `$KUBE_REGISTRAR_NAMESPACE`, else `default`. */
  readonly namespace?: string;
  /** Value format, as the Registry's `etcd.format`; default `json`. */
  readonly format?: EtcdValueFormat;
  /** TTL of each registration's lease: how long the entry outlives a process killed without close(). Default 10. */
  readonly leaseTtlSeconds?: number;
  /** pino-compatible; silent by default. */
  readonly logger?: DiscoveryLogger;
  /** Delays between attempts to register again after a lost lease. */
  readonly backoff?: IBackoffFactory<unknown>;
  /** Deadline of each call, ms. Default 10 s. */
  readonly callTimeoutMs?: number;
}

/** A registrar that also closes what it opened. */
export interface EtcdRegistrar extends Registrar {
  /** The registry namespace every registration goes to. */
  readonly namespace: string;
  /** Closes every registration of this registrar (removing their entries), then the client if it created it. */
  close(): Promise<void>;
}

const DEFAULT_LEASE_TTL_SECONDS = 10;

/** The registry's weight range (ServiceInstance API). */
const MAX_WEIGHT = 1000;

/** Writes this process's endpoints into `<prefix>/<namespace>/<service>/<ip:port>`. */
export function etcdRegistrar(options: EtcdRegistrarOptions): EtcdRegistrar {
  const namespace = resolveNamespace(options.namespace);
  const format = options.format ?? 'json';
  if (!ETCD_VALUE_FORMATS.includes(format)) {
    throw new DiscoveryConfigError(
      `format ${JSON.stringify(format)} is not an etcd value format: use one of ${ETCD_VALUE_FORMATS.join(', ')}`,
    );
  }
  const leaseTtlSeconds = options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
  if (!Number.isInteger(leaseTtlSeconds) || leaseTtlSeconds < 2) {
    throw new DiscoveryConfigError(`leaseTtlSeconds is ${leaseTtlSeconds}: it must be a whole number of seconds, at least 2`);
  }
  const callTimeoutMs = checkCallTimeout(options.callTimeoutMs);
  const { client, owned } = connect(options, 'etcdRegistrar');
  const logger = options.logger ?? silentLogger;
  const backoff = options.backoff ?? defaultEtcdBackoff();
  const host = hostname();
  const registrations = new Set<Registration>();
  let closed = false;

  return {
    namespace,
    async register(endpoint: SelfEndpoint): Promise<Registration> {
      if (closed) throw new DiscoveryConfigError('this etcd registrar is closed: create a new one');
      checkEndpoint(endpoint);
      const keys = serviceKeys(options.prefix, namespace, endpoint.service);
      const instanceId = hostPort(endpoint.address, endpoint.port);
      const owner: EntryOwner = { clusterId: `process:${host}`, namespace, name: endpoint.service };
      const encoded = encodeRecord(format, {
        service: endpoint.service,
        address: endpoint.address,
        port: endpoint.port,
        weight: endpoint.weight ?? 1,
        tags: endpoint.tags ?? {},
        metadata: endpoint.metadata ?? {},
        namespace,
        owner,
        source: `process:${host}/${process.pid}`,
      });
      const registration = await EtcdRegistration.create({
        client,
        entryKey: keys.entries + instanceId,
        ownerIndexKey: keys.ownerIndex + instanceId,
        encoded,
        owner,
        leaseTtlSeconds,
        callTimeoutMs,
        backoff,
        logger,
      });
      logger.info({ key: registration.id, format, leaseTtlSeconds }, 'registered in etcd');
      const tracked: Registration = {
        id: registration.id,
        close: async () => {
          registrations.delete(tracked);
          await registration.close();
        },
      };
      registrations.add(tracked);
      return tracked;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await Promise.allSettled([...registrations].map((r) => r.close()));
      registrations.clear();
      if (owned) client.close();
    },
  };
}

/** Refuses an endpoint that the operator would not write either, saying which field is wrong. */
function checkEndpoint(endpoint: SelfEndpoint): void {
  const what = `endpoint ${JSON.stringify(endpoint.service)}`;
  if (typeof endpoint.address !== 'string' || endpoint.address === '' || /[\s/]/.test(endpoint.address)) {
    throw new DiscoveryConfigError(`${what}: address ${JSON.stringify(endpoint.address)} is not an IP or host name consumers can dial`);
  }
  if (!Number.isInteger(endpoint.port) || endpoint.port < 1 || endpoint.port > 65535) {
    throw new DiscoveryConfigError(`${what}: port ${String(endpoint.port)} is not a TCP port (1-65535)`);
  }
  const weight = endpoint.weight ?? 1;
  if (!Number.isFinite(weight) || weight < 0 || weight > MAX_WEIGHT) {
    throw new DiscoveryConfigError(`${what}: weight ${String(weight)} is out of range: use 0 (out of rotation) to ${MAX_WEIGHT}`);
  }
  for (const [field, map] of [
    ['tags', endpoint.tags],
    ['metadata', endpoint.metadata],
  ] as const) {
    for (const [k, v] of Object.entries(map ?? {})) {
      if (typeof v !== 'string') throw new DiscoveryConfigError(`${what}: ${field}.${k} is not a string; ${field} map strings to strings`);
    }
  }
}

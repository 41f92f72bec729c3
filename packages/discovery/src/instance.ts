/**
 * What the selector chooses between: one registered endpoint of a service, as a source (etcd,
 * Consul, ZooKeeper watch cache) reads it from the registry. Identity is what lets balancer and
 * ejection state survive a membership change: an instance with the same id after an update is the
 * same instance.
 */
import { InvalidInstanceError } from './errors.ts';

/** One instance of a service. */
export interface Instance {
  /**
   * Stable identity. Defaults to `address:port` (`[address]:port` for IPv6), which is also the
   * instance part of the operator's etcd keys for the grpc format.
   */
  readonly id?: string;
  readonly address: string;
  readonly port: number;
  /**
   * Relative weight, 0-1000 as in the ServiceInstance API; 0 takes the instance out of rotation
   * for every strategy. Defaults to 1.
   */
  readonly weight?: number;
  /** `k=v` tags, matched by tag filters. */
  readonly tags?: Readonly<Record<string, string>>;
  /** Free-form metadata, carried through untouched. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** The identity of an instance (see `Instance.id`). */
export function instanceId(instance: Instance): string {
  return instance.id ?? hostPort(instance.address, instance.port);
}

/** `host:port`, with IPv6 literals in brackets so the port stays unambiguous. */
export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The weight to balance with: the instance's own, 1 by default. Refuses what no balancer can use. */
export function instanceWeight(instance: Instance, service: string): number {
  const weight = instance.weight ?? 1;
  if (!Number.isFinite(weight) || weight < 0) {
    throw new InvalidInstanceError(
      `instance ${instanceId(instance)} of ${service} has weight ${String(weight)}: weights are finite numbers from 0 (out of rotation) up, as in the ServiceInstance API (0-1000)`,
    );
  }
  return weight;
}

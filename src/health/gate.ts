/**
 * The health gate: which of a ServiceInstance's endpoints go into one registry, and how, given the
 * monitor's verdicts. Pure; the reconciler applies it per target Registry.
 *
 * - healthy → registered;
 * - unhealthy → left out of a registry that cannot mark it, and kept but marked critical (with the
 *   probe's message) in one that can (Consul), if it is registered there already: an endpoint that
 *   never passed its check is never registered;
 * - unknown (not probed yet: a new endpoint, or every endpoint right after a restart, a failover or
 *   a change of the check) → left as the registry holds it: registered with the same mark if it is
 *   there, absent if not. So a new leader keeps what its predecessor registered until a probe says
 *   otherwise, and a new endpoint waits for its first success;
 * - panic mode (too few healthy) → every endpoint registered, unmarked (fail open).
 */
import { HEALTH_OUTPUT_MAX, type Endpoint, type RegistryEntry } from '../registry/types.ts';
import type { EndpointVerdict } from './monitor.ts';
import { selectRegistered, type Selection } from './state.ts';

/** The verdicts of one ServiceInstance's endpoints and what they add up to. */
export interface HealthGate {
  /** Verdicts keyed by endpointKey() (the endpoint's instanceId). */
  readonly verdicts: ReadonlyMap<string, EndpointVerdict>;
  readonly selection: Selection<Endpoint>;
}

/** Judges a ServiceInstance's endpoints as a whole (panic mode included). */
export function healthGate(
  endpoints: readonly Endpoint[],
  verdicts: ReadonlyMap<string, EndpointVerdict>,
  panicThresholdPercent: number,
): HealthGate {
  const statuses = new Map([...verdicts].map(([key, v]) => [key, v.status]));
  return { verdicts, selection: selectRegistered(endpoints, statuses, panicThresholdPercent) };
}

/** Cuts a probe message to what registries and status hold, marking the cut. */
export function truncateOutput(message: string, max = HEALTH_OUTPUT_MAX): string {
  return message.length <= max ? message : `${message.slice(0, max - 1)}…`;
}

/**
 * The endpoints to write to one registry. `current` is what the registry holds of this
 * ServiceInstance in the scope; `marksUnhealthy` whether the registry can list a failing endpoint
 * marked critical.
 */
export function gateEndpoints(
  endpoints: readonly Endpoint[],
  gate: HealthGate | undefined,
  current: readonly RegistryEntry[],
  marksUnhealthy: boolean,
): Endpoint[] {
  if (gate === undefined || gate.selection.panic) return [...endpoints];
  const held = new Map(current.map((entry) => [entry.endpoint.instanceId, entry.endpoint]));
  const gated: Endpoint[] = [];
  for (const endpoint of endpoints) {
    const verdict = gate.verdicts.get(endpoint.instanceId);
    const registered = held.get(endpoint.instanceId);
    switch (verdict?.status ?? 'unknown') {
      case 'healthy':
        gated.push(endpoint);
        break;
      case 'unhealthy':
        if (marksUnhealthy && registered !== undefined)
          gated.push({ ...endpoint, health: { status: 'critical', output: truncateOutput(verdict?.lastMessage ?? '') } });
        break;
      case 'unknown':
        if (registered !== undefined)
          gated.push(registered.health && marksUnhealthy ? { ...endpoint, health: registered.health } : endpoint);
        break;
    }
  }
  return gated;
}

/**
 * Per-endpoint health verdicts with Kubernetes probe semantics, and the choice of which endpoints
 * stay registered. Pure: no clock, no I/O; the prober feeds results in and reads verdicts out.
 */

/** An endpoint's verdict: `unknown` until its thresholds have decided either way. */
export type HealthStatus = 'unknown' | 'healthy' | 'unhealthy';

/** The thresholds a verdict needs (see HealthCheckTiming). */
export interface HealthThresholds {
  /** Consecutive failures that make an endpoint unhealthy. */
  readonly failureThreshold: number;
  /** Consecutive successes that make an endpoint healthy. */
  readonly successThreshold: number;
}

/** The part of a probe result the state machine needs. */
export interface ProbeOutcome {
  readonly healthy: boolean;
  readonly message: string;
}

/**
 * One endpoint's health, decided like a Kubernetes probe: the status changes only after
 * `failureThreshold` consecutive failures or `successThreshold` consecutive successes; a mixed
 * result starts a new run. A new endpoint starts `unknown`, so it is not registered before it has
 * proved itself, unless it is created with `assumeHealthy` (an operator that restarts finds it
 * already registered and must not pull it out while it re-probes).
 */
export class EndpointHealth {
  #status: HealthStatus;
  #runHealthy: boolean | undefined;
  #runLength = 0;
  #lastMessage = '';
  readonly #thresholds: HealthThresholds;

  constructor(thresholds: HealthThresholds, options: { readonly assumeHealthy?: boolean } = {}) {
    this.#thresholds = thresholds;
    this.#status = options.assumeHealthy ? 'healthy' : 'unknown';
  }

  /** The current verdict. */
  get status(): HealthStatus {
    return this.#status;
  }

  /** The message of the latest probe, for status conditions and events. */
  get lastMessage(): string {
    return this.#lastMessage;
  }

  /** How many probes in a row have had the latest probe's outcome. */
  get consecutive(): number {
    return this.#runLength;
  }

  /** Applies one probe result; returns true when the status changed. */
  record(result: ProbeOutcome): boolean {
    this.#lastMessage = result.message;
    this.#runLength = this.#runHealthy === result.healthy ? this.#runLength + 1 : 1;
    this.#runHealthy = result.healthy;
    const target: HealthStatus = result.healthy ? 'healthy' : 'unhealthy';
    const threshold = result.healthy ? this.#thresholds.successThreshold : this.#thresholds.failureThreshold;
    if (this.#status === target || this.#runLength < threshold) return false;
    this.#status = target;
    return true;
  }
}

/** Where an endpoint is probed: its own address and port. */
export interface EndpointAddress {
  readonly address: string;
  readonly port: number;
}

/** The key of an endpoint in a map of health states: `address:port` (IPv6 in brackets). */
export function endpointKey(endpoint: EndpointAddress): string {
  return endpoint.address.includes(':') ? `[${endpoint.address}]:${endpoint.port}` : `${endpoint.address}:${endpoint.port}`;
}

/** Which endpoints to register, and whether panic mode chose them. */
export interface Selection<T> {
  /** Endpoints to keep in the registry, in input order. */
  readonly registered: T[];
  /** True when too few endpoints are healthy and every endpoint is kept (fail open). */
  readonly panic: boolean;
  /** Endpoints judged healthy. */
  readonly healthy: number;
  /** Endpoints judged unhealthy. */
  readonly unhealthy: number;
  /** Endpoints with a verdict (healthy or unhealthy); `unknown` ones are not judged yet. */
  readonly judged: number;
}

/**
 * Chooses the endpoints to register: the healthy ones, except in panic mode.
 *
 * Panic mode (fail open) starts when fewer than `panicThresholdPercent` % of the endpoints are
 * healthy, counting an endpoint not judged yet (`unknown`; missing from `states` counts as unknown)
 * as not failing: then every endpoint is kept. So once every endpoint is judged, panic mode means
 * fewer than that share healthy; before, only endpoints seen failing bring it closer. A
 * ServiceInstance whose endpoints are not probed yet is not put into panic mode (which would
 * register them all unprobed), nor is one whose first verdict after a restart is a failure.
 * `panicThresholdPercent` 0 disables panic mode.
 */
export function selectRegistered<T extends EndpointAddress>(
  endpoints: readonly T[],
  states: ReadonlyMap<string, HealthStatus | EndpointHealth>,
  panicThresholdPercent: number,
): Selection<T> {
  const statusOf = (endpoint: T): HealthStatus => {
    const state = states.get(endpointKey(endpoint));
    return state === undefined ? 'unknown' : typeof state === 'string' ? state : state.status;
  };
  const healthyEndpoints = endpoints.filter((endpoint) => statusOf(endpoint) === 'healthy');
  const unhealthy = endpoints.filter((endpoint) => statusOf(endpoint) === 'unhealthy').length;
  const notFailing = endpoints.length - unhealthy;
  // Integer arithmetic: notFailing / total < percent / 100, without rounding at the boundary.
  const panic = panicThresholdPercent > 0 && unhealthy > 0 && notFailing * 100 < panicThresholdPercent * endpoints.length;
  return {
    registered: panic ? [...endpoints] : healthyEndpoints,
    panic,
    healthy: healthyEndpoints.length,
    unhealthy,
    judged: healthyEndpoints.length + unhealthy,
  };
}

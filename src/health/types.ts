/**
 * Health check specs: `spec.healthCheck` of a ServiceInstance (static endpoints), as the user
 * writes it and as the prober uses it once `withDefaults()` has filled in every default.
 *
 * The user-facing shapes are the API's (src/api/v1alpha1/types.ts, kept in step with the CRD).
 * Field meanings follow Kubernetes probes (`intervalSeconds` is a probe's `periodSeconds`), so
 * users carry over what they already know; the CRD validates them at admission, and
 * `withDefaults()` validates again because the prober must never trust its input.
 */
import type { GrpcHealthCheck, HealthCheck, HttpHealthCheck, TcpHealthCheck } from '../api/v1alpha1/types.ts';

export type { GrpcHealthCheck, HealthCheck, HttpHealthCheck, TcpHealthCheck };

/** `T` with the fields `K` made optional: those the CRD defaults, which a hand-built spec may leave out. */
type WithOptional<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

/** An HTTP check as `withDefaults()` takes it: the API's, with `scheme` optional (default http). */
export type HttpCheck = WithOptional<HttpHealthCheck, 'scheme'>;

/** A TCP check as `withDefaults()` takes it: the API's. */
export type TcpCheck = TcpHealthCheck;

/** A gRPC check as `withDefaults()` takes it: the API's, with `service` optional (default `""`). */
export type GrpcCheck = WithOptional<GrpcHealthCheck, 'service'>;

/** Timing and ejection knobs shared by every kind of check, each optional (see {@link healthCheckDefaults}). */
export type HealthCheckTiming = Partial<
  Pick<HealthCheck, 'intervalSeconds' | 'timeoutSeconds' | 'failureThreshold' | 'successThreshold' | 'panicThresholdPercent'>
>;

/**
 * `spec.healthCheck` as `withDefaults()` takes it: the API's {@link HealthCheck}, or one built by
 * hand that leaves defaulted fields out. Exactly one of `http`, `tcp`, `grpc` must be set; the
 * type cannot say so without refusing the API's type, so `withDefaults()` checks it.
 */
export type HealthCheckSpec = HealthCheckTiming & {
  readonly http?: HttpCheck;
  readonly tcp?: TcpCheck;
  readonly grpc?: GrpcCheck;
};

/** An inclusive range of HTTP status codes. */
export interface StatusRange {
  readonly min: number;
  readonly max: number;
}

/** An HTTP check with its defaults applied and its status list parsed. */
export interface ResolvedHttpCheck {
  readonly kind: 'http';
  /** Request path, starting with `/`. */
  readonly path: string;
  /** Port override; undefined means the endpoint's port. */
  readonly port: number | undefined;
  readonly scheme: 'http' | 'https';
  readonly insecureSkipVerify: boolean;
  readonly headers: Readonly<Record<string, string>>;
  /** Healthy status codes; never empty. */
  readonly expectedStatuses: readonly StatusRange[];
  /** Dotted JSON path → required value; empty means the body is not read. */
  readonly expectedJSON: Readonly<Record<string, string>>;
}

/** A TCP check with its defaults applied. */
export interface ResolvedTcpCheck {
  readonly kind: 'tcp';
  /** Port override; undefined means the endpoint's port. */
  readonly port: number | undefined;
}

/** A gRPC check with its defaults applied. */
export interface ResolvedGrpcCheck {
  readonly kind: 'grpc';
  /** Port override; undefined means the endpoint's port. */
  readonly port: number | undefined;
  /** Service name sent in HealthCheckRequest (`""` = the whole server). */
  readonly service: string;
}

/** What to send to an endpoint, with every default applied. */
export type ResolvedProbe = ResolvedHttpCheck | ResolvedTcpCheck | ResolvedGrpcCheck;

/** A health check with every default applied and every field validated. */
export interface ResolvedHealthCheck {
  readonly probe: ResolvedProbe;
  readonly intervalSeconds: number;
  readonly timeoutSeconds: number;
  readonly failureThreshold: number;
  readonly successThreshold: number;
  /** 0 means panic mode is off. */
  readonly panicThresholdPercent: number;
}

/** Defaults of the timing knobs, exported so the CRD schema and docs can be checked against them. */
export const healthCheckDefaults = {
  intervalSeconds: 10,
  timeoutSeconds: 1,
  failureThreshold: 3,
  successThreshold: 1,
  panicThresholdPercent: 50,
  expectedStatuses: [{ min: 200, max: 399 }] as readonly StatusRange[],
} as const;

/** A `spec.healthCheck` that cannot be used; the message says which field and how to fix it. */
export class InvalidHealthCheckError extends Error {
  override readonly name = 'InvalidHealthCheckError';
}

/**
 * Applies every default of `spec.healthCheck` and validates the result.
 *
 * @throws InvalidHealthCheckError naming the offending field when the spec is unusable.
 */
export function withDefaults(spec: HealthCheckSpec): ResolvedHealthCheck {
  const intervalSeconds = spec.intervalSeconds ?? healthCheckDefaults.intervalSeconds;
  const timeoutSeconds = spec.timeoutSeconds ?? healthCheckDefaults.timeoutSeconds;
  const failureThreshold = spec.failureThreshold ?? healthCheckDefaults.failureThreshold;
  const successThreshold = spec.successThreshold ?? healthCheckDefaults.successThreshold;
  const panicThresholdPercent = spec.panicThresholdPercent ?? healthCheckDefaults.panicThresholdPercent;
  requireInteger('intervalSeconds', intervalSeconds, 1);
  requireInteger('timeoutSeconds', timeoutSeconds, 1, intervalSeconds);
  requireInteger('failureThreshold', failureThreshold, 1);
  requireInteger('successThreshold', successThreshold, 1);
  requireInteger('panicThresholdPercent', panicThresholdPercent, 0, 100);
  return { probe: resolveProbe(spec), intervalSeconds, timeoutSeconds, failureThreshold, successThreshold, panicThresholdPercent };
}

function resolveProbe(spec: HealthCheckSpec): ResolvedProbe {
  const kinds = (['http', 'tcp', 'grpc'] as const).filter((kind) => spec[kind] !== undefined);
  if (kinds.length !== 1) {
    const found = kinds.length === 0 ? 'none' : kinds.join(', ');
    throw new InvalidHealthCheckError(`healthCheck needs exactly one of http, tcp or grpc (found ${found})`);
  }
  if (spec.http) return resolveHttp(spec.http);
  if (spec.tcp) return { kind: 'tcp', port: optionalPort('tcp.port', spec.tcp.port) };
  // Exactly one kind is set (checked above), so this is the gRPC check.
  const grpc = spec.grpc ?? {};
  return { kind: 'grpc', port: optionalPort('grpc.port', grpc.port), service: grpc.service ?? '' };
}

function resolveHttp(http: HttpCheck): ResolvedHttpCheck {
  if (!http.path.startsWith('/')) {
    throw new InvalidHealthCheckError(`healthCheck.http.path must start with "/" (got ${JSON.stringify(http.path)})`);
  }
  const expectedStatuses =
    http.expectedStatuses === undefined || http.expectedStatuses.length === 0
      ? healthCheckDefaults.expectedStatuses
      : http.expectedStatuses.map(parseStatusRange);
  return {
    kind: 'http',
    path: http.path,
    port: optionalPort('http.port', http.port),
    scheme: http.scheme ?? 'http',
    insecureSkipVerify: http.insecureSkipVerify ?? false,
    headers: http.headers ?? {},
    expectedStatuses,
    expectedJSON: http.expectedJSON ?? {},
  };
}

/** Parses `204`, `"204"` or `"200-399"` into an inclusive range of status codes. */
export function parseStatusRange(value: number | string): StatusRange {
  const match = /^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$/.exec(String(value));
  const min = Number(match?.[1]);
  const max = Number(match?.[2] ?? match?.[1]);
  if (!match || min < 100 || max > 599 || min > max) {
    throw new InvalidHealthCheckError(
      `healthCheck.http.expectedStatuses: ${JSON.stringify(value)} is not a status code or a range like "200-399"`,
    );
  }
  return { min, max };
}

function optionalPort(field: string, port: number | undefined): number | undefined {
  if (port !== undefined) requireInteger(field, port, 1, 65535);
  return port;
}

function requireInteger(field: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    const bound = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
    throw new InvalidHealthCheckError(`healthCheck.${field} must be a whole number ${bound} (got ${value})`);
  }
}

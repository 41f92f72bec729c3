/**
 * Health check specs: the planned `spec.healthCheck` of a ServiceInstance (static endpoints), as
 * the user writes it and as the prober uses it once `withDefaults()` has filled in every default.
 *
 * Field meanings follow Kubernetes probes (`intervalSeconds` is a probe's `periodSeconds`), so
 * users carry over what they already know; the CRD schema repeats these docs and validates them at
 * admission, and `withDefaults()` validates again because the prober must never trust its input.
 */

/** An HTTP(S) GET against the endpoint's own address. */
export interface HttpCheck {
  /** Request path, starting with `/`, e.g. `/healthz`. May carry a query string. */
  readonly path: string;
  /** Port to probe; default: the endpoint's port. */
  readonly port?: number;
  /** `http` (default) or `https`. */
  readonly scheme?: 'http' | 'https';
  /** With `https`: accept any server certificate (self-signed, wrong name). Default false. */
  readonly insecureSkipVerify?: boolean;
  /** Extra request headers, e.g. `{ Authorization: 'Bearer …' }`. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Status codes that count as healthy: numbers or inclusive `"200-399"`-style ranges (a single
   * `"204"` is allowed too). Default 200–399. Redirects are never followed, so a 3xx is judged here.
   */
  readonly expectedStatuses?: readonly (number | string)[];
  /**
   * Business check: dotted JSON path in the response body → required value, compared as a string,
   * e.g. `{ db: 'ok', 'deps.redis': 'ok' }`. When set, the body must be JSON with every field equal.
   */
  readonly expectBody?: Readonly<Record<string, string>>;
}

/** A TCP connect to the endpoint's address: healthy when the connection is accepted. */
export interface TcpCheck {
  /** Port to connect to; default: the endpoint's port. */
  readonly port?: number;
}

/** A call to the standard gRPC health service, `grpc.health.v1.Health/Check`, over plaintext. */
export interface GrpcCheck {
  /** Port to call; default: the endpoint's port. */
  readonly port?: number;
  /** Service name sent in HealthCheckRequest; default `""`, the server's overall health. */
  readonly service?: string;
}

/** Timing and ejection knobs shared by every kind of check. */
export interface HealthCheckTiming {
  /** Seconds between two probes of one endpoint. Default 10, minimum 1. */
  readonly intervalSeconds?: number;
  /** Seconds after which a probe counts as failed. Default 1, minimum 1, at most intervalSeconds. */
  readonly timeoutSeconds?: number;
  /** Consecutive failures after which an endpoint is taken out of the registry. Default 3, minimum 1. */
  readonly failureThreshold?: number;
  /** Consecutive successes after which an endpoint is put (back) into the registry. Default 1, minimum 1. */
  readonly successThreshold?: number;
  /**
   * When fewer than this percentage of the judged endpoints are healthy, keep every endpoint
   * registered (fail open): a prober that sees almost everything fail is more likely wrong than the
   * service. Default 50; 0 disables panic mode; at most 100.
   */
  readonly panicThresholdPercent?: number;
}

/** `spec.healthCheck` as written by the user: exactly one of `http`, `tcp`, `grpc`, plus timing. */
export type HealthCheckSpec = HealthCheckTiming &
  (
    | { readonly http: HttpCheck; readonly tcp?: never; readonly grpc?: never }
    | { readonly tcp: TcpCheck; readonly http?: never; readonly grpc?: never }
    | { readonly grpc: GrpcCheck; readonly http?: never; readonly tcp?: never }
  );

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
  readonly expectBody: Readonly<Record<string, string>>;
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
  const grpc = spec.grpc;
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
    expectBody: http.expectBody ?? {},
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

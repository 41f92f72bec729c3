import { Client, credentials, Metadata, status as grpcStatus } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';

import { decodeHealthCheckResponse, encodeHealthCheckRequest, healthCheckMethod, ServingStatus } from './grpc-health-codec.ts';
import type { HealthCheckRequest, HealthCheckResponse } from './grpc-health-codec.ts';
import type { ProbeVerdict } from './probe-verdict.ts';

const statusNames = new Map<number, string>(Object.entries(ServingStatus).map(([name, value]) => [value, name]));

/**
 * Calls grpc.health.v1.Health/Check on host:port over plaintext; healthy only on SERVING.
 *
 * A fresh channel per probe, like the kubelet's gRPC probe: a probe must see whether a new
 * connection can be made, not ride on one that is already open.
 */
export function probeGrpc(host: string, port: number, service: string, timeoutMs: number, signal: AbortSignal): Promise<ProbeVerdict> {
  const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const client = new Client(target, credentials.createInsecure(), { 'grpc.enable_retries': 0 });
  const verdict = new Promise<ProbeVerdict>((resolve) => {
    const call = client.makeUnaryRequest<HealthCheckRequest, HealthCheckResponse>(
      healthCheckMethod,
      encodeHealthCheckRequest,
      decodeHealthCheckResponse,
      { service },
      new Metadata(),
      { deadline: Date.now() + timeoutMs },
      (error, response) => {
        signal.removeEventListener('abort', onAbort);
        resolve(error ? describeCallError(error, service) : describeResponse(response));
      },
    );
    const onAbort = (): void => call.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return verdict.finally(() => client.close());
}

function describeResponse(response: HealthCheckResponse | undefined): ProbeVerdict {
  const status = response?.status ?? ServingStatus.UNKNOWN;
  const name = statusNames.get(status) ?? `unknown status ${status}`;
  return { healthy: status === ServingStatus.SERVING, message: status === ServingStatus.SERVING ? 'SERVING' : `${name}, want SERVING` };
}

function describeCallError(error: ServiceError, service: string): ProbeVerdict {
  const subject = service === '' ? 'the server' : `service ${JSON.stringify(service)}`;
  switch (error.code) {
    case grpcStatus.NOT_FOUND:
      return { healthy: false, message: `health check of ${subject}: the server does not know it (NOT_FOUND)` };
    case grpcStatus.UNIMPLEMENTED:
      return { healthy: false, message: 'the server does not implement grpc.health.v1.Health (UNIMPLEMENTED)' };
    case grpcStatus.DEADLINE_EXCEEDED:
      return { healthy: false, message: `health check of ${subject} timed out (DEADLINE_EXCEEDED)` };
    default:
      return { healthy: false, message: `health check of ${subject} failed: ${grpcStatus[error.code] ?? error.code}: ${error.details}` };
  }
}

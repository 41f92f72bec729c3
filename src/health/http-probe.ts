import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

import { exchange, readBody, retryOnStaleConnection } from '../http-exchange.ts';

import { checkBody } from './json-body.ts';
import type { ProbeVerdict } from './probe-verdict.ts';
import type { ResolvedHttpCheck, StatusRange } from './types.ts';

/** A health endpoint that answers with more than this is not one; the body check reads no further. */
const bodyLimit = {
  bytes: 1024 * 1024,
  message: 'response body is larger than 1048576 bytes; a health endpoint should answer briefly',
};

/** An idle kept-alive connection is closed after this long (longer than the default interval of 10 s). */
const idleSocketMs = 30_000;

/**
 * Connections are kept alive between probes of one endpoint, as Envoy's health checker does: a
 * probe then costs one request instead of a TCP (and TLS) handshake, which is most of its CPU.
 * One pool per TLS policy, so `insecureSkipVerify` never lends a connection to a verifying probe.
 */
const agents = {
  http: new HttpAgent({ keepAlive: true, timeout: idleSocketMs, scheduling: 'lifo' }),
  https: new HttpsAgent({ keepAlive: true, timeout: idleSocketMs, scheduling: 'lifo' }),
  httpsInsecure: new HttpsAgent({ keepAlive: true, timeout: idleSocketMs, scheduling: 'lifo', rejectUnauthorized: false }),
};

/** Closes every kept-alive probe connection (on shutdown). */
export function closeProbeConnections(): void {
  for (const agent of Object.values(agents)) agent.destroy();
}

/**
 * GETs the check's path on host:port and judges the status and, with `expectedJSON`, the JSON body.
 *
 * Redirects are never followed: a probe goes only to the endpoint's own address, so a 3xx is judged
 * by `expectedStatuses` like any other status. A request on a kept-alive connection that the
 * server closed meanwhile fails before any answer; it is retried once on a new connection, so a
 * server's idle timeout never shows as a failed probe.
 */
export function probeHttp(host: string, port: number, check: ResolvedHttpCheck, signal: AbortSignal): Promise<ProbeVerdict> {
  return retryOnStaleConnection(
    () => probeOnce(host, port, check, signal),
    () => !signal.aborted,
  );
}

async function probeOnce(host: string, port: number, check: ResolvedHttpCheck, signal: AbortSignal): Promise<ProbeVerdict> {
  const response = await get(host, port, check, signal);
  if (!statusExpected(response.statusCode ?? 0, check.expectedStatuses)) {
    response.resume();
    return { healthy: false, message: `status ${response.statusCode}, want ${describeStatuses(check.expectedStatuses)}` };
  }
  if (Object.keys(check.expectedJSON).length === 0) {
    response.resume();
    return { healthy: true, message: `status ${response.statusCode}` };
  }
  const body = await readBody(response, bodyLimit);
  const failure = checkBody(body, check.expectedJSON);
  return failure === undefined
    ? { healthy: true, message: `status ${response.statusCode}, body fields as expected` }
    : { healthy: false, message: failure };
}

function get(host: string, port: number, check: ResolvedHttpCheck, signal: AbortSignal): Promise<IncomingMessage> {
  const https = check.scheme === 'https';
  const agent = https ? (check.insecureSkipVerify ? agents.httpsInsecure : agents.https) : agents.http;
  const send = https ? httpsRequest : httpRequest;
  // `send` throws at once on a header the user wrote that HTTP cannot carry.
  return exchange((onResponse) => send({ host, port, path: check.path, method: 'GET', headers: check.headers, agent, signal }, onResponse));
}

function statusExpected(status: number, ranges: readonly StatusRange[]): boolean {
  return ranges.some((range) => status >= range.min && status <= range.max);
}

function describeStatuses(ranges: readonly StatusRange[]): string {
  return ranges.map((range) => (range.min === range.max ? `${range.min}` : `${range.min}-${range.max}`)).join(', ');
}

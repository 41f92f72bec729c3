import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

import { checkBody } from './json-body.ts';
import type { ProbeVerdict } from './probe-verdict.ts';
import type { ResolvedHttpCheck, StatusRange } from './types.ts';

/** A health endpoint that answers with more than this is not one; the body check reads no further. */
const maxBodyBytes = 1024 * 1024;

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
export async function probeHttp(host: string, port: number, check: ResolvedHttpCheck, signal: AbortSignal): Promise<ProbeVerdict> {
  try {
    return await probeOnce(host, port, check, signal);
  } catch (error: unknown) {
    if (!(error instanceof ReusedSocketError)) throw error;
    if (signal.aborted) throw error.cause;
  }
  try {
    return await probeOnce(host, port, check, signal);
  } catch (error: unknown) {
    throw error instanceof ReusedSocketError ? error.cause : error;
  }
}

/** A request sent on a kept-alive connection failed before any answer: the server had closed it. */
class ReusedSocketError extends Error {}

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
  const body = await readLimited(response, maxBodyBytes);
  const failure = checkBody(body, check.expectedJSON);
  return failure === undefined
    ? { healthy: true, message: `status ${response.statusCode}, body fields as expected` }
    : { healthy: false, message: failure };
}

function get(host: string, port: number, check: ResolvedHttpCheck, signal: AbortSignal): Promise<IncomingMessage> {
  const https = check.scheme === 'https';
  const agent = https ? (check.insecureSkipVerify ? agents.httpsInsecure : agents.https) : agents.http;
  const send = https ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    let sent: ClientRequest;
    try {
      // Throws at once on a header the user wrote that HTTP cannot carry.
      sent = send({ host, port, path: check.path, method: 'GET', headers: check.headers, agent, signal }, resolve);
    } catch (error: unknown) {
      reject(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    sent.once('error', (error: NodeJS.ErrnoException) => {
      const stale = sent.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
      reject(stale ? new ReusedSocketError('kept-alive connection closed by the server', { cause: error }) : error);
    });
    sent.end();
  });
}

function statusExpected(status: number, ranges: readonly StatusRange[]): boolean {
  return ranges.some((range) => status >= range.min && status <= range.max);
}

function describeStatuses(ranges: readonly StatusRange[]): string {
  return ranges.map((range) => (range.min === range.max ? `${range.min}` : `${range.min}-${range.max}`)).join(', ');
}

async function readLimited(response: IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response) {
    const buffer = chunk as Buffer;
    size += buffer.byteLength;
    if (size > limit) {
      response.destroy();
      throw new Error(`response body is larger than ${limit} bytes; a health endpoint should answer briefly`);
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

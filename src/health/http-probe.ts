import { Agent, fetch } from 'undici';

import { checkBody } from './json-body.ts';
import type { ProbeVerdict } from './probe-verdict.ts';
import type { ResolvedHttpCheck, StatusRange } from './types.ts';

/** A health endpoint that answers with more than this is not one; the body check reads no further. */
const maxBodyBytes = 1024 * 1024;

/**
 * GETs the check's path on host:port and judges the status and, with `expectedJSON`, the JSON body.
 *
 * Redirects are never followed: a probe goes only to the endpoint's own address, so a 3xx is judged
 * by `expectedStatuses` like any other status. Each probe has its own connection pool (closed when
 * the probe ends), so a probe never rides on a keep-alive connection of an earlier one and no socket
 * outlives it. undici's own fetch goes with its Agent so both come from the same undici version.
 */
export async function probeHttp(host: string, port: number, check: ResolvedHttpCheck, signal: AbortSignal): Promise<ProbeVerdict> {
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const url = `${check.scheme}://${authority}${check.path}`;
  const dispatcher = new Agent({ connect: { rejectUnauthorized: !check.insecureSkipVerify }, pipelining: 0 });
  try {
    const response = await fetch(url, { method: 'GET', headers: check.headers, redirect: 'manual', signal, dispatcher });
    if (!statusExpected(response.status, check.expectedStatuses)) {
      await response.body?.cancel();
      return { healthy: false, message: `status ${response.status}, want ${describeStatuses(check.expectedStatuses)}` };
    }
    if (Object.keys(check.expectedJSON).length === 0) {
      await response.body?.cancel();
      return { healthy: true, message: `status ${response.status}` };
    }
    const body = await readLimited(response.body, maxBodyBytes);
    const failure = checkBody(body, check.expectedJSON);
    return failure === undefined
      ? { healthy: true, message: `status ${response.status}, body fields as expected` }
      : { healthy: false, message: failure };
  } finally {
    await dispatcher.destroy();
  }
}

function statusExpected(status: number, ranges: readonly StatusRange[]): boolean {
  return ranges.some((range) => status >= range.min && status <= range.max);
}

function describeStatuses(ranges: readonly StatusRange[]): string {
  return ranges.map((range) => (range.min === range.max ? `${range.min}` : `${range.min}-${range.max}`)).join(', ');
}

async function readLimited(body: ReadableStream<Uint8Array> | null, limit: number): Promise<string> {
  if (body === null) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > limit) throw new Error(`response body is larger than ${limit} bytes; a health endpoint should answer briefly`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

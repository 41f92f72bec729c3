/**
 * The apiserver's own request counters (apiserver_request_total from /metrics), read with the
 * bed's admin client certificate, so a scenario can say how many API calls the operator made per
 * object: the cost a real cluster's apiserver pays.
 */
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import type { Bed } from '../../testbed/bed.ts';

/** Requests by `VERB resource[/subresource]`, summed over codes and scopes. */
export type RequestCounts = Map<string, number>;

async function get(url: string, certs: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ...certs, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout GET ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Reads apiserver_request_total. */
export async function apiserverRequests(bed: Bed): Promise<RequestCounts> {
  const certs = { ca: await readFile(bed.pki.caCert), cert: await readFile(bed.pki.adminCert), key: await readFile(bed.pki.adminKey) };
  const text = await get(`${bed.apiserverUrl}/metrics`, certs);
  const out: RequestCounts = new Map();
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const labels: Record<string, string> = {};
    for (const m of line.matchAll(/(\w+)="([^"]*)"/g)) labels[m[1] as string] = m[2] as string;
    const key = `${labels['verb'] ?? '?'} ${labels['resource'] ?? '?'}${labels['subresource'] ? `/${labels['subresource']}` : ''}`;
    out.set(key, (out.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}

/** b − a, keeping only what changed. */
export function requestDelta(a: RequestCounts, b: RequestCounts): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}

/** Verbs of apiserver_request_total that only read. */
const READ_VERBS = new Set(['GET', 'LIST', 'WATCH', 'CONNECT']);

/** The writes (every verb but GET, LIST, WATCH and CONNECT) among the requests of a {@link requestDelta}. */
export function writeRequests(delta: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(delta)) if (!READ_VERBS.has(k.slice(0, k.indexOf(' ')))) out[k] = v;
  return out;
}

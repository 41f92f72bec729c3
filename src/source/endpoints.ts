/**
 * The source: a ServiceInstance plus the pods it selects → the endpoints that should be
 * registered. Pure; the controller feeds it from the informer caches.
 */
import { isIPv6 } from 'node:net';
import type { Endpoint } from '../registry/types.ts';
import type { SlimPod } from './pods.ts';

/** A label selector requirement (metav1.LabelSelectorRequirement). */
export interface SelectorRequirement {
  readonly key: string;
  readonly operator: string;
  readonly values?: readonly string[];
}

/** A label selector (metav1.LabelSelector). */
export interface LabelSelectorLike {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly matchExpressions?: readonly SelectorRequirement[];
}

/** A static endpoint of a ServiceInstance. */
export interface StaticEndpointLike {
  readonly address: string;
  readonly port?: number;
  readonly weight?: number;
  readonly tags?: Readonly<Record<string, string>>;
}

/** The parts of a ServiceInstance the source reads. */
export interface SourceInput {
  readonly namespace: string;
  readonly name: string;
  readonly spec: {
    readonly service: string;
    readonly selector?: LabelSelectorLike;
    readonly endpoints?: readonly StaticEndpointLike[];
    readonly port?: number | string;
    readonly tags?: Readonly<Record<string, string>>;
    readonly weight?: number;
    readonly metadata?: Readonly<Record<string, string>>;
  };
}

/** What the source found. */
export interface SourceResult {
  /** Endpoints to register, unique by instanceId, sorted by instanceId. */
  readonly endpoints: readonly Endpoint[];
  /** Pods matched (or static endpoints given). */
  readonly total: number;
  /** Of those, ready to serve. */
  readonly ready: number;
  /** User-facing problems (unknown port names, duplicates); they never stop the rest. */
  readonly problems: readonly string[];
}

/** Whether a label set satisfies a selector; an empty selector matches everything, as in Kubernetes. */
export function selectorMatches(selector: LabelSelectorLike, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const req of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, req.key);
    const value = labels[req.key];
    const values = req.values ?? [];
    switch (req.operator) {
      case 'In':
        if (!has || value === undefined || !values.includes(value)) return false;
        break;
      case 'NotIn':
        if (has && value !== undefined && values.includes(value)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/**
 * The canonical text of an IPv6 literal (lower case, zeros compressed, as the WHATWG URL parser
 * writes it); anything else unchanged. One address written two ways (`2001:DB8::7`,
 * `2001:0db8:0:0:0:0:0:7`) is then one endpoint, reported as a duplicate, not registered twice.
 */
export function canonicalAddress(address: string): string {
  // Every IPv6 literal has a colon; IPv4 addresses and host names skip the long regex.
  return address.includes(':') && isIPv6(address) ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}

/** `<address>:<port>`, with IPv6 literals in brackets. */
export function instanceId(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function resolvePodPort(pod: SlimPod, port: number | string | undefined): number | string {
  if (typeof port === 'number') return port;
  if (port === undefined || port === '') return `pod ${pod.metadata.name} cannot be registered: spec.port is not set`;
  if (/^\d+$/.test(port)) return Number(port);
  const found = pod.ports.find((p) => p.name === port);
  if (!found)
    return `pod ${pod.metadata.name} has no container port named "${port}"; name one of its ports "${port}" or set spec.port to a number`;
  return found.containerPort;
}

const NO_LABELS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * `base` with `extra` over it, as a new object only when both have keys: an endpoint's tags and
 * metadata are never changed after this, so most endpoints (no tags, no metadata) share one empty
 * object instead of two fresh ones each.
 */
function overlay(base: Readonly<Record<string, string>>, extra?: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  const hasExtra = extra !== undefined && Object.keys(extra).length > 0;
  if (!hasExtra) return Object.keys(base).length > 0 ? { ...base } : NO_LABELS;
  return Object.keys(base).length > 0 ? { ...base, ...extra } : { ...extra };
}

/** Computes the desired endpoints of one ServiceInstance. */
export function desiredEndpoints(si: SourceInput, pods: readonly SlimPod[]): SourceResult {
  const spec = si.spec;
  const baseTags = spec.tags ?? {};
  const metadata = spec.metadata ?? {};
  const defaultWeight = spec.weight ?? 1;
  const problems: string[] = [];
  const byId = new Map<string, Endpoint>();
  const addEndpoint = (e: Endpoint, what: string): void => {
    const existing = byId.get(e.instanceId);
    if (existing) {
      problems.push(`${what} duplicates ${existing.source} at ${e.instanceId}; it is registered once`);
      return;
    }
    byId.set(e.instanceId, e);
  };
  let total = 0;
  let ready = 0;
  if (spec.selector) {
    const selector = spec.selector;
    for (const pod of pods) {
      if (pod.metadata.namespace !== si.namespace || !selectorMatches(selector, pod.metadata.labels)) continue;
      if (pod.finished) continue;
      total++;
      if (!pod.ready || pod.metadata.terminating || !pod.ip) continue;
      ready++;
      const port = resolvePodPort(pod, spec.port);
      if (typeof port === 'string') {
        problems.push(port);
        continue;
      }
      const address = canonicalAddress(pod.ip);
      addEndpoint(
        {
          service: spec.service,
          instanceId: instanceId(address, port),
          address,
          port,
          weight: defaultWeight,
          tags: overlay(baseTags),
          metadata: overlay(metadata),
          source: `pod/${pod.metadata.namespace}/${pod.metadata.name}`,
        },
        `pod ${pod.metadata.name}`,
      );
    }
  } else {
    (spec.endpoints ?? []).forEach((ep, i) => {
      total++;
      const port = ep.port ?? (typeof spec.port === 'number' ? spec.port : undefined);
      if (port === undefined) {
        problems.push(`endpoints[${i}] (${ep.address}) has no port and spec.port is not a number; set one of them`);
        return;
      }
      ready++;
      const address = canonicalAddress(ep.address);
      addEndpoint(
        {
          service: spec.service,
          instanceId: instanceId(address, port),
          address,
          port,
          weight: ep.weight ?? defaultWeight,
          tags: overlay(baseTags, ep.tags),
          metadata: overlay(metadata),
          source: `static/${si.namespace}/${si.name}/${i}`,
        },
        `endpoints[${i}]`,
      );
    });
  }
  const endpoints = [...byId.values()];
  if (endpoints.length > 1) endpoints.sort((a, b) => (a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0));
  return { endpoints, total, ready, problems };
}

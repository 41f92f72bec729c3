/**
 * Pods as the operator keeps them: only the fields that decide whether and where a pod is
 * registered. The informer stores these instead of whole pods, which keeps memory flat at tens
 * of thousands of pods.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { intern } from '../intern.ts';

/** A container port a ServiceInstance may name. */
export interface SlimContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol?: string;
}

/** The fields of a pod the operator needs. */
export interface SlimPod {
  readonly metadata: {
    readonly name: string;
    readonly namespace: string;
    readonly resourceVersion?: string;
    readonly labels: Readonly<Record<string, string>>;
    /** Set once deletion began: a terminating pod leaves the registry before it exits. */
    readonly terminating: boolean;
  };
  /** Pod IP, when assigned. */
  readonly ip: string | undefined;
  /** The Ready condition is True. */
  readonly ready: boolean;
  /** Succeeded or Failed: the pod will never serve again. */
  readonly finished: boolean;
  readonly ports: readonly SlimContainerPort[];
}

/** Port lists, one frozen copy per distinct list: the pods of a workload all declare the same. */
const portLists = new Map<string, readonly SlimContainerPort[]>();
const PORT_LISTS_MAX = 50_000;

function sharedPorts(ports: SlimContainerPort[]): readonly SlimContainerPort[] {
  if (ports.length === 0) return NO_PORTS;
  const signature = JSON.stringify(ports);
  const known = portLists.get(signature);
  if (known) return known;
  if (portLists.size >= PORT_LISTS_MAX) portLists.clear();
  const frozen = Object.freeze(ports.map((p) => Object.freeze(p)));
  portLists.set(signature, frozen);
  return frozen;
}

const NO_PORTS: readonly SlimContainerPort[] = Object.freeze([]);

/**
 * Reduces a pod to a {@link SlimPod}, sharing the strings (namespaces, label keys and values, port
 * names and protocols) and port lists pods repeat.
 */
export function slimPod(pod: V1Pod): SlimPod {
  const ports: SlimContainerPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      const port: { name?: string; containerPort: number; protocol?: string } = { containerPort: p.containerPort };
      if (p.name) port.name = intern(p.name);
      if (p.protocol) port.protocol = intern(p.protocol);
      ports.push(port);
    }
  }
  const phase = pod.status?.phase;
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(pod.metadata?.labels ?? {})) labels[intern(k)] = intern(v);
  const metadata: { name: string; namespace: string; labels: Record<string, string>; terminating: boolean; resourceVersion?: string } = {
    name: pod.metadata?.name ?? '',
    namespace: intern(pod.metadata?.namespace ?? ''),
    labels,
    terminating: Boolean(pod.metadata?.deletionTimestamp),
  };
  if (pod.metadata?.resourceVersion) metadata.resourceVersion = pod.metadata.resourceVersion;
  return {
    metadata,
    ip: pod.status?.podIP || undefined,
    ready: (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
    finished: phase === 'Succeeded' || phase === 'Failed',
    ports: sharedPorts(ports),
  };
}

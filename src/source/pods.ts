/**
 * Pods as the operator keeps them: only the fields that decide whether and where a pod is
 * registered. The informer stores these instead of whole pods, which keeps memory flat at tens
 * of thousands of pods.
 */
import type { V1Pod } from '@kubernetes/client-node';

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
    readonly uid?: string;
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

/** Reduces a pod to a {@link SlimPod}. */
export function slimPod(pod: V1Pod): SlimPod {
  const ports: SlimContainerPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      const port: SlimContainerPort = { containerPort: p.containerPort };
      if (p.name) Object.assign(port, { name: p.name });
      if (p.protocol) Object.assign(port, { protocol: p.protocol });
      ports.push(port);
    }
  }
  const phase = pod.status?.phase;
  const metadata: SlimPod['metadata'] = {
    name: pod.metadata?.name ?? '',
    namespace: pod.metadata?.namespace ?? '',
    labels: { ...(pod.metadata?.labels ?? {}) },
    terminating: Boolean(pod.metadata?.deletionTimestamp),
  };
  if (pod.metadata?.uid) Object.assign(metadata, { uid: pod.metadata.uid });
  if (pod.metadata?.resourceVersion) Object.assign(metadata, { resourceVersion: pod.metadata.resourceVersion });
  return {
    metadata,
    ip: pod.status?.podIP || undefined,
    ready: (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
    finished: phase === 'Succeeded' || phase === 'Failed',
    ports,
  };
}

/** What the parts of one Consul backend (heartbeats, writes, reads) share. */
import type { RegistryLogger } from '../logger.ts';
import type { AgentCalls } from './agent-calls.ts';
import type { AgentViews } from './agent-view.ts';
import type { ConsulNaming } from './naming.ts';
import type { ConsulNamespaces } from './namespace-state.ts';

/** The agent calls, naming, namespace states and validated settings of one Consul registry backend. */
export interface ConsulBackendContext {
  readonly calls: AgentCalls;
  readonly naming: ConsulNaming;
  readonly namespaces: ConsulNamespaces;
  /** What the agent holds, per Consul namespace: what reads are served from. */
  readonly views: AgentViews;
  /** This cluster's id; part of every owner and of every service id. */
  readonly clusterId: string;
  /** Name of the Registry resource, recorded on heartbeats; undefined when not given. */
  readonly registryName: string | undefined;
  /** TTL of the heartbeat check. */
  readonly ttlSeconds: number;
  /** How long instances stay critical before the agent reaps them. */
  readonly reapAfterSeconds: number;
  /** Read, compute and log, but write nothing and pass no heartbeat. */
  readonly dryRun: boolean;
  /** Agent calls in flight at once while applying changes. */
  readonly maxConcurrentCalls: number;
  readonly logger: RegistryLogger;
}

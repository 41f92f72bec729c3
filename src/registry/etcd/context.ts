/** What the parts of one etcd backend (leases, writes, reads) share. */
import type PQueue from 'p-queue';
import type { RegistryLogger } from '../logger.ts';
import type { EtcdClient } from './client.ts';
import type { EtcdValueFormat } from './codec.ts';
import type { EtcdKeyLayout } from './keys.ts';
import type { NamespaceStates } from './namespace-state.ts';

/** The client, key layout, namespace states and validated settings of one etcd registry backend. */
export interface EtcdBackendContext {
  readonly client: EtcdClient;
  readonly keys: EtcdKeyLayout;
  readonly namespaces: NamespaceStates;
  /** This cluster's id; part of every owner and of the lease bookkeeping. */
  readonly clusterId: string;
  /** Format values are written in. */
  readonly format: EtcdValueFormat;
  readonly ttlSeconds: number;
  /** Read, compute and log, but write nothing and touch no lease. */
  readonly dryRun: boolean;
  /** Operations per transaction. */
  readonly maxTxnOps: number;
  readonly logger: RegistryLogger;
  /** Milliseconds since the epoch. */
  readonly now: () => number;
  /** Age after which a namespace's view is read again (see namespace-view.ts); 0 reads every scope afresh. */
  readonly viewMaxAgeMs: number;
  /**
   * Refreshes of namespace views, one at a time. Views read together age together, and their
   * refreshes would otherwise all come due at once: every namespace's response decoded in the
   * same turn, too much at once to die young, so each refresh round left the size of every
   * namespace as old-generation garbage (a 10–20 MB spike in the operator's memory). One at a
   * time, a response is gone before the next arrives. First reads are not queued: a cold start
   * or a recovery writes to a namespace only once it is read.
   */
  readonly viewReads: PQueue;
}

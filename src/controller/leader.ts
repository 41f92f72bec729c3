/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics: a candidate
 * takes the Lease when its holder has not renewed it for leaseDuration (measured on the local
 * clock from when this process last saw the record change, so clock skew between nodes does not
 * matter); the leader renews every retryPeriod and gives up if it cannot renew within
 * renewDeadline. On graceful shutdown the leader releases the Lease so a standby takes over at
 * once instead of after leaseDuration.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from 'pino';

/** Options of {@link LeaderElector}. */
export interface LeaderElectionOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  readonly name: string;
  readonly leaseDurationSeconds: number;
  readonly renewDeadlineSeconds: number;
  readonly retryPeriodSeconds: number;
  readonly logger: Logger;
  /** Defaults to `<hostname>_<uuid>`. */
  readonly identity?: string;
  readonly onStartedLeading: () => void;
  /** Leadership was lost (not released): the process should stop reconciling at once. */
  readonly onStoppedLeading: () => void;
}

function isStatus(err: unknown, code: number): boolean {
  return (err as { code?: unknown }).code === code;
}

/** A Lease-based leader elector. */
export class LeaderElector {
  readonly identity: string;
  readonly #o: LeaderElectionOptions;
  readonly #api: CoordinationV1Api;
  #observed: { holder: string; renewTime: string; transitions: number } | undefined;
  #observedAt = 0;
  #leading = false;
  #lastRenew = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(o: LeaderElectionOptions) {
    this.#o = o;
    this.identity = o.identity ?? `${hostname()}_${randomUUID()}`;
    this.#api = o.kubeConfig.makeApiClient(CoordinationV1Api);
  }

  /** True while this process holds the Lease. */
  get leading(): boolean {
    return this.#leading;
  }

  /** Starts campaigning; returns at once. */
  start(): void {
    this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    const o = this.#o;
    let ok = false;
    try {
      ok = await this.#tryAcquireOrRenew();
    } catch (err: unknown) {
      o.logger.warn({ err, lease: `${o.namespace}/${o.name}` }, 'leader election: could not read or write the Lease');
    }
    if (this.#stopped) return;
    const now = Date.now();
    if (ok) {
      this.#lastRenew = now;
      if (!this.#leading) {
        this.#leading = true;
        o.logger.info({ identity: this.identity, lease: `${o.namespace}/${o.name}` }, 'became leader');
        o.onStartedLeading();
      }
    } else if (this.#leading && now - this.#lastRenew > o.renewDeadlineSeconds * 1000) {
      this.#leading = false;
      o.logger.error({ identity: this.identity }, 'leader election: lost the Lease (could not renew within the renew deadline)');
      o.onStoppedLeading();
      return;
    }
    this.#schedule(o.retryPeriodSeconds * 1000 * (this.#leading ? 1 : 1 + 0.2 * Math.random()));
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const o = this.#o;
    const now = new Date();
    let lease: V1Lease;
    try {
      lease = await this.#api.readNamespacedLease({ namespace: o.namespace, name: o.name });
    } catch (err: unknown) {
      if (!isStatus(err, 404)) throw err;
      await this.#api.createNamespacedLease({
        namespace: o.namespace,
        body: {
          metadata: { name: o.name, namespace: o.namespace },
          spec: { holderIdentity: this.identity, leaseDurationSeconds: o.leaseDurationSeconds, acquireTime: new V1MicroTime(now), renewTime: new V1MicroTime(now), leaseTransitions: 0 },
        },
      });
      this.#observe(this.identity, now.toISOString(), 0);
      return true;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewTime = spec.renewTime ? new Date(spec.renewTime).toISOString() : '';
    const transitions = spec.leaseTransitions ?? 0;
    if (!this.#observed || this.#observed.holder !== holder || this.#observed.renewTime !== renewTime) this.#observe(holder, renewTime, transitions);
    const duration = (spec.leaseDurationSeconds ?? o.leaseDurationSeconds) * 1000;
    if (holder && holder !== this.identity && this.#observedAt + duration > Date.now()) return false;
    const body: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: o.leaseDurationSeconds,
        renewTime: new V1MicroTime(now),
        ...(holder !== this.identity ? { acquireTime: new V1MicroTime(now), leaseTransitions: transitions + 1 } : {}),
      },
    };
    try {
      await this.#api.replaceNamespacedLease({ namespace: o.namespace, name: o.name, body });
    } catch (err: unknown) {
      // Someone else wrote the Lease since we read it: not ours this round.
      if (isStatus(err, 409)) return false;
      throw err;
    }
    this.#observe(this.identity, now.toISOString(), body.spec?.leaseTransitions ?? transitions);
    return true;
  }

  #observe(holder: string, renewTime: string, transitions: number): void {
    this.#observed = { holder, renewTime, transitions };
    this.#observedAt = Date.now();
  }

  /** Stops campaigning; a leader releases the Lease so that a standby takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (!this.#leading) return;
    this.#leading = false;
    const o = this.#o;
    try {
      const lease = await this.#api.readNamespacedLease({ namespace: o.namespace, name: o.name });
      if (lease.spec?.holderIdentity !== this.identity) return;
      await this.#api.replaceNamespacedLease({
        namespace: o.namespace,
        name: o.name,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime() } },
      });
      o.logger.info('released the leader Lease');
    } catch (err: unknown) {
      o.logger.warn({ err }, 'could not release the leader Lease; a standby takes over after the lease duration');
    }
  }
}

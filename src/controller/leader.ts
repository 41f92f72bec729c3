/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics: a candidate
 * takes the Lease when its holder has not renewed it for leaseDuration (measured on the local
 * clock from when this process last saw the record change, so clock skew between nodes does not
 * matter); the leader renews every retryPeriod and gives up if it cannot renew within
 * renewDeadline. On graceful shutdown the leader releases the Lease so a standby takes over at
 * once instead of after leaseDuration.
 *
 * The renew deadline is a timer of its own, not a check made when a request returns: a leader
 * whose apiserver link hangs must stop leading before a standby can take the Lease, whatever its
 * request is doing. Every attempt is also abandoned (and its request aborted) after renewDeadline,
 * and an answer that arrives after that never counts.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { KubeConfig, V1Lease } from '@kubernetes/client-node';
import { V1MicroTime } from '@kubernetes/client-node/dist/types.js';
import { kubeRequest, seg } from '../kube/api.ts';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.ts';

/**
 * The Lease calls the elector makes. A call is abandoned when its signal aborts; errors carry the
 * HTTP status in `code` (404 and 409 matter), as client-node's do.
 */
export interface LeaseApi {
  read(namespace: string, name: string, signal: AbortSignal): Promise<V1Lease>;
  create(namespace: string, lease: V1Lease, signal: AbortSignal): Promise<V1Lease>;
  replace(namespace: string, name: string, lease: V1Lease, signal: AbortSignal): Promise<V1Lease>;
}

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
  /** Defaults to the real clock. */
  readonly clock?: Clock;
  /** Defaults to the apiserver of `kubeConfig` ({@link kubeLeaseApi}). */
  readonly leaseApi?: LeaseApi;
  /** Source of the standby's retry jitter, in [0, 1); defaults to Math.random. */
  readonly random?: () => number;
}

/** The {@link LeaseApi} of an apiserver, through client-node; aborting a call aborts its request. */
export function kubeLeaseApi(kubeConfig: KubeConfig): LeaseApi {
  const path = (namespace: string, name?: string): string =>
    `/apis/coordination.k8s.io/v1/namespaces/${seg(namespace)}/leases${name === undefined ? '' : `/${seg(name)}`}`;
  return {
    read: (namespace, name, signal) => kubeRequest<V1Lease>(kubeConfig, { method: 'GET', path: path(namespace, name), signal }),
    create: (namespace, body, signal) => kubeRequest<V1Lease>(kubeConfig, { method: 'POST', path: path(namespace), body, signal }),
    replace: (namespace, name, body, signal) =>
      kubeRequest<V1Lease>(kubeConfig, { method: 'PUT', path: path(namespace, name), body, signal }),
  };
}

function isStatus(err: unknown, code: number): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** Settles like `work`, or rejects with the abort reason as soon as `signal` aborts, whichever comes first. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      const reason: unknown = signal.reason;
      reject(reason instanceof Error ? reason : new Error('aborted', { cause: reason }));
    };
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    void work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A Lease-based leader elector. */
export class LeaderElector {
  readonly identity: string;
  readonly #o: LeaderElectionOptions;
  readonly #api: LeaseApi;
  readonly #clock: Clock;
  #observed: { holder: string; renewTime: string; transitions: number } | undefined;
  #observedAt = 0;
  #leading = false;
  /** When the last successful attempt started: the renewTime it wrote. */
  #lastRenew = 0;
  #retryTimer: unknown;
  #deadlineTimer: unknown;
  /** Aborts the attempt in flight, if any. */
  #attempt: AbortController | undefined;
  /** Stopped or lost: campaigning is over and nothing that arrives later counts. */
  #done = false;

  constructor(o: LeaderElectionOptions) {
    this.#o = o;
    this.identity = o.identity ?? `${hostname()}_${randomUUID()}`;
    this.#api = o.leaseApi ?? kubeLeaseApi(o.kubeConfig);
    this.#clock = o.clock ?? systemClock;
  }

  /** True while this process holds the Lease. */
  get leading(): boolean {
    return this.#leading;
  }

  /** Starts campaigning; returns at once. */
  start(): void {
    this.#schedule(0);
  }

  get #renewDeadlineMs(): number {
    return this.#o.renewDeadlineSeconds * 1000;
  }

  #schedule(ms: number): void {
    if (this.#done) return;
    this.#retryTimer = this.#clock.setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    this.#retryTimer = undefined;
    const o = this.#o;
    const startedAt = this.#clock.now();
    const attempt = new AbortController();
    this.#attempt = attempt;
    // As client-go runs each try under a context with the renew deadline, so that a hung
    // request cannot keep a standby from campaigning either.
    const timeout = this.#clock.setTimeout(
      () => attempt.abort(new Error(`the Lease request did not answer within the renew deadline (${o.renewDeadlineSeconds} s)`)),
      this.#renewDeadlineMs,
    );
    let ok = false;
    try {
      ok = await untilAborted(this.#tryAcquireOrRenew(startedAt, attempt.signal), attempt.signal);
    } catch (err: unknown) {
      if (!this.#done) o.logger.warn({ err, lease: `${o.namespace}/${o.name}` }, 'leader election: could not read or write the Lease');
    } finally {
      this.#clock.clearTimeout(timeout);
    }
    if (this.#done) return;
    this.#attempt = undefined;
    if (ok && !attempt.signal.aborted) {
      this.#lastRenew = startedAt;
      this.#armRenewDeadline();
      if (!this.#leading) {
        this.#leading = true;
        o.logger.info({ identity: this.identity, lease: `${o.namespace}/${o.name}` }, 'became leader');
        o.onStartedLeading();
      }
    } else if (this.#leading && this.#clock.now() - this.#lastRenew >= this.#renewDeadlineMs) {
      this.#lose();
      return;
    }
    this.#schedule(o.retryPeriodSeconds * 1000 * (this.#leading ? 1 : 1 + 0.2 * (o.random ?? Math.random)()));
  }

  /**
   * Loses leadership renewDeadline after the last successful renew began. Counting from when it
   * began, not when it answered, keeps the leader's deadline before any standby's: a standby
   * starts its leaseDuration no earlier than the renewed record was written.
   */
  #armRenewDeadline(): void {
    if (this.#deadlineTimer !== undefined) this.#clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = this.#clock.setTimeout(
      () => this.#lose(),
      Math.max(0, this.#lastRenew + this.#renewDeadlineMs - this.#clock.now()),
    );
  }

  #lose(): void {
    if (this.#done || !this.#leading) return;
    const o = this.#o;
    this.#done = true;
    this.#leading = false;
    this.#clearTimers();
    this.#attempt?.abort(new Error('leadership lost'));
    o.logger.error(
      { identity: this.identity, lease: `${o.namespace}/${o.name}` },
      'leader election: lost the Lease (could not renew within the renew deadline)',
    );
    o.onStoppedLeading();
  }

  #clearTimers(): void {
    if (this.#retryTimer !== undefined) this.#clock.clearTimeout(this.#retryTimer);
    if (this.#deadlineTimer !== undefined) this.#clock.clearTimeout(this.#deadlineTimer);
    this.#retryTimer = undefined;
    this.#deadlineTimer = undefined;
  }

  /** One try; nothing it learns counts once `signal` aborted. */
  async #tryAcquireOrRenew(startedAt: number, signal: AbortSignal): Promise<boolean> {
    const o = this.#o;
    const now = new Date(startedAt);
    let lease: V1Lease;
    try {
      lease = await this.#api.read(o.namespace, o.name, signal);
    } catch (err: unknown) {
      if (!isStatus(err, 404)) throw err;
      signal.throwIfAborted();
      await this.#api.create(
        o.namespace,
        {
          metadata: { name: o.name, namespace: o.namespace },
          spec: {
            holderIdentity: this.identity,
            leaseDurationSeconds: o.leaseDurationSeconds,
            acquireTime: new V1MicroTime(now),
            renewTime: new V1MicroTime(now),
            leaseTransitions: 0,
          },
        },
        signal,
      );
      signal.throwIfAborted();
      this.#observe(this.identity, now.toISOString(), 0);
      return true;
    }
    signal.throwIfAborted();
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewTime = spec.renewTime ? new Date(spec.renewTime).toISOString() : '';
    const transitions = spec.leaseTransitions ?? 0;
    if (!this.#observed || this.#observed.holder !== holder || this.#observed.renewTime !== renewTime)
      this.#observe(holder, renewTime, transitions);
    const duration = (spec.leaseDurationSeconds ?? o.leaseDurationSeconds) * 1000;
    if (holder && holder !== this.identity && this.#observedAt + duration > this.#clock.now()) return false;
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
      await this.#api.replace(o.namespace, o.name, body, signal);
    } catch (err: unknown) {
      // Someone else wrote the Lease since we read it: not ours this round.
      if (isStatus(err, 409)) return false;
      throw err;
    }
    signal.throwIfAborted();
    this.#observe(this.identity, now.toISOString(), body.spec?.leaseTransitions ?? transitions);
    return true;
  }

  #observe(holder: string, renewTime: string, transitions: number): void {
    this.#observed = { holder, renewTime, transitions };
    this.#observedAt = this.#clock.now();
  }

  /** Stops campaigning; a leader releases the Lease so that a standby takes over at once. */
  async stop(): Promise<void> {
    const wasLeading = this.#leading && !this.#done;
    this.#done = true;
    this.#leading = false;
    this.#clearTimers();
    this.#attempt?.abort(new Error('leader election stopped'));
    if (!wasLeading) return;
    const o = this.#o;
    // Bounded like any attempt, so that shutdown does not wait on a hung apiserver.
    const release = new AbortController();
    const timeout = this.#clock.setTimeout(
      () => release.abort(new Error(`releasing the Lease took longer than the renew deadline (${o.renewDeadlineSeconds} s)`)),
      this.#renewDeadlineMs,
    );
    try {
      if (await untilAborted(this.#release(release.signal), release.signal)) o.logger.info('released the leader Lease');
    } catch (err: unknown) {
      o.logger.warn({ err }, 'could not release the leader Lease; a standby takes over after the lease duration');
    } finally {
      this.#clock.clearTimeout(timeout);
    }
  }

  /** Hands the Lease back if this process still holds it; true when it did. */
  async #release(signal: AbortSignal): Promise<boolean> {
    const o = this.#o;
    const lease = await this.#api.read(o.namespace, o.name, signal);
    if (lease.spec?.holderIdentity !== this.identity) return false;
    await this.#api.replace(
      o.namespace,
      o.name,
      { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime(this.#clock.now()) } },
      signal,
    );
    return true;
  }
}

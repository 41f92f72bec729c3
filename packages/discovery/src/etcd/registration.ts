/**
 * One self-registration in etcd: an entry (and for grpc/hostport its owner index record) on a
 * lease of its own, kept alive by etcd3's keepalive. If the lease is lost anyway (etcd gone for
 * longer than the TTL), the entry is written again on a new lease once etcd is back. Closing
 * revokes the lease, which removes the entry at once.
 */
import type { IBackoff, IBackoffFactory } from 'cockatiel';
import type { Etcd3, Lease } from 'etcd3';

import { DiscoveryError } from '../errors.ts';
import { pause } from '../pause.ts';
import type { Registration } from '../source.ts';
import { deadline } from './client.ts';
import { decodeOwner } from './decode.ts';
import type { EncodedEntry } from './encode.ts';
import { EntryOwnedElsewhereError } from './errors.ts';
import { describeError, type DiscoveryLogger } from '../logger.ts';
import type { EntryOwner } from './record.ts';

/** Everything a registration writes and how. */
export interface RegistrationPlan {
  readonly client: Etcd3;
  readonly entryKey: string;
  /**
   * The owner index key of the entry: written for grpc/hostport, and read whatever the format,
   * since an entry of the operator's in another format keeps its owner there.
   */
  readonly ownerIndexKey: string;
  readonly encoded: EncodedEntry;
  readonly owner: EntryOwner;
  readonly leaseTtlSeconds: number;
  readonly callTimeoutMs: number;
  readonly backoff: IBackoffFactory<unknown>;
  readonly logger: DiscoveryLogger;
}

/** Attempts of the read-check-write transaction before giving up on a key that keeps changing. */
const WRITE_ATTEMPTS = 3;

/** What is at a key now. */
interface Found {
  readonly value: string | undefined;
  readonly modRevision: string | undefined;
}

/** A live self-registration. */
export class EtcdRegistration implements Registration {
  readonly id: string;
  readonly #plan: RegistrationPlan;
  readonly #fields: object;
  #lease: Lease | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Aborted by close(): cuts the wait between attempts short. */
  readonly #stopWaiting = new AbortController();

  private constructor(plan: RegistrationPlan) {
    this.#plan = plan;
    this.id = plan.entryKey;
    this.#fields = { key: plan.entryKey };
  }

  /**
   * Writes the entry on a new lease. Throws {@link EntryOwnedElsewhereError} if the key holds
   * someone else's entry, or the etcd error if etcd cannot be reached; nothing is left behind then.
   */
  static async create(plan: RegistrationPlan): Promise<EtcdRegistration> {
    const registration = new EtcdRegistration(plan);
    await registration.#establish();
    return registration;
  }

  /** Revokes the lease: the entry is gone at once. Idempotent; logs (does not throw) if etcd cannot be reached. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#stopWaiting.abort();
    const lease = this.#lease;
    this.#lease = undefined;
    if (lease === undefined) return;
    try {
      await lease.revoke(deadline(this.#plan.callTimeoutMs));
    } catch (err: unknown) {
      this.#plan.logger.warn(
        { ...this.#fields, err: describeError(err), leaseTtlSeconds: this.#plan.leaseTtlSeconds },
        'could not revoke the registration lease; the entry disappears when the lease expires',
      );
    }
  }

  /** A new lease and the entry on it; on failure the lease is revoked and the error thrown. */
  async #establish(): Promise<void> {
    const { client, leaseTtlSeconds, callTimeoutMs } = this.#plan;
    const lease = client.lease(leaseTtlSeconds, deadline(callTimeoutMs));
    lease.on('lost', (err: unknown) => this.#onLost(lease, err));
    try {
      const leaseId = await lease.grant();
      await this.#write(leaseId);
    } catch (err: unknown) {
      await lease.revoke(deadline(callTimeoutMs)).catch(() => undefined);
      throw err;
    }
    if (this.#closed) {
      await lease.revoke(deadline(callTimeoutMs)).catch(() => undefined);
      return;
    }
    this.#lease = lease;
  }

  /** Writes the entry on `leaseId` unless someone else owns the key; retries if it changes under us. */
  async #write(leaseId: string): Promise<void> {
    const { client, entryKey, ownerIndexKey, encoded, owner, callTimeoutMs } = this.#plan;
    for (let attempt = 1; attempt <= WRITE_ATTEMPTS; attempt++) {
      const entry = await this.#find(entryKey);
      const index = await this.#find(ownerIndexKey);
      if (entry.value !== undefined || index.value !== undefined) {
        // An owner index without its entry is judged by the index alone (it is a json record).
        const there = entry.value !== undefined ? decodeOwner(entry.value, index.value) : decodeOwner(index.value ?? '', undefined);
        if (!sameOwner(there, owner)) throw new EntryOwnedElsewhereError(entryKey, there, owner);
      }
      // Only if nothing changed since the read: absent keys still absent, ours still as read.
      const ops = [client.put(entryKey).value(encoded.value).lease(leaseId)];
      if (encoded.ownerIndex !== undefined) ops.push(client.put(ownerIndexKey).value(encoded.ownerIndex).lease(leaseId));
      const res = await client
        .if(entryKey, 'Mod', '==', entry.modRevision ?? '0')
        .and(ownerIndexKey, 'Mod', '==', index.modRevision ?? '0')
        .then(...ops, ...(encoded.ownerIndex === undefined && index.value !== undefined ? [client.delete().key(ownerIndexKey)] : []))
        .options(deadline(callTimeoutMs))
        .commit();
      if (res.succeeded) return;
    }
    throw new DiscoveryError(`cannot register ${entryKey}: the key kept changing while it was being written; try again`);
  }

  async #find(key: string): Promise<Found> {
    const res = await this.#plan.client.get(key).options(deadline(this.#plan.callTimeoutMs)).exec();
    const kv = res.kvs[0];
    return kv === undefined
      ? { value: undefined, modRevision: undefined }
      : { value: kv.value.toString('utf8'), modRevision: kv.mod_revision };
  }

  /** The lease died (etcd unreachable past the TTL, or revoked): write the entry again on a new one. */
  #onLost(lease: Lease, err: unknown): void {
    if (this.#closed || this.#lease !== lease) return;
    this.#lease = undefined;
    this.#plan.logger.warn({ ...this.#fields, err: describeError(err) }, 'registration lease lost; registering again once etcd answers');
    this.#reestablish().catch((error: unknown) =>
      this.#plan.logger.error({ ...this.#fields, err: describeError(error) }, 'registering again stopped by an unexpected error'),
    );
  }

  async #reestablish(): Promise<void> {
    let backoff: IBackoff<unknown> | undefined;
    while (!this.#closed) {
      backoff = backoff === undefined ? this.#plan.backoff.next(undefined) : backoff.next(undefined);
      await pause(backoff.duration, this.#stopWaiting.signal);
      if (this.#closed) return;
      try {
        await this.#establish();
        if (!this.#closed) this.#plan.logger.info(this.#fields, 'registered again on a new lease');
        return;
      } catch (err: unknown) {
        const log = { ...this.#fields, err: describeError(err), retryInMs: Math.round(backoff.duration) };
        if (err instanceof EntryOwnedElsewhereError) this.#plan.logger.error(log, 'cannot register again: the key is taken; retrying');
        else this.#plan.logger.debug(log, 'registering again failed; retrying');
      }
    }
  }
}

function sameOwner(a: EntryOwner | undefined, b: EntryOwner): boolean {
  return a !== undefined && a.clusterId === b.clusterId && a.namespace === b.namespace && a.name === b.name;
}

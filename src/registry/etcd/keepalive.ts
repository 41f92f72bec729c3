/**
 * Keeps many etcd leases alive over one keepalive stream.
 *
 * etcd3's own `Lease` class can only keep alive leases it granted itself; adopting a lease granted
 * by a previous operator process needs a keeper that works from a bare id. One stream serves every
 * registry namespace, so the cost per interval is one message per lease and no extra connections.
 */
import { systemIntervals, type IntervalTimers } from '../../clock.ts';
import type { KeepaliveStream } from './client.ts';
import type { RegistryLogger } from '../logger.ts';

/** What the keeper needs: a way to open the stream. */
export interface KeepaliveSource {
  openKeepaliveStream(): Promise<KeepaliveStream>;
}

/** Options of {@link LeaseKeepalive}. */
export interface LeaseKeepaliveOptions {
  readonly source: KeepaliveSource;
  /** Time between renewals; a third of the TTL, as etcd's Go client does. */
  readonly intervalMs: number;
  /** Called once when etcd says a lease no longer exists; the lease is dropped from the keeper. */
  readonly onLost: (id: bigint) => void;
  /** Called whenever etcd confirms a renewal (the lease lives for another TTL from now). */
  readonly onRenewed?: (id: bigint) => void;
  /** Called on every interval after renewals are sent; the owner hangs its retries here. */
  readonly onTick?: () => void;
  /** Called whenever a renewal round fails or a lease is lost (for metrics). */
  readonly onFailure?: () => void;
  readonly logger: RegistryLogger;
  /** Defaults to the real timers. */
  readonly clock?: IntervalTimers;
}

/** Renews a set of leases until closed. Never revokes. */
export class LeaseKeepalive {
  readonly #options: LeaseKeepaliveOptions;
  readonly #clock: IntervalTimers;
  readonly #ids = new Set<bigint>();
  #timer: unknown;
  #stream: KeepaliveStream | undefined;
  #opening = false;
  #closed = false;
  /** Intervals since the current stream last answered; a silent stream is replaced. */
  #silentTicks = 0;

  /** Starts nothing: the timer starts with the first lease added. */
  constructor(options: LeaseKeepaliveOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemIntervals;
  }

  /** Starts renewing `id` (immediately, then every interval). */
  add(id: bigint): void {
    if (this.#closed) return;
    this.#ids.add(id);
    this.#ensureTimer();
    this.#send([id]);
  }

  /** Stops renewing `id`; it then expires on its own. */
  delete(id: bigint): void {
    this.#ids.delete(id);
  }

  /** Leases being renewed. */
  get size(): number {
    return this.#ids.size;
  }

  /** Whether `id` is being renewed. */
  has(id: bigint): boolean {
    return this.#ids.has(id);
  }

  /** Stops the timer and the stream. Leases are not revoked: their keys expire after the TTL. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
    this.#dropStream();
    this.#ids.clear();
  }

  #ensureTimer(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = this.#clock.setInterval(() => this.#tick(), this.#options.intervalMs);
  }

  #tick(): void {
    if (this.#stream !== undefined && ++this.#silentTicks > 2) {
      this.#options.logger.warn({ silentIntervals: this.#silentTicks - 1 }, 'etcd keepalive stream stopped answering; reopening it');
      this.#options.onFailure?.();
      this.#dropStream();
    }
    this.#send([...this.#ids]);
    this.#options.onTick?.();
  }

  #send(ids: readonly bigint[]): void {
    if (this.#closed || ids.length === 0) return;
    const stream = this.#stream;
    if (stream === undefined) {
      // The stream being opened sends every id once it is up.
      this.#open();
      return;
    }
    try {
      for (const id of ids) stream.write({ ID: id.toString() });
    } catch (err: unknown) {
      this.#options.logger.warn({ err }, 'etcd keepalive write failed; reopening the stream');
      this.#options.onFailure?.();
      this.#dropStream();
    }
  }

  #open(): void {
    if (this.#opening || this.#closed) return;
    this.#opening = true;
    this.#options.source.openKeepaliveStream().then(
      (stream) => {
        this.#opening = false;
        if (this.#closed) {
          // Cancelling emits an error event; with no listener it would crash the process.
          stream.on('error', () => undefined);
          stream.cancel();
          return;
        }
        this.#stream = stream;
        this.#silentTicks = 0;
        stream.on('data', (res) => this.#onResponse(stream, res));
        stream.on('error', (err) => this.#onStreamEnd(stream, err));
        stream.on('end', () => this.#onStreamEnd(stream, undefined));
        this.#send([...this.#ids]);
      },
      (err: unknown) => {
        this.#opening = false;
        // The next tick tries again; etcd being down is reported by the calls that fail.
        this.#options.logger.warn({ err }, 'cannot open etcd lease keepalive stream; retrying on the next interval');
        this.#options.onFailure?.();
      },
    );
  }

  #onResponse(stream: KeepaliveStream, res: ILeaseKeepAliveResponseLike): void {
    if (stream !== this.#stream) return;
    this.#silentTicks = 0;
    const id = BigInt(res.ID);
    if (Number(res.TTL) > 0) {
      if (this.#ids.has(id)) this.#options.onRenewed?.(id);
      return;
    }
    if (!this.#ids.has(id)) return;
    this.#ids.delete(id);
    this.#options.onFailure?.();
    this.#options.onLost(id);
  }

  #onStreamEnd(stream: KeepaliveStream, err: unknown): void {
    if (stream !== this.#stream) return;
    this.#stream = undefined;
    if (!this.#closed) this.#options.logger.warn({ err }, 'etcd lease keepalive stream ended; reopening on the next interval');
  }

  #dropStream(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream === undefined) return;
    try {
      stream.cancel();
    } catch {
      // Already torn down by gRPC; nothing left to release.
    }
  }
}

interface ILeaseKeepAliveResponseLike {
  readonly ID: string;
  readonly TTL: string;
}

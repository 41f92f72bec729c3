/**
 * Keeps the heartbeat TTL checks of a Consul registry passing: one call per registry namespace per
 * interval, however many instances alias each heartbeat. The Consul counterpart of the etcd
 * backend's lease keepalive.
 */
import { systemIntervals, type IntervalTimers } from '../../clock.ts';
import type { RegistryLogger } from '../logger.ts';

/** Options of {@link HeartbeatKeeper}. */
export interface HeartbeatKeeperOptions {
  /** Time between passes; a third of the TTL, so that two passes may fail before the check expires. */
  readonly intervalMs: number;
  /** Passes one heartbeat (one HTTP call); rejects when the agent refused or did not answer. */
  readonly beat: (registryNamespace: string) => Promise<void>;
  /** Told about every failed pass; decides whether to re-register. Must not throw. */
  readonly onFailure: (registryNamespace: string, err: unknown) => void;
  readonly logger: RegistryLogger;
  /** Defaults to the real timers. */
  readonly clock?: IntervalTimers;
}

/** Passes a set of heartbeats every interval until closed. Never deregisters anything. */
export class HeartbeatKeeper {
  readonly #options: HeartbeatKeeperOptions;
  readonly #clock: IntervalTimers;
  readonly #namespaces = new Set<string>();
  /** Passes under way, so a slow agent never gets two at once for one heartbeat, and close() can wait. */
  readonly #inFlight = new Map<string, Promise<void>>();
  #timer: unknown;
  #closed = false;

  /** Starts nothing: the timer starts with the first heartbeat added. */
  constructor(options: HeartbeatKeeperOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemIntervals;
  }

  /** Starts passing the heartbeat of `registryNamespace` on every interval. */
  add(registryNamespace: string): void {
    if (this.#closed) return;
    this.#namespaces.add(registryNamespace);
    if (this.#timer === undefined) this.#timer = this.#clock.setInterval(() => this.#tick(), this.#options.intervalMs);
  }

  /** Stops passing it; its instances turn critical once the TTL runs out. */
  delete(registryNamespace: string): void {
    this.#namespaces.delete(registryNamespace);
  }

  /** Whether the heartbeat of `registryNamespace` is being passed. */
  has(registryNamespace: string): boolean {
    return this.#namespaces.has(registryNamespace);
  }

  /** Registry namespaces whose heartbeat is being passed. */
  get size(): number {
    return this.#namespaces.size;
  }

  /** Stops the timer and waits for passes under way. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
    this.#namespaces.clear();
    await Promise.all(this.#inFlight.values());
  }

  #tick(): void {
    for (const ns of this.#namespaces) {
      if (this.#inFlight.has(ns)) {
        this.#options.logger.warn({ registryNamespace: ns }, 'previous Consul heartbeat pass still under way; skipping this interval');
        continue;
      }
      const pass = this.#options.beat(ns).then(
        () => undefined,
        (err: unknown) => this.#options.onFailure(ns, err),
      );
      const tracked = pass.finally(() => this.#inFlight.delete(ns));
      this.#inFlight.set(ns, tracked);
    }
  }
}

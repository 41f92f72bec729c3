/**
 * A write fence shared by every backend of one operator process. While the process leads, it is
 * open; once leadership is lost it closes for good, and from then on every registry write (etcd
 * transaction, lease grant, keepalive; Consul register, deregister, heartbeat pass) is refused at
 * the client, below any retry or queue, so that a deposed leader cannot write after its successor
 * started, however its reconciles, group commits or lease recoveries happen to be scheduled.
 */

/** Thrown in place of a registry write after the fence closed. */
export class FencedError extends Error {
  override readonly name = 'FencedError';
}

/** Open until {@link WriteFence.close}; never opens again. */
export class WriteFence {
  #reason: string | undefined;
  /** True once closed. */
  get closed(): boolean {
    return this.#reason !== undefined;
  }

  /** Refuses every write from now on. */
  close(reason: string): void {
    this.#reason ??= reason;
  }

  /** Throws {@link FencedError} when closed; call right before sending a write. */
  check(what: string): void {
    if (this.#reason === undefined) return;
    throw new FencedError(`${what} refused: this process no longer writes to registries (${this.#reason})`);
  }
}

/**
 * Deadlines for the library's callback calls. node-zookeeper-client has no per-call timeout: a
 * request queued while disconnected waits for a reconnect that may never come. Every call of the
 * adapter goes through {@link CallDeadlines.run}, which rejects it after the deadline and lets the
 * session fail every pending call at once when it ends.
 */
import { describe } from '../../errors.ts';
import { ZooKeeperError, ZooKeeperOperationError, ZooKeeperTimeoutError } from './errors.ts';

/** Maps what the library reported (an Exception with a code, or an assertion Error) to an adapter error. */
export function toZooKeeperError(operation: string, path: string | undefined, err: unknown): ZooKeeperError {
  if (err instanceof ZooKeeperError) return err;
  const getCode = (err as { getCode?: unknown } | null)?.getCode;
  if (typeof getCode === 'function') {
    return new ZooKeeperOperationError(operation, path, getCode.call(err) as number, { cause: err });
  }
  // Synchronous argument checks of the library (invalid path, data over 1 MiB, …).
  return new ZooKeeperError(`ZooKeeper ${operation}${path === undefined ? '' : ` ${path}`} was refused by the client: ${describe(err)}`, {
    cause: err,
  });
}

/** A library-style completion: an error (or null/undefined) and a value. */
export type Completion<T> = (error: unknown, value?: T) => void;

/** Owns the timers of the calls in flight. */
export class CallDeadlines {
  readonly #timeoutMs: number;
  readonly #pending = new Set<(error: Error) => void>();

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Starts a call and settles with its completion, or rejects with {@link ZooKeeperTimeoutError}
   * after the deadline (a late answer is then ignored), or with the error given to {@link failAll}.
   * `settled` tells a start that was deferred whether the call is still wanted.
   */
  run<T>(operation: string, path: string | undefined, start: (done: Completion<T>, settled: () => boolean) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (error: unknown, value?: T): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#pending.delete(abort);
        if (error !== null && error !== undefined) reject(toZooKeeperError(operation, path, error));
        else resolve(value as T);
      };
      const abort = (error: Error): void => finish(error);
      const timer = setTimeout(
        () =>
          finish(
            new ZooKeeperTimeoutError(
              `ZooKeeper ${operation}${path === undefined ? '' : ` ${path}`}: no answer within ${this.#timeoutMs} ms, so it may or may not have been applied; check that the servers are reachable, and read back before retrying`,
            ),
          ),
        this.#timeoutMs,
      );
      this.#pending.add(abort);
      try {
        start(finish, () => settled);
      } catch (err) {
        finish(err);
      }
    });
  }

  /** Rejects every call in flight with `error`. */
  failAll(error: Error): void {
    for (const abort of [...this.#pending]) abort(error);
  }
}

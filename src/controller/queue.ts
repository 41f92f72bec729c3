/**
 * A keyed, de-duplicating work queue on p-queue, with controller-runtime's semantics:
 * a key waiting in the queue is queued once however often it is added; a key is never processed
 * twice at once (adding it while it runs marks it dirty and it runs again afterwards); failures
 * requeue with per-key exponential backoff and jitter; a bound limits concurrency.
 *
 * Keys may be sorted into lanes (for ServiceInstances: the Registries they write to), each with its
 * own bound, so work that waits on a slow backend never holds the workers another lane needs: a
 * Consul agent taking seconds per registration leaves etcd's reconciles as prompt as without it.
 */
import PQueue from 'p-queue';
import { systemClock, type Clock } from '../clock.ts';

/** What a handler asks for next. */
export type ReconcileResult = { readonly requeueAfterMs?: number } | undefined;

/** An error that retrying cannot fix (bad input): logged, never retried. */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

/** Observers for metrics; every field optional. */
export interface QueueObserver {
  depth?(depth: number): void;
  /** Time from the first add of a key until a worker picked it up. */
  latency?(ms: number): void;
  processed?(key: string, outcome: 'success' | 'requeue' | 'error' | 'terminal', durationMs: number): void;
  error?(key: string, err: unknown, retryInMs: number | undefined): void;
}

/** Options of {@link WorkQueue}. */
export interface WorkQueueOptions {
  readonly concurrency: number;
  readonly baseBackoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly clock?: Clock;
  readonly observer?: QueueObserver;
  /** Random source for jitter in [0, 1). */
  readonly random?: () => number;
  /**
   * The lane of a key, read each time the key is queued; each lane runs up to `concurrency` keys at
   * once. Without it, every key shares one lane.
   */
  readonly lane?: (key: string) => string;
}

/** The keyed work queue. */
export class WorkQueue {
  readonly #handler: (key: string) => Promise<ReconcileResult>;
  #concurrency: number;
  readonly #lane: ((key: string) => string) | undefined;
  /** One p-queue per lane; a lane is dropped when it runs dry, so only lanes with work are held. */
  readonly #lanes = new Map<string, PQueue>();
  readonly #queued = new Map<string, number>();
  readonly #running = new Set<string>();
  readonly #dirty = new Set<string>();
  readonly #failures = new Map<string, number>();
  /** When each key's delayed add is due (ms on the queue's clock). */
  readonly #due = new Map<string, number>();
  /**
   * The delayed adds as a min-heap by due time, behind one clock timer for the earliest of them:
   * ten thousand ServiceInstances waiting for their resync cost one timer, not ten thousand. An
   * item whose key is no longer due at that time (added since, or moved earlier) is skipped.
   */
  readonly #heap: { readonly key: string; readonly at: number }[] = [];
  #timer: { readonly handle: unknown; readonly at: number } | undefined;
  readonly #clock: Clock;
  readonly #observer: QueueObserver;
  readonly #base: number;
  readonly #max: number;
  readonly #random: () => number;
  #shutDown = false;

  constructor(handler: (key: string) => Promise<ReconcileResult>, options: WorkQueueOptions) {
    this.#handler = handler;
    this.#concurrency = Math.max(1, options.concurrency);
    this.#lane = options.lane;
    this.#clock = options.clock ?? systemClock;
    this.#observer = options.observer ?? {};
    this.#base = options.baseBackoffMs ?? 200;
    this.#max = options.maxBackoffMs ?? 60_000;
    this.#random = options.random ?? Math.random;
  }

  /** Keys each lane runs at once. */
  get concurrency(): number {
    return this.#concurrency;
  }

  /** Changes how many keys each lane runs at once; keys already running finish either way. */
  set concurrency(n: number) {
    this.#concurrency = Math.max(1, n);
    for (const pq of this.#lanes.values()) pq.concurrency = this.#concurrency;
  }

  /** Keys waiting or running. */
  get depth(): number {
    return this.#queued.size + this.#running.size;
  }

  /** Whether the key is waiting, running or due later (a delayed add or a retry is pending). */
  has(key: string): boolean {
    return this.#queued.has(key) || this.#running.has(key) || this.#due.has(key);
  }

  /** Adds a key now. Idempotent while the key waits; marks it dirty while it runs. */
  add(key: string): void {
    if (this.#shutDown) return;
    this.#due.delete(key);
    if (this.#running.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#queued.has(key)) return;
    this.#queued.set(key, this.#clock.now());
    this.#observer.depth?.(this.depth);
    void this.#laneOf(key).add(() => this.#process(key));
  }

  #laneOf(key: string): PQueue {
    const name = this.#lane?.(key) ?? '';
    let pq = this.#lanes.get(name);
    if (!pq) {
      const created = new PQueue({ concurrency: this.#concurrency });
      created.addEventListener('idle', () => {
        if (this.#lanes.get(name) === created && created.size === 0 && created.pending === 0) this.#lanes.delete(name);
      });
      this.#lanes.set(name, created);
      pq = created;
    }
    return pq;
  }

  /** Adds a key after a delay; an earlier pending add wins. */
  addAfter(key: string, ms: number): void {
    if (this.#shutDown) return;
    if (ms <= 0) return this.add(key);
    const at = this.#clock.now() + ms;
    const existing = this.#due.get(key);
    if (existing !== undefined && existing <= at) return;
    this.#due.set(key, at);
    this.#push({ key, at });
    // Items left behind by adds and earlier moves go with the next rebuild.
    if (this.#heap.length > 2 * this.#due.size + 1024) this.#rebuild();
    this.#arm();
  }

  /** The earliest item still due, after dropping the stale ones on top. */
  #top(): { readonly key: string; readonly at: number } | undefined {
    for (let top = this.#heap[0]; top !== undefined; top = this.#heap[0]) {
      if (this.#due.get(top.key) === top.at) return top;
      this.#pop();
    }
    return undefined;
  }

  /** Sets the one timer for the earliest due add, unless it is set for that already. */
  #arm(): void {
    const top = this.#top();
    if (this.#timer && top && this.#timer.at <= top.at) return;
    if (this.#timer) this.#clock.clearTimeout(this.#timer.handle);
    this.#timer = undefined;
    if (!top) return;
    const handle = this.#clock.setTimeout(() => this.#fire(), Math.max(0, top.at - this.#clock.now()));
    this.#timer = { handle, at: top.at };
  }

  /** Adds every key that is due, then sets the timer for the next. */
  #fire(): void {
    this.#timer = undefined;
    const now = this.#clock.now();
    for (let top = this.#top(); top !== undefined && top.at <= now; top = this.#top()) {
      this.#pop();
      this.add(top.key);
    }
    this.#arm();
  }

  #push(item: { readonly key: string; readonly at: number }): void {
    const h = this.#heap;
    h.push(item);
    for (let i = h.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if ((h[parent] as typeof item).at <= item.at) break;
      h[i] = h[parent] as typeof item;
      h[parent] = item;
      i = parent;
    }
  }

  #pop(): void {
    const h = this.#heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    h[0] = last;
    for (let i = 0; ;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < h.length && (h[l] as typeof last).at < (h[min] as typeof last).at) min = l;
      if (r < h.length && (h[r] as typeof last).at < (h[min] as typeof last).at) min = r;
      if (min === i) break;
      [h[i], h[min]] = [h[min] as typeof last, h[i] as typeof last];
      i = min;
    }
  }

  #rebuild(): void {
    this.#heap.length = 0;
    for (const [key, at] of this.#due) this.#push({ key, at });
  }

  /** Forgets a key's failure history (its next failure starts from the base delay). */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** Backoff for the n-th consecutive failure: base·2ⁿ capped, with ±20 % jitter. */
  backoffMs(failures: number): number {
    const raw = Math.min(this.#max, this.#base * 2 ** Math.max(0, failures - 1));
    return Math.round(raw * (0.8 + 0.4 * this.#random()));
  }

  async #process(key: string): Promise<void> {
    const enqueuedAt = this.#queued.get(key) ?? this.#clock.now();
    this.#queued.delete(key);
    if (this.#shutDown) return;
    this.#running.add(key);
    const started = this.#clock.now();
    this.#observer.latency?.(started - enqueuedAt);
    let retryIn: number | undefined;
    try {
      const result = await this.#handler(key);
      this.#failures.delete(key);
      if (result?.requeueAfterMs !== undefined) retryIn = result.requeueAfterMs;
      this.#observer.processed?.(key, retryIn === undefined ? 'success' : 'requeue', this.#clock.now() - started);
    } catch (err: unknown) {
      if (err instanceof TerminalError) {
        this.#failures.delete(key);
        this.#observer.processed?.(key, 'terminal', this.#clock.now() - started);
        this.#observer.error?.(key, err, undefined);
      } else {
        const n = (this.#failures.get(key) ?? 0) + 1;
        this.#failures.set(key, n);
        retryIn = this.backoffMs(n);
        this.#observer.processed?.(key, 'error', this.#clock.now() - started);
        this.#observer.error?.(key, err, retryIn);
      }
    } finally {
      this.#running.delete(key);
    }
    if (this.#dirty.delete(key)) this.add(key);
    else if (retryIn !== undefined) this.addAfter(key, retryIn);
    this.#observer.depth?.(this.depth);
  }

  /** Resolves when nothing is queued or running (pending delayed adds do not count). */
  async idle(): Promise<void> {
    // A key finishing in one lane may queue another in a new lane: wait until no lane has work.
    for (;;) {
      const busy = [...this.#lanes.values()].filter((pq) => pq.size > 0 || pq.pending > 0);
      if (busy.length === 0) return;
      await Promise.all(busy.map((pq) => pq.onIdle()));
    }
  }

  /** Stops accepting work, cancels delayed adds and waits for running handlers to finish. */
  async shutdown(): Promise<void> {
    this.#shutDown = true;
    if (this.#timer) this.#clock.clearTimeout(this.#timer.handle);
    this.#timer = undefined;
    this.#due.clear();
    this.#heap.length = 0;
    for (const pq of this.#lanes.values()) pq.clear();
    this.#queued.clear();
    await this.idle();
  }
}

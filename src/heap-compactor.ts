/**
 * Gives back the heap an operator grew and no longer uses, while it is idle.
 *
 * V8 collects old garbage only when its old generation reaches a limit (with the image's settings,
 * a quarter above what survived the last full collection), and even then keeps the pages its
 * sweeper left partly used: after the initial sync and after bursts of work (status writes
 * echoed by the watch, events recorded, resyncs) the process kept 20–40 MB more heap reserved than
 * it used, for good. This checks the reserved heap now and then and, when nothing is queued and it
 * grew by more than a set share since the last compaction or reserves much more than it uses,
 * compacts it (runtime-settings.ts's
 * compactHeap: a full collection that moves objects together and returns the freed pages). A
 * compaction stops the process for about 0.1 s per 100 MB of live heap, so it is done while idle,
 * and while busy at most every 15 s.
 */
import { compactHeap } from './runtime-settings.ts';

/** What a compaction is judged and reported by, in bytes (as process.memoryUsage() gives them). */
export interface HeapFigures {
  /** The V8 heap reserved. */
  readonly heapTotal: number;
  /** The V8 heap in use. */
  readonly heapUsed: number;
  /** The resident set of the process. */
  readonly rss: number;
}

/** Options of {@link HeapCompactor}. */
export interface HeapCompactorOptions {
  /** How often the reserved heap is checked, in milliseconds. */
  readonly intervalMs: number;
  /** Compact when the reserved heap grew by more than this share since the last compaction (0.1 = 10 %). */
  readonly growth: number;
  /**
   * While idle, also compact when the heap reserves more than this many bytes (or `growth` of
   * what is in use, if more) beyond what is in use, or uses that much more than the last
   * compaction left: a burst that ended below the growth mark (finalizers written behind
   * statuses, a resync) otherwise leaves its pages and its old garbage until the next one.
   */
  readonly slackBytes?: number;
  /** True while there is work in hand: a compaction then waits until `busyIntervalMs` passed since the last. */
  readonly busy: () => boolean;
  /**
   * The least time between compactions while busy, in milliseconds. A long stretch of work (a
   * resync of every object comes due within a minute or two) must not leave the heap growing
   * unchecked; its pauses are spread out instead.
   */
  readonly busyIntervalMs: number;
  /** Milliseconds since some fixed point; defaults to performance.now(). */
  readonly now?: () => number;
  /** The memory figures now; defaults to process.memoryUsage(). */
  readonly memory?: () => HeapFigures;
  /** Compacts; false when it cannot (no `--expose-gc`). Defaults to {@link compactHeap}. */
  readonly compact?: () => boolean;
  /** Told of every compaction, with the figures before and after. */
  readonly onCompacted?: (before: HeapFigures, after: HeapFigures) => void;
}

/** Defaults: a check every 5 s, a compaction after 10 % of growth (or 8 MB to give back while idle), at most one every 15 s while busy. */
export const HEAP_COMPACTION_DEFAULTS = { intervalMs: 5_000, growth: 0.1, busyIntervalMs: 15_000, slackBytes: 8_000_000 } as const;

/** Compacts the heap when it grew while idle; see the module comment. */
export class HeapCompactor {
  readonly #o: HeapCompactorOptions;
  readonly #memory: () => HeapFigures;
  readonly #compact: () => boolean;
  readonly #now: () => number;
  #baseline = 0;
  #lastAt = 0;
  /** What the last compaction left. */
  #left: HeapFigures | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: HeapCompactorOptions) {
    this.#o = options;
    this.#memory = options.memory ?? (() => process.memoryUsage());
    this.#compact = options.compact ?? compactHeap;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Compacts now (the end of a burst, e.g. the initial sync) and starts the checks; false, and no
   * checks, when compaction is not possible.
   */
  start(): boolean {
    if (!this.compactNow()) return false;
    this.#timer ??= setInterval(() => this.check(), this.#o.intervalMs);
    this.#timer.unref();
    return true;
  }

  /**
   * One check: compacts when the reserved heap grew past the share since the last compaction and
   * the operator is idle, or busy but the last compaction is `busyIntervalMs` ago; or, while idle,
   * when it holds more than `slackBytes` to give back (see #wasteful).
   */
  check(): void {
    const m = this.#memory();
    const grown = m.heapTotal > this.#baseline * (1 + this.#o.growth);
    if (!grown && !this.#wasteful(m)) return;
    const busy = this.#o.busy();
    if (busy && (!grown || this.#now() - this.#lastAt < this.#o.busyIntervalMs)) return;
    this.compactNow(busy);
  }

  /**
   * Whether the heap holds much that a compaction would give back: more than `slackBytes` (or
   * `growth` of the heap in use, if more) reserved but unused, or that much more in use than the
   * last compaction left (old garbage V8 has not collected: an operator that fell idle allocates
   * too little to make it). What a compaction left is never judged wasteful again.
   */
  #wasteful(m: HeapFigures): boolean {
    const slack = this.#o.slackBytes;
    if (slack === undefined || this.#left === undefined) return false;
    if (m.heapTotal === this.#left.heapTotal && m.heapUsed === this.#left.heapUsed) return false;
    const limit = Math.max(slack, this.#o.growth * m.heapUsed);
    return m.heapTotal - m.heapUsed > limit || m.heapUsed - this.#left.heapUsed > limit;
  }

  /**
   * Compacts at once; false when compaction is not possible. What a compaction leaves becomes the
   * baseline growth is measured from, except that one made `busy` can only lower it: in the middle
   * of work it keeps the work's garbage-in-flight, and the idle heap after must be measured
   * against what an idle operator needs.
   */
  compactNow(busy = false): boolean {
    const before = this.#memory();
    if (!this.#compact()) return false;
    this.#lastAt = this.#now();
    const after = this.#memory();
    this.#left = after;
    this.#baseline = busy && this.#baseline > 0 ? Math.min(this.#baseline, after.heapTotal) : after.heapTotal;
    this.#o.onCompacted?.(before, after);
    return true;
  }

  /** Stops the checks. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

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
 * and while busy at most every 30 s.
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
   * what is in use, if more) beyond what is in use, and changed since the last compaction: a burst
   * that ended below the growth mark (finalizers written behind statuses, a resync) otherwise
   * leaves its pages reserved until the next one.
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

/** Defaults: a check every 10 s, a compaction after 10 % of growth (or 8 MB reserved unused while idle), at most one every 30 s while busy. */
export const HEAP_COMPACTION_DEFAULTS = { intervalMs: 10_000, growth: 0.1, busyIntervalMs: 30_000, slackBytes: 8_000_000 } as const;

/** Compacts the heap when it grew while idle; see the module comment. */
export class HeapCompactor {
  readonly #o: HeapCompactorOptions;
  readonly #memory: () => HeapFigures;
  readonly #compact: () => boolean;
  readonly #now: () => number;
  #baseline = 0;
  #lastAt = 0;
  /** The reserved heap the last compaction left. */
  #leftReserved = 0;
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
   * when more than `slackBytes` of it are reserved but unused.
   */
  check(): void {
    const m = this.#memory();
    const grown = m.heapTotal > this.#baseline * (1 + this.#o.growth);
    const slack = this.#o.slackBytes;
    const unused =
      slack !== undefined && m.heapTotal !== this.#leftReserved && m.heapTotal - m.heapUsed > Math.max(slack, this.#o.growth * m.heapUsed);
    if (!grown && !unused) return;
    const busy = this.#o.busy();
    if (busy && (!grown || this.#now() - this.#lastAt < this.#o.busyIntervalMs)) return;
    this.compactNow(busy);
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
    this.#leftReserved = after.heapTotal;
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

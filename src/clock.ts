/**
 * Time and timers, injected wherever timing is logic (work queue, leader election, informers,
 * lease keepalive, heartbeats, Secret re-reads, garbage collection), so tests control time.
 */

/** Now and one-shot timers. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Repeating timers. */
export interface IntervalTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/**
 * The real repeating timers, looked up at each call so that tests that mock the global timers
 * after building an object still control it.
 */
export const systemIntervals: IntervalTimers = {
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
};

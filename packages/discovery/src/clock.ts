/**
 * Time, injected so that tests decide when it passes. Selection needs only "now": ejections end
 * and latency estimates decay when a pick or a report reads the clock, so the selector owns no
 * timer and needs no shutdown.
 */

/** Milliseconds since an arbitrary origin, never going backwards. */
export interface Clock {
  now(): number;
}

/** The real clock: `performance.now()`, monotonic and sub-millisecond, unlike `Date.now()`. */
export const monotonicClock: Clock = { now: () => performance.now() };

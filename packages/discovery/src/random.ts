/**
 * Randomness, injected so that random, power-of-two-choices and round robin's starting point are
 * reproducible in tests and benchmarks.
 */

/** Uniformly distributed numbers in [0, 1), like `Math.random`. */
export type RandomSource = () => number;

/** The default source. */
export const mathRandom: RandomSource = () => Math.random();

/**
 * A small seeded generator (mulberry32): the same seed gives the same sequence, so a test or a
 * benchmark can use "random" picks and still be repeatable. Not for anything secret.
 */
export function seededRandom(seed: number): RandomSource {
  // In a typed array, the 32-bit state stays unboxed: a plain variable above 2^30 would become a
  // heap number on every call, and the generator would allocate.
  const cell = new Uint32Array([seed >>> 0]);
  return () => {
    const state = (cell[0] = (cell[0]! + 0x6d2b79f5) >>> 0);
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An index in [0, n) drawn from `random`; n must be at least 1. */
export function randomIndex(random: RandomSource, n: number): number {
  const i = Math.floor(random() * n);
  // A faulty source (1, or a negative number) must not index outside the list.
  if (i < 0) return 0;
  return i < n ? i : n - 1;
}

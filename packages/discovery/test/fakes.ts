/** Test doubles: a clock that moves only when told, and random sources with known output. */
import type { Clock } from '../src/clock.ts';
import type { Instance } from '../src/instance.ts';
import type { RandomSource } from '../src/random.ts';

/** A clock that only moves when the test advances it. */
export class FakeClock implements Clock {
  #now = 0;
  now(): number {
    return this.#now;
  }
  advance(ms: number): void {
    this.#now += ms;
  }
}

/** A random source that returns `values` in a loop. */
export function scriptedRandom(...values: number[]): RandomSource {
  let i = 0;
  return () => values[i++ % values.length]!;
}

/** An instance named by its id, on a made-up address. */
export function inst(id: string, extra: Partial<Instance> = {}): Instance {
  return { id, address: `10.0.0.${id.charCodeAt(0)}`, port: 8080, ...extra };
}

/** Ids of picked instances, for comparing with an expected sequence. */
export function ids(instances: readonly Instance[]): string {
  return instances.map((i) => i.id).join(' ');
}

/** `n` picks by `pick`, counted per id. */
export function tally(n: number, pick: () => Instance): Map<string, number> {
  const counts = new Map<string, number>();
  for (let k = 0; k < n; k++) {
    const id = pick().id!;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

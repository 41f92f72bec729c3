/** Random: a uniformly random candidate, ignoring weights. Stateless, so nothing to keep in step. */
import type { Member } from '../member.ts';
import { randomIndex, type RandomSource } from '../random.ts';
import type { Balancer } from './balancer.ts';

/** A uniformly random candidate. */
export class RandomBalancer implements Balancer {
  readonly #random: RandomSource;

  constructor(random: RandomSource) {
    this.#random = random;
  }

  pick(candidates: readonly Member[]): Member {
    return candidates[randomIndex(this.#random, candidates.length)]!;
  }
}

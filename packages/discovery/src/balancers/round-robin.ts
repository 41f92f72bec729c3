/**
 * Round robin: each candidate in turn, ignoring weights. The first position is random (as
 * grpc-js's round_robin starts at a random index), so many clients started together do not all
 * send their first call to the same instance.
 */
import type { Member } from '../member.ts';
import { randomIndex, type RandomSource } from '../random.ts';
import type { Balancer } from './balancer.ts';

/** Round robin over the candidates. */
export class RoundRobinBalancer implements Balancer {
  readonly #random: RandomSource;
  #next = -1;

  constructor(random: RandomSource) {
    this.#random = random;
  }

  pick(candidates: readonly Member[]): Member {
    const n = candidates.length;
    let i = this.#next;
    if (i < 0) i = randomIndex(this.#random, n);
    else if (i >= n) i = 0; // the list shrank
    this.#next = i + 1;
    return candidates[i]!;
  }
}

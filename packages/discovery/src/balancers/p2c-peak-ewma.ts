/**
 * Power of two choices over peak-EWMA cost (Finagle's and Linkerd's default balancer): draw two
 * distinct candidates at random and take the cheaper, cost being the latency estimate × (calls in
 * flight + 1) (see peak-ewma.ts). Two random draws avoid the herd behaviour of always taking the
 * global minimum, and need neither a scan nor a sort: O(1) per pick. Weights are not used.
 */
import type { Member } from '../member.ts';
import { randomIndex } from '../random.ts';
import type { Balancer, BalancerContext } from './balancer.ts';

/** Power of two choices over peak-EWMA latency × load. */
export class P2cPeakEwmaBalancer implements Balancer {
  readonly #context: BalancerContext;

  constructor(context: BalancerContext) {
    this.#context = context;
  }

  pick(candidates: readonly Member[]): Member {
    const n = candidates.length;
    if (n === 1) return candidates[0]!;
    const { random, clock } = this.#context;
    const i = randomIndex(random, n);
    let j = randomIndex(random, n - 1);
    if (j >= i) j++; // distinct from i, still uniform
    const a = candidates[i]!;
    const b = candidates[j]!;
    const now = clock.now();
    return b.latency.costAt(now, b.inFlight) < a.latency.costAt(now, a.inFlight) ? b : a;
  }
}

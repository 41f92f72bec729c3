/**
 * Least connections: the candidate with the fewest calls in flight relative to its weight
 * (inFlight / weight, compared by cross-multiplication as nginx's least_conn does). In-flight
 * counts come from `acquire`/`release`. Ties are common at low concurrency (everyone at zero), so
 * the scan starts one position further on each pick: ties go round robin instead of always to the
 * first instance.
 */
import type { Member } from '../member.ts';
import type { Balancer } from './balancer.ts';

/** Fewest calls in flight per unit of weight. */
export class LeastConnectionsBalancer implements Balancer {
  #start = 0;

  pick(candidates: readonly Member[]): Member {
    const n = candidates.length;
    let start = this.#start;
    if (start >= n) start = 0;
    this.#start = start + 1;
    let best = candidates[start]!;
    for (let k = 1; k < n; k++) {
      let i = start + k;
      if (i >= n) i -= n;
      const m = candidates[i]!;
      if (m.inFlight * best.weight < best.inFlight * m.weight) best = m;
    }
    return best;
  }
}

/**
 * Smooth weighted round robin, nginx's algorithm (ngx_http_upstream_get_peer): on every pick each
 * candidate's current weight grows by its weight, the largest current weight wins (the first one
 * on a tie), and the winner's current weight drops by the sum of the weights. Over one cycle each
 * instance gets exactly its weight's share, spread out rather than in bursts: weights 5/1/1 give
 * a a b a c a a. O(n) per pick, no allocation.
 *
 * The current weights live on the members, so they survive membership changes; selections with
 * different tag filters over the same instances share them, which keeps every share right but
 * interleaves their sequences.
 */
import type { Member } from '../member.ts';
import type { Balancer } from './balancer.ts';

/** Smooth weighted round robin (nginx). */
export class WeightedRoundRobinBalancer implements Balancer {
  pick(candidates: readonly Member[]): Member {
    let best = candidates[0]!;
    let total = 0;
    for (let i = 0; i < candidates.length; i++) {
      const m = candidates[i]!;
      m.currentWeight += m.weight;
      total += m.weight;
      if (m.currentWeight > best.currentWeight) best = m;
    }
    best.currentWeight -= total;
    return best;
  }
}

/**
 * The balancer interface: given the candidates of one selection (already filtered by tags and
 * ejection, never empty, every weight above 0), choose one. Each strategy is one small class
 * behind this interface (as grpc-js does with its pickers); per-instance state lives on the
 * members, per-list state (a round-robin cursor) in the balancer, and the selector keeps one
 * balancer per tag filter. Balancers are deterministic given their random source and clock.
 */
import type { Clock } from '../clock.ts';
import type { Member } from '../member.ts';
import type { RandomSource } from '../random.ts';

/** The selection strategies, by name. */
export const STRATEGIES = ['round-robin', 'random', 'weighted-round-robin', 'least-connections', 'p2c-peak-ewma'] as const;

/** A selection strategy. */
export type Strategy = (typeof STRATEGIES)[number];

/** Chooses one of a non-empty list of candidates. */
export interface Balancer {
  pick(candidates: readonly Member[]): Member;
}

/** What balancers may use besides the candidates. */
export interface BalancerContext {
  readonly random: RandomSource;
  readonly clock: Clock;
}

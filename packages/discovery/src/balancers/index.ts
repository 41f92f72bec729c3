/** The strategy registry: a strategy name to a fresh balancer. */
import { DiscoveryConfigError } from '../errors.ts';
import { STRATEGIES, type Balancer, type BalancerContext, type Strategy } from './balancer.ts';
import { LeastConnectionsBalancer } from './least-connections.ts';
import { P2cPeakEwmaBalancer } from './p2c-peak-ewma.ts';
import { RandomBalancer } from './random.ts';
import { RoundRobinBalancer } from './round-robin.ts';
import { WeightedRoundRobinBalancer } from './weighted-round-robin.ts';

export { STRATEGIES, type Balancer, type BalancerContext, type Strategy } from './balancer.ts';

/** A new balancer for `strategy`. */
export function createBalancer(strategy: Strategy, context: BalancerContext): Balancer {
  switch (strategy) {
    case 'round-robin':
      return new RoundRobinBalancer(context.random);
    case 'random':
      return new RandomBalancer(context.random);
    case 'weighted-round-robin':
      return new WeightedRoundRobinBalancer();
    case 'least-connections':
      return new LeastConnectionsBalancer();
    case 'p2c-peak-ewma':
      return new P2cPeakEwmaBalancer(context);
  }
}

/** `strategy` if it names a strategy; otherwise an error listing those that exist. */
export function checkStrategy(strategy: string): Strategy {
  if ((STRATEGIES as readonly string[]).includes(strategy)) return strategy as Strategy;
  throw new DiscoveryConfigError(`unknown selection strategy "${strategy}": use one of ${STRATEGIES.join(', ')}`);
}

/**
 * A circuit breaker per instance of one service, for `call()`: cockatiel's `CircuitBreakerPolicy`
 * with a `ConsecutiveBreaker`, one per instance id.
 *
 * How it sits next to the selector's outlier ejection, which also reacts to failures:
 * - the breaker is the fast, short-term reflex of `call()`: it opens after fewer failures in a
 *   row (default 3, against ejection's 5), stays open briefly (default 5 s, against 30 s and
 *   more), then lets one trial call through (half-open) and closes on its success. It has no cap
 *   on how many instances it keeps out, and only `call()` traffic goes through it;
 * - ejection is the longer-term judgement, shared by every user of the selector (`pick()` +
 *   `record()`, `call()`, the gRPC resolver), capped at a share of the instances, with ejection
 *   times that grow for repeat offenders.
 * Both see the same failures. An instance that is briefly unwell trips its breaker and comes back
 * after one good trial; one that keeps failing its trials reaches the ejection threshold and is
 * ejected. Selection leaves out instances whose breaker is open while others are left; when every
 * candidate's breaker is open, `call()` tries one of them anyway, bypassing its breaker (as panic
 * mode does for ejection): failing every call without trying is worse than calling a doubtful
 * instance.
 *
 * Cockatiel times the open state with `Date.now()`, so breakers run on the wall clock, not on the
 * client's injected clock.
 */
import { CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen, type CircuitBreakerPolicy } from 'cockatiel';
import { DiscoveryConfigError } from '../errors.ts';
import { instanceId, type Instance } from '../instance.ts';

/** Options of the per-instance circuit breakers. */
export interface BreakerOptions {
  /** Failures in a row that open an instance's breaker. Default 3 (ejection takes 5). */
  readonly consecutiveFailures?: number;
  /** How long a breaker stays open before it lets one trial call through, ms. Default 5 000. */
  readonly halfOpenAfterMs?: number;
}

/** Defaults of `BreakerOptions`. */
export const DEFAULT_BREAKER: Required<BreakerOptions> = { consecutiveFailures: 3, halfOpenAfterMs: 5_000 };

/** The states a breaker reports. */
export type BreakerState = 'open' | 'half-open' | 'closed';

/** Told when a breaker changes state. */
export type BreakerListener = (instance: Instance, state: BreakerState) => void;

/** Wraps an error the breaker counts; anything else passes through it as neither success nor failure. Never escapes. */
class CountedFailure extends Error {
  readonly error: unknown;
  constructor(error: unknown) {
    super('counted by the breaker');
    this.error = error;
  }
}

interface Entry {
  instance: Instance;
  readonly policy: CircuitBreakerPolicy;
  state: CircuitState;
  /** `Date.now()` when it last opened. */
  openedAt: number;
}

/** The breakers of one service's instances. */
export class InstanceBreakers {
  readonly #options: Required<BreakerOptions>;
  readonly #listener: BreakerListener;
  readonly #byId = new Map<string, Entry>();
  /** Breakers not closed: while 0, selection needs no breaker check. */
  #notClosed = 0;

  constructor(options: BreakerOptions, listener: BreakerListener) {
    this.#options = resolveBreakerOptions(options);
    this.#listener = listener;
  }

  /** True when some breaker is open or half-open. */
  get anyOpen(): boolean {
    return this.#notClosed > 0;
  }

  /**
   * Whether a call may go to `instance` through its breaker now: closed, or open long enough
   * that the next call is its trial. Half-open means a trial is already under way: no.
   */
  admits(instance: Instance): boolean {
    const entry = this.#byId.get(instanceId(instance));
    if (entry === undefined || entry.state === CircuitState.Closed) return true;
    return entry.state === CircuitState.Open && Date.now() - entry.openedAt >= this.#options.halfOpenAfterMs;
  }

  /**
   * Runs one attempt on `instance`. Through its breaker when it admits calls, with failures (as
   * `counts` says) counted; directly, uncounted, when it does not (every candidate was open). Call
   * it in the same synchronous step as the pick, so no other call changes the breaker in between.
   */
  async run<T>(instance: Instance, attempt: () => Promise<T>, counts: (error: unknown) => boolean): Promise<T> {
    if (!this.admits(instance)) return attempt();
    const entry = this.#entryOf(instance);
    try {
      return await entry.policy.execute(async () => {
        try {
          return await attempt();
        } catch (error) {
          throw counts(error) ? new CountedFailure(error) : error;
        }
      });
    } catch (error) {
      throw error instanceof CountedFailure ? error.error : error;
    }
  }

  /** Forgets the breakers of instances that left the service. */
  retain(ids: ReadonlySet<string>): void {
    for (const [id, entry] of this.#byId) {
      if (ids.has(id)) continue;
      if (entry.state !== CircuitState.Closed) this.#notClosed--;
      this.#byId.delete(id);
    }
  }

  /** State of each breaker that is not closed, by instance id (for tests and inspection). */
  states(): Map<string, BreakerState> {
    const out = new Map<string, BreakerState>();
    for (const [id, entry] of this.#byId) if (entry.state !== CircuitState.Closed) out.set(id, stateName(entry.state));
    return out;
  }

  #entryOf(instance: Instance): Entry {
    const id = instanceId(instance);
    const entry = this.#byId.get(id);
    if (entry !== undefined) {
      entry.instance = instance;
      return entry;
    }
    const policy = circuitBreaker(
      handleWhen((error) => error instanceof CountedFailure),
      { halfOpenAfter: this.#options.halfOpenAfterMs, breaker: new ConsecutiveBreaker(this.#options.consecutiveFailures) },
    );
    const created: Entry = { instance, policy, state: CircuitState.Closed, openedAt: 0 };
    policy.onStateChange((state) => {
      if (this.#byId.get(id) !== created) return; // forgotten meanwhile
      if (created.state === CircuitState.Closed && state !== CircuitState.Closed) this.#notClosed++;
      else if (created.state !== CircuitState.Closed && state === CircuitState.Closed) this.#notClosed--;
      created.state = state;
      if (state === CircuitState.Open) created.openedAt = Date.now();
      this.#listener(created.instance, stateName(state));
    });
    this.#byId.set(id, created);
    return created;
  }
}

function stateName(state: CircuitState): BreakerState {
  if (state === CircuitState.Closed) return 'closed';
  return state === CircuitState.HalfOpen ? 'half-open' : 'open';
}

/** Options with defaults filled in, checked. */
export function resolveBreakerOptions(options: BreakerOptions): Required<BreakerOptions> {
  const consecutiveFailures = options.consecutiveFailures ?? DEFAULT_BREAKER.consecutiveFailures;
  const halfOpenAfterMs = options.halfOpenAfterMs ?? DEFAULT_BREAKER.halfOpenAfterMs;
  if (!Number.isInteger(consecutiveFailures) || consecutiveFailures < 1) {
    throw new DiscoveryConfigError(`call.breaker.consecutiveFailures is ${consecutiveFailures}: it must be an integer of at least 1`);
  }
  if (!(halfOpenAfterMs >= 0 && Number.isFinite(halfOpenAfterMs))) {
    throw new DiscoveryConfigError(`call.breaker.halfOpenAfterMs is ${halfOpenAfterMs}: it must be a number of ms from 0 up`);
  }
  return { consecutiveFailures, halfOpenAfterMs };
}

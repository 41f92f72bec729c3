/**
 * Peak-EWMA latency estimate of one instance: the load metric that power-of-two-choices compares,
 * kept apart from the distributor as Finagle does (Balancers.scala, PeakEwma.scala), so P2C could
 * work over another cost later.
 *
 * The rules, after Finagle's PeakEwma and Tower's/Linkerd's `PeakEwma` (decay time 10 s in both):
 * - an observed latency above the current estimate replaces it at once (peak-sensitive: a slow
 *   instance is avoided from its first slow answer);
 * - between observations the estimate decays toward zero with time constant τ = decay time
 *   (Finagle does `observe(0)` on every read, Tower `update_estimate()`): an instance nobody has
 *   heard from for a while looks cheaper again, so it gets probed and can win its traffic back;
 * - an observation below the decayed estimate pulls it toward the observation with weight
 *   1 − e^(−Δt/τ), Δt being the time since the previous observation (the EWMA of an unevenly
 *   spaced series): recovery is cautious, one good answer does not erase a bad minute.
 * Reads are pure (the decay is computed, not stored), so the estimate does not depend on how
 * often balancers look at it.
 */
import { DiscoveryConfigError } from './errors.ts';

/** Options of the latency estimate. */
export interface PeakEwmaOptions {
  /** Time constant τ of the decay, ms. Default 10 000 (Finagle, Linkerd). */
  readonly decayMs?: number;
  /**
   * Estimate of an instance that has not answered yet, ms; it decays from when the instance
   * joined. Default 0 (Finagle): a new instance is tried at once, but see `UNPROBED_PENALTY` for
   * why it is not flooded. Linkerd uses 30 ms, which makes new instances wait until the others'
   * estimates are worse or ~τ·ln(30 ms / their latency) has passed.
   */
  readonly defaultLatencyMs?: number;
}

/** Defaults of `PeakEwmaOptions`. */
export const DEFAULT_PEAK_EWMA: Required<PeakEwmaOptions> = { decayMs: 10_000, defaultLatencyMs: 0 };

/** Options with defaults filled in, checked. */
export function resolvePeakEwmaOptions(options: PeakEwmaOptions = {}): Required<PeakEwmaOptions> {
  const decayMs = options.decayMs ?? DEFAULT_PEAK_EWMA.decayMs;
  const defaultLatencyMs = options.defaultLatencyMs ?? DEFAULT_PEAK_EWMA.defaultLatencyMs;
  if (!(decayMs > 0 && Number.isFinite(decayMs))) {
    throw new DiscoveryConfigError(
      `latency.decayMs is ${decayMs}: it must be a positive number of milliseconds (default ${DEFAULT_PEAK_EWMA.decayMs})`,
    );
  }
  if (!(defaultLatencyMs >= 0 && Number.isFinite(defaultLatencyMs))) {
    throw new DiscoveryConfigError(
      `latency.defaultLatencyMs is ${defaultLatencyMs}: it must be a number of milliseconds, 0 or more (default ${DEFAULT_PEAK_EWMA.defaultLatencyMs})`,
    );
  }
  return { decayMs, defaultLatencyMs };
}

/**
 * Cost of an instance that has a call in flight but has never answered: larger than any real
 * cost, so a new instance gets one call at a time until its first answer tells us what it is
 * worth (Finagle's `Penalty`). Without it, an instance with no history would look free and take
 * every call until the first one returned.
 */
export const UNPROBED_PENALTY = 1e12;

/** Positions in `PeakEwma`'s state array. */
const ESTIMATE = 0;
const STAMP = 1;

/** The estimate of one instance. Times are the selector clock's milliseconds. */
export class PeakEwma {
  readonly #tau: number;
  /**
   * [estimate, stamp]: in a typed array, so that recording a latency stores two doubles in place.
   * As object fields, each fresh double (every real clock reading is one) would be boxed into a
   * new heap number on every call.
   */
  readonly #state: Float64Array;
  #probed = false;

  constructor(decayMs: number, initialMs: number, now: number) {
    this.#tau = decayMs;
    this.#state = new Float64Array([initialMs, now]);
  }

  /** True once an answer has been observed. */
  get probed(): boolean {
    return this.#probed;
  }

  /** The estimated latency at `now`, ms. */
  estimateAt(now: number): number {
    const state = this.#state;
    const elapsed = now - state[STAMP]!;
    return elapsed > 0 ? state[ESTIMATE]! * Math.exp(-elapsed / this.#tau) : state[ESTIMATE]!;
  }

  /** Takes in one observed latency (ms) at `now`. */
  observe(latencyMs: number, now: number): void {
    if (!(latencyMs >= 0)) return; // NaN or negative: a caller's clock bug, not a measurement
    const state = this.#state;
    const elapsed = now - state[STAMP]!;
    const w = elapsed > 0 ? Math.exp(-elapsed / this.#tau) : 1;
    const decayed = state[ESTIMATE]! * w;
    state[ESTIMATE] = latencyMs > decayed ? latencyMs : decayed * w + latencyMs * (1 - w);
    if (elapsed > 0) state[STAMP] = now;
    this.#probed = true;
  }

  /** Cost for power-of-two-choices: estimate × (calls in flight + 1), or the unprobed penalty. */
  costAt(now: number, inFlight: number): number {
    if (!this.#probed && inFlight > 0) return UNPROBED_PENALTY + inFlight;
    return this.estimateAt(now) * (inFlight + 1);
  }
}

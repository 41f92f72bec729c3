/**
 * A retry budget, after Finagle's `RetryBudget` (com.twitter.finagle.service.RetryBudget): every
 * call deposits a fraction of a retry, every retry withdraws a whole one, and what is in the
 * budget expires after a window. So retries stay below a share of the traffic (default 20 %)
 * however many calls fail at once: a service in trouble gets its normal load plus a fifth, not
 * three times its load from callers that all retry twice. A reserve (default 10 retries per
 * second over the window) lets a quiet client, or one that has just started, still retry.
 *
 * Finagle's arithmetic is kept: a deposit is 1000 units, a withdrawal 1000 / ratio, the reserve is
 * `minRetriesPerSecond × window seconds` withdrawals, and deposits and withdrawals are summed over
 * a sliding window of 10 slices, so both expire once they are a window old. Cockatiel has no
 * budget of this kind (its retry policy only counts attempts per call), hence this module.
 */
import type { Clock } from '../clock.ts';
import { DiscoveryConfigError } from '../errors.ts';

/** Options of a retry budget. */
export interface RetryBudgetOptions {
  /** How long deposits and withdrawals count, ms. Default 10 000 (Finagle `ttl`). */
  readonly windowMs?: number;
  /** Retries always allowed per second, whatever the traffic. Default 10 (Finagle `minRetriesPerSec`). */
  readonly minRetriesPerSecond?: number;
  /** Retries allowed per call, on top of the reserve: 0.2 allows one retry per 5 calls. Default 0.2 (Finagle `percentCanRetry`). */
  readonly retryRatio?: number;
}

/** Defaults of `RetryBudgetOptions` (Finagle's). */
export const DEFAULT_RETRY_BUDGET: Required<RetryBudgetOptions> = { windowMs: 10_000, minRetriesPerSecond: 10, retryRatio: 0.2 };

const SCALE = 1000;
const SLICES = 10;

/** The retry budget of one service, shared by every call to it from one client. */
export class RetryBudget {
  readonly #clock: Clock;
  readonly #deposit: number;
  readonly #withdrawal: number;
  readonly #reserve: number;
  readonly #sliceMs: number;
  readonly #slices = new Float64Array(SLICES);
  /** Number of the slice of time `#slices[#current % SLICES]` holds. */
  #current: number;

  constructor(options: RetryBudgetOptions = {}, clock: Clock) {
    const { windowMs, minRetriesPerSecond, retryRatio } = resolveRetryBudgetOptions(options);
    this.#clock = clock;
    // With no ratio, calls earn nothing and each retry costs 1 unit of the reserve (as in Finagle).
    this.#deposit = retryRatio === 0 ? 0 : SCALE;
    this.#withdrawal = retryRatio === 0 ? 1 : Math.floor(SCALE / retryRatio);
    this.#reserve = minRetriesPerSecond * (windowMs / 1000) * this.#withdrawal;
    this.#sliceMs = windowMs / SLICES;
    this.#current = this.#sliceOf(clock.now());
  }

  /** Records a call (not a retry): it earns `retryRatio` of a retry. */
  deposit(): void {
    this.#add(this.#deposit);
  }

  /** Takes one retry out of the budget; false (and nothing taken) when there is not a whole one left. */
  tryWithdraw(): boolean {
    if (this.#sum() + this.#reserve < this.#withdrawal) return false;
    this.#add(-this.#withdrawal);
    return true;
  }

  /** Whole retries left now. */
  get balance(): number {
    return Math.max(0, Math.floor((this.#sum() + this.#reserve) / this.#withdrawal));
  }

  #add(units: number): void {
    this.#advance();
    this.#slices[this.#current % SLICES]! += units;
  }

  #sum(): number {
    this.#advance();
    let sum = 0;
    for (const units of this.#slices) sum += units;
    return sum;
  }

  /** Empties the slices that have fallen out of the window since the last operation. */
  #advance(): void {
    const slice = this.#sliceOf(this.#clock.now());
    if (slice <= this.#current) return;
    const expired = Math.min(slice - this.#current, SLICES);
    for (let k = 1; k <= expired; k++) this.#slices[(this.#current + k) % SLICES] = 0;
    this.#current = slice;
  }

  #sliceOf(now: number): number {
    return Math.floor(now / this.#sliceMs);
  }
}

/** Options with defaults filled in, checked. */
export function resolveRetryBudgetOptions(options: RetryBudgetOptions): Required<RetryBudgetOptions> {
  const resolved = { ...DEFAULT_RETRY_BUDGET, ...definedOnly(options) };
  const problems: string[] = [];
  if (!(resolved.windowMs > 0 && Number.isFinite(resolved.windowMs)))
    problems.push(`windowMs is ${resolved.windowMs}: a positive number of ms`);
  if (!(resolved.minRetriesPerSecond >= 0 && Number.isFinite(resolved.minRetriesPerSecond))) {
    problems.push(`minRetriesPerSecond is ${resolved.minRetriesPerSecond}: a number from 0 up`);
  }
  if (!(resolved.retryRatio >= 0 && resolved.retryRatio <= 10))
    problems.push(`retryRatio is ${resolved.retryRatio}: a number from 0 to 10`);
  if (problems.length > 0) {
    throw new DiscoveryConfigError(
      `call.retryBudget: ${problems.join('; ')} (or leave it out for the default, or pass false for no budget)`,
    );
  }
  return resolved;
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Options of `call()`: per call, with defaults set once per client (`DiscoveryClientOptions.call`).
 */
import { NoInstanceError, DiscoveryConfigError } from '../errors.ts';
import type { TagFilter } from '../tags.ts';
import type { BreakerOptions } from './breakers.ts';
import type { RetryBudgetOptions } from './retry-budget.ts';

/** Delays between attempts: exponential with decorrelated jitter (cockatiel's `ExponentialBackoff`). */
export interface BackoffOptions {
  /** Scale of the first delay, ms (the first delay is drawn below it). Default 50. */
  readonly initialMs?: number;
  /** Longest delay, ms. Default 1 000. */
  readonly maxMs?: number;
}

/** What can be set per call, and as a client-wide default. */
export interface CallPolicy {
  /** Time each attempt may take, ms; then its signal is aborted and the attempt fails. Default 1 000. */
  readonly timeoutMs?: number;
  /** Attempts at most, the first included. Default 3 (2 retries). */
  readonly attempts?: number;
  readonly backoff?: BackoffOptions;
  /**
   * Whether an error says the instance is unwell: counts towards its breaker and ejection, and may
   * be retried. An error that is not a failure (a "not found" your `fn` throws, say) is thrown to
   * the caller as is, at once. Default: every error, timeouts included.
   */
  readonly isFailure?: (error: unknown) => boolean;
  /** Whether a failure may be retried on another instance. Default: yes. */
  readonly retryable?: (error: unknown) => boolean;
}

/** Options of one `call()`. */
export interface CallOptions extends CallPolicy {
  /** Only instances carrying these tags. Hold the object if you reuse it: it is the selector's fast path. */
  readonly tags?: TagFilter;
  /** Cancels the call: the attempt under way is aborted and nothing is retried. */
  readonly signal?: AbortSignal;
}

/** Client-wide `call()` settings: defaults of `CallPolicy`, and the per-service retry budget and per-instance breakers. */
export interface CallDefaults extends CallPolicy {
  /** The retry budget of each service (Finagle's defaults), or `false` for none (retries limited by `attempts` only). */
  readonly retryBudget?: RetryBudgetOptions | false;
  /** The circuit breaker of each instance, or `false` for none. */
  readonly breaker?: BreakerOptions | false;
}

/** A `CallPolicy` with every default filled in. */
export interface ResolvedPolicy {
  readonly timeoutMs: number;
  readonly attempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly isFailure: (error: unknown) => boolean;
  readonly retryable: (error: unknown) => boolean;
}

const everyError = (): boolean => true;

/** Defaults of `CallPolicy`. */
export const DEFAULT_CALL_POLICY: ResolvedPolicy = {
  timeoutMs: 1_000,
  attempts: 3,
  initialBackoffMs: 50,
  maxBackoffMs: 1_000,
  isFailure: everyError,
  retryable: everyError,
};

/** `options` over `defaults` over the built-in defaults, checked. */
export function resolvePolicy(options: CallPolicy, defaults: ResolvedPolicy): ResolvedPolicy {
  const retryable = options.retryable ?? defaults.retryable;
  const resolved: ResolvedPolicy = {
    timeoutMs: options.timeoutMs ?? defaults.timeoutMs,
    attempts: options.attempts ?? defaults.attempts,
    initialBackoffMs: options.backoff?.initialMs ?? defaults.initialBackoffMs,
    maxBackoffMs: options.backoff?.maxMs ?? defaults.maxBackoffMs,
    isFailure: options.isFailure ?? defaults.isFailure,
    // Nothing to call is not the instance's fault, and another attempt would find nothing either.
    retryable: (error) => !(error instanceof NoInstanceError) && retryable(error),
  };
  const problems: string[] = [];
  if (!(resolved.timeoutMs > 0 && resolved.timeoutMs <= 2 ** 31 - 1))
    problems.push(`timeoutMs is ${resolved.timeoutMs}: a positive number of ms`);
  if (!(Number.isInteger(resolved.attempts) && resolved.attempts >= 1))
    problems.push(`attempts is ${resolved.attempts}: an integer of at least 1`);
  if (!(resolved.initialBackoffMs >= 0 && Number.isFinite(resolved.initialBackoffMs))) {
    problems.push(`backoff.initialMs is ${resolved.initialBackoffMs}: a number of ms from 0 up`);
  }
  if (!(resolved.maxBackoffMs >= 0 && Number.isFinite(resolved.maxBackoffMs))) {
    problems.push(`backoff.maxMs is ${resolved.maxBackoffMs}: a number of ms from 0 up`);
  }
  if (problems.length > 0) throw new DiscoveryConfigError(`call options: ${problems.join('; ')}`);
  return resolved;
}

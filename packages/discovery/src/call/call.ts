/**
 * `call()`: runs a request against one instance of a service, and against others when it fails.
 *
 * Per call: pick an instance (`acquire`, so load-aware strategies see the call in flight) →
 * run `fn` under a timeout, through the instance's circuit breaker → `release` with the outcome
 * and latency (feeding latency estimates and outlier ejection) → on a failure, if attempts,
 * `retryable` and the service's retry budget all allow, wait (exponential backoff, decorrelated
 * jitter) and go again on an instance not tried yet.
 *
 * The timeout is cockatiel's, Aggressive: at the deadline the signal given to `fn` is aborted
 * and the attempt fails at once, even if `fn` ignores the signal (with the Cooperative strategy
 * such an `fn` would hold the call past its timeout; a late answer is dropped instead).
 */
import { ExponentialBackoff, TimeoutStrategy, decorrelatedJitterGenerator, timeout, type IBackoff } from 'cockatiel';
import type { Clock } from '../clock.ts';
import { NoInstanceError } from '../errors.ts';
import { instanceId, type Instance } from '../instance.ts';
import type { CallOutcome } from '../observability/hooks.ts';
import type { Observer } from '../observability/observer.ts';
import type { InstanceSelector } from '../selector.ts';
import type { TagFilter } from '../tags.ts';
import type { InstanceBreakers } from './breakers.ts';
import { CallFailedError, CallTimeoutError, type CallAttempt, type GiveUpReason } from './errors.ts';
import type { ResolvedPolicy } from './options.ts';
import type { RetryBudget } from './retry-budget.ts';

/** The request `call()` runs: against `instance`, giving up when `signal` aborts. */
export type CallFunction<T> = (instance: Instance, signal: AbortSignal) => Promise<T>;

/** What `call()` works with for one service; owned by the client. */
export interface ServiceCallContext {
  readonly service: string;
  readonly namespace: string;
  readonly selector: InstanceSelector;
  /** Undefined when the client has no retry budget. */
  readonly budget: RetryBudget | undefined;
  /** Undefined when the client has no breakers. */
  readonly breakers: InstanceBreakers | undefined;
  readonly clock: Clock;
  readonly observer: Observer;
}

/** One call, as the client asks for it. */
export interface CallRequest {
  readonly tags: TagFilter | undefined;
  readonly policy: ResolvedPolicy;
  /** The caller's signal combined with the client's close. */
  readonly signal: AbortSignal;
}

/** The result of one attempt. */
type AttemptResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** Runs `fn` against instances of the service until it succeeds or the call gives up. */
export async function runCall<T>(ctx: ServiceCallContext, fn: CallFunction<T>, request: CallRequest): Promise<T> {
  const { policy, signal } = request;
  const started = ctx.clock.now();
  let last: Instance | undefined;
  const end = (outcome: CallOutcome): void => ctx.observer.call(ctx.service, last, outcome, (ctx.clock.now() - started) / 1000);

  if (signal.aborted) {
    end('cancelled');
    throw signal.reason;
  }
  ctx.budget?.deposit();
  const attempts: CallAttempt[] = [];
  const tried = new Set<string>();
  let backoff: IBackoff<unknown> | undefined;
  for (;;) {
    let instance: Instance;
    try {
      instance = acquireFor(ctx, request.tags, tried);
    } catch (error) {
      if (!(error instanceof NoInstanceError) || attempts.length === 0) {
        end('no_instance');
        throw error;
      }
      // The instances went away between attempts: report what was tried.
      end('failed');
      throw giveUp(ctx, attempts, 'no-instance');
    }
    last = instance;
    tried.add(instanceId(instance));

    const result = await attempt(ctx, instance, fn, request);
    if (result.ok) {
      end('success');
      return result.value;
    }
    const { error } = result;
    if (signal.aborted) {
      end('cancelled');
      throw signal.reason;
    }
    if (!policy.isFailure(error)) {
      end('error');
      throw error;
    }
    attempts.push({ instance, error });
    const outcome: CallOutcome = error instanceof CallTimeoutError ? 'timeout' : 'failed';
    if (attempts.length >= policy.attempts) {
      end(outcome);
      throw giveUp(ctx, attempts, 'attempts');
    }
    if (!policy.retryable(error)) {
      end(outcome);
      throw giveUp(ctx, attempts, 'not-retryable');
    }
    if (ctx.budget !== undefined && !ctx.budget.tryWithdraw()) {
      ctx.observer.retryDenied(ctx.service, instance);
      end(outcome);
      throw giveUp(ctx, attempts, 'budget');
    }
    ctx.observer.retry(ctx.service, instance, attempts.length + 1);
    backoff = backoff === undefined ? backoffFactory(policy).next() : backoff.next(undefined);
    try {
      await sleep(backoff.duration, signal);
    } catch (reason) {
      end('cancelled');
      throw reason;
    }
  }
}

/**
 * One attempt on an instance already acquired: under the timeout, through its breaker, then
 * released with what the outcome says about the instance.
 */
async function attempt<T>(
  ctx: ServiceCallContext,
  instance: Instance,
  fn: CallFunction<T>,
  request: CallRequest,
): Promise<AttemptResult<T>> {
  const { policy, signal } = request;
  const started = ctx.clock.now();
  const timeoutPolicy = timeout(policy.timeoutMs, TimeoutStrategy.Aggressive);
  let timedOut = false;
  // Fires on any abort of the attempt's signal: the caller's too, told apart below.
  const listener = timeoutPolicy.onTimeout(() => (timedOut = true));
  const timed = async (): Promise<T> => {
    try {
      return await timeoutPolicy.execute((_context, attemptSignal) => fn(instance, attemptSignal), signal);
    } catch (error) {
      if (timedOut && !signal.aborted) throw new CallTimeoutError(ctx.service, instance, policy.timeoutMs, { cause: error });
      throw error;
    }
  };
  const counts = (error: unknown): boolean => !signal.aborted && policy.isFailure(error);
  try {
    const value = await (ctx.breakers === undefined ? timed() : ctx.breakers.run(instance, timed, counts));
    ctx.selector.release(instance, { ok: true, latencyMs: ctx.clock.now() - started });
    return { ok: true, value };
  } catch (error) {
    // A cancelled call says nothing about the instance; an error that is not a failure is an
    // answer from a working instance (as Envoy counts a 4xx), so it counts as a success.
    if (signal.aborted) ctx.selector.cancel(instance);
    else ctx.selector.release(instance, { ok: !policy.isFailure(error), latencyMs: ctx.clock.now() - started });
    return { ok: false, error };
  } finally {
    listener.dispose();
  }
}

/**
 * The instance for the next attempt, by preference: not tried yet and breaker admitting calls;
 * not tried yet (every untried one's breaker is open: try one anyway); breaker admitting calls;
 * any (every instance tried: go again). With nothing tried and no breaker open, that is a plain
 * `acquire`, the selector's fast path.
 */
function acquireFor(ctx: ServiceCallContext, tags: TagFilter | undefined, tried: ReadonlySet<string>): Instance {
  const { selector, breakers } = ctx;
  const anyOpen = breakers !== undefined && breakers.anyOpen;
  if (tried.size === 0 && !anyOpen) return selector.acquire(tags);
  const isTried = (i: Instance): boolean => tried.has(instanceId(i));
  const shut = (i: Instance): boolean => breakers !== undefined && !breakers.admits(i);
  const preferences: ((i: Instance) => boolean)[] = [];
  if (anyOpen) preferences.push((i) => isTried(i) || shut(i));
  if (tried.size > 0) preferences.push(isTried);
  if (anyOpen && tried.size > 0) preferences.push(shut);
  for (const avoid of preferences) {
    const instance = selector.acquireAvoiding(tags, avoid);
    if (instance !== undefined) return instance;
  }
  return selector.acquire(tags);
}

function backoffFactory(policy: ResolvedPolicy): ExponentialBackoff<[number, number]> {
  return new ExponentialBackoff({
    generator: decorrelatedJitterGenerator,
    initialDelay: policy.initialBackoffMs,
    maxDelay: policy.maxBackoffMs,
  });
}

function giveUp(ctx: ServiceCallContext, attempts: readonly CallAttempt[], reason: GiveUpReason): CallFailedError {
  return new CallFailedError({ service: ctx.service, namespace: ctx.namespace, attempts, reason });
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

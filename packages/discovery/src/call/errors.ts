/**
 * Errors of `call()`. A call that gives up after failed attempts throws a `CallFailedError` that
 * carries every attempt, so the caller sees which instances were tried and why each failed, and
 * the last error as its `cause`.
 */
import { DiscoveryError } from '../errors.ts';
import { instanceId, type Instance } from '../instance.ts';

/** One failed attempt of a call. */
export interface CallAttempt {
  readonly instance: Instance;
  readonly error: unknown;
}

/** Why a call stopped retrying. */
export type GiveUpReason = 'attempts' | 'not-retryable' | 'budget' | 'no-instance';

/** What a failed call knew when it gave up. */
export interface CallFailedDetails {
  readonly service: string;
  readonly namespace: string;
  readonly attempts: readonly CallAttempt[];
  readonly reason: GiveUpReason;
}

/**
 * Every attempt of a call failed, or the call stopped retrying (the error was not retryable, or
 * the service's retry budget was spent). `cause` is the last attempt's error.
 */
export class CallFailedError extends DiscoveryError {
  override name = 'CallFailedError';
  readonly service: string;
  readonly namespace: string;
  readonly attempts: readonly CallAttempt[];
  readonly reason: GiveUpReason;

  constructor(details: CallFailedDetails) {
    const last = details.attempts.at(-1);
    super(callFailedMessage(details), { cause: last?.error });
    this.service = details.service;
    this.namespace = details.namespace;
    this.attempts = details.attempts;
    this.reason = details.reason;
  }
}

function callFailedMessage(d: CallFailedDetails): string {
  const tried = d.attempts.map((a) => `${instanceId(a.instance)}: ${describe(a.error)}`).join('; ');
  const n = d.attempts.length;
  const head = `call to ${d.service} in namespace ${d.namespace} failed after ${n} attempt${n === 1 ? '' : 's'} (${tried})`;
  switch (d.reason) {
    case 'attempts':
      return `${head}: every attempt failed; see cause for the last error, and check the health of the instances`;
    case 'not-retryable':
      return `${head}: the error is not retryable (retryable option); see cause`;
    case 'no-instance':
      return `${head}: no instance was left to retry on (the service's instances went away meanwhile); see cause for the last error`;
    case 'budget':
      return (
        `${head}: not retried because the retry budget of ${d.service} is spent (many calls are failing at once, ` +
        'and retrying them all would only add load); see cause, and look at the service rather than raising the budget'
      );
  }
}

/**
 * An attempt took longer than its timeout; its signal was aborted. Counts as a failure of the
 * instance unless `isFailure` says otherwise.
 */
export class CallTimeoutError extends DiscoveryError {
  override name = 'CallTimeoutError';
  readonly instance: Instance;
  readonly timeoutMs: number;

  constructor(service: string, instance: Instance, timeoutMs: number, options?: ErrorOptions) {
    super(
      `attempt on ${instanceId(instance)} of ${service} timed out after ${timeoutMs} ms: raise timeoutMs if the service is ` +
        'slow by design, otherwise check the instance; the signal passed to the call was aborted',
      options,
    );
    this.instance = instance;
    this.timeoutMs = timeoutMs;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

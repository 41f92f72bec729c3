import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CallFailedError, CallTimeoutError } from '../src/call/errors.ts';
import type { BreakerState } from '../src/call/breakers.ts';
import { DiscoveryConfigError, NoInstanceError } from '../src/errors.ts';
import type { Instance } from '../src/instance.ts';
import type { CallOutcome } from '../src/observability/hooks.ts';
import { seededRandom } from '../src/random.ts';
import { inst } from './fakes.ts';
import { SERVICE, eventually, makeClient, untilAborted } from './call-support.ts';

/** A request that fails on the instances named, and answers its id on the others. */
function failingOn(calls: string[], ...failing: string[]) {
  return async (instance: Instance): Promise<string> => {
    calls.push(instance.id!);
    if (failing.includes(instance.id!)) throw new Error(`${instance.id} is down`);
    return instance.id!;
  };
}

class NotFound extends Error {
  override name = 'NotFound';
}

describe('call: success and retries', () => {
  test('returns what the request answers, from the first instance', async () => {
    const { client } = makeClient();
    const calls: string[] = [];
    assert.equal(await client.call(SERVICE, failingOn(calls)), 'a');
    assert.deepEqual(calls, ['a']);
    await client.close();
  });

  test('each retry lands on an instance not tried yet in this call', async () => {
    const { client } = makeClient({ outlier: false, call: { breaker: false } });
    for (let k = 0; k < 6; k++) {
      const calls: string[] = [];
      assert.ok(['a', 'b', 'c'].includes(await client.call(SERVICE, failingOn(calls, ...['a', 'b', 'c'].filter((_, i) => i !== k % 3)))));
      assert.equal(new Set(calls).size, calls.length, `attempts ${calls.join(' ')} repeat an instance`);
    }
    await client.close();
  });

  test('with every instance tried, a retry goes back to one of them rather than giving up early', async () => {
    const { client } = makeClient({ outlier: false, call: { breaker: false, attempts: 3 } }, [inst('a'), inst('b')]);
    const calls: string[] = [];
    await assert.rejects(client.call(SERVICE, failingOn(calls, 'a', 'b')), CallFailedError);
    assert.equal(calls.length, 3);
    assert.deepEqual(calls.slice(0, 2).sort(), ['a', 'b']);
    await client.close();
  });

  test('when every attempt fails: a CallFailedError with each attempt, the last error as cause, saying what to check', async () => {
    const { client } = makeClient({ outlier: false, call: { breaker: false } });
    const calls: string[] = [];
    const err = await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c')).catch((e: unknown) => e);
    assert.ok(err instanceof CallFailedError);
    assert.equal(err.reason, 'attempts');
    assert.deepEqual(
      err.attempts.map((a) => [a.instance.id, (a.error as Error).message]),
      calls.map((id) => [id, `${id} is down`]),
    );
    assert.equal((err.cause as Error).message, `${calls[2]} is down`);
    assert.match(err.message, /^call to user-service in namespace test failed after 3 attempts \(.*\): every attempt failed/);
    await client.close();
  });

  test('attempts: 1 means no retry; retryable() false stops retries too', async () => {
    const { client } = makeClient({ outlier: false, call: { breaker: false } });
    const calls: string[] = [];
    const one = await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c'), { attempts: 1 }).catch((e: unknown) => e);
    assert.ok(one instanceof CallFailedError && one.reason === 'attempts' && one.attempts.length === 1);
    const notRetryable = await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c'), { retryable: () => false }).catch((e: unknown) => e);
    assert.ok(notRetryable instanceof CallFailedError && notRetryable.reason === 'not-retryable' && notRetryable.attempts.length === 1);
    assert.equal(calls.length, 2);
    await client.close();
  });

  test('nothing to call: NoInstanceError as is, the request never runs', async () => {
    const { client } = makeClient({}, []);
    let ran = false;
    await assert.rejects(
      client.call(SERVICE, async () => {
        ran = true;
      }),
      NoInstanceError,
    );
    assert.equal(ran, false);
    await client.close();
  });

  test('tags choose the instances', async () => {
    const { client } = makeClient({}, [inst('a', { tags: { zone: 'x' } }), inst('b', { tags: { zone: 'y' } })]);
    const zone = { zone: 'y' };
    for (let k = 0; k < 3; k++) assert.equal(await client.call(SERVICE, failingOn([]), { tags: zone }), 'b');
    await client.close();
  });

  test('options out of range are refused when the client is made, or at the call', async () => {
    assert.throws(() => makeClient({ call: { attempts: 0 } }), /attempts is 0: an integer of at least 1/);
    assert.throws(() => makeClient({ call: { breaker: { consecutiveFailures: 0 } } }), DiscoveryConfigError);
    assert.throws(() => makeClient({ call: { retryBudget: { retryRatio: -1 } } }), DiscoveryConfigError);
    const { client } = makeClient();
    await assert.rejects(client.call(SERVICE, failingOn([]), { timeoutMs: -5 }), /timeoutMs is -5/);
    await client.close();
  });
});

describe('call: timeouts', () => {
  test('an attempt past its timeout has its signal aborted, fails with CallTimeoutError and counts as a failure', async () => {
    const { client, state } = makeClient({ outlier: { consecutiveFailures: 100 }, call: { breaker: false } });
    const signals: AbortSignal[] = [];
    const err = await client
      .call(SERVICE, (_instance, signal) => (signals.push(signal), untilAborted(signal)), { timeoutMs: 20, attempts: 1 })
      .catch((e: unknown) => e);
    assert.ok(err instanceof CallFailedError, String(err));
    assert.ok(err.cause instanceof CallTimeoutError);
    assert.equal(err.cause.timeoutMs, 20);
    assert.match(err.cause.message, /^attempt on a of user-service timed out after 20 ms: raise timeoutMs/);
    assert.equal(signals.length, 1);
    assert.equal(signals[0]!.aborted, true);
    assert.equal(state('a').consecutiveFailures, 1);
    await client.close();
  });

  test('a request that ignores its signal still ends at the timeout, and the call retries elsewhere', async () => {
    const { client } = makeClient({ call: { breaker: false } });
    const calls: string[] = [];
    const answer = await client.call(
      SERVICE,
      (instance) => {
        calls.push(instance.id!);
        return instance.id === 'a' ? new Promise<string>(() => {}) : Promise.resolve(instance.id!);
      },
      { timeoutMs: 20 },
    );
    assert.notEqual(answer, 'a');
    assert.deepEqual(calls, ['a', answer]);
    await client.close();
  });
});

describe('call: retry budget', () => {
  test('under a burst of failures, retries stop once the budget is spent, and the original error is the cause', async () => {
    const denied: string[] = [];
    const retried: string[] = [];
    const { client } = makeClient({
      outlier: false,
      call: { breaker: false, retryBudget: { minRetriesPerSecond: 0, retryRatio: 0.2 } },
      hooks: { onRetryDenied: (_s, i) => denied.push(i.id!), onRetry: (_s, i) => retried.push(i.id!) },
    });
    const calls: string[] = [];
    const errors: unknown[] = [];
    for (let k = 0; k < 10; k++) errors.push(await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c')).catch((e: unknown) => e));
    // 10 calls earn 2 retries at 20 %; without the budget they would have made 30 attempts.
    assert.equal(calls.length, 12);
    assert.equal(retried.length, 2);
    assert.equal(denied.length, 10);
    for (const err of errors) assert.ok(err instanceof CallFailedError && err.reason === 'budget');
    const first = errors[0] as CallFailedError;
    assert.equal(first.attempts.length, 1);
    assert.equal((first.cause as Error).message, 'a is down');
    assert.match(first.message, /not retried because the retry budget of user-service is spent/);
    await client.close();
  });

  test('the budget is per service and shared by every call to it', async () => {
    const { client, source } = makeClient({
      outlier: false,
      call: { breaker: false, retryBudget: { minRetriesPerSecond: 0, retryRatio: 0.5 } },
    });
    source.set('other', [inst('x'), inst('y')]);
    const calls: string[] = [];
    // Two calls to SERVICE earn one retry there; 'other' has earned nothing yet.
    await client.call(SERVICE, failingOn(calls), { attempts: 1 });
    await client.call(SERVICE, failingOn(calls), { attempts: 1 });
    const other = await client.call('other', failingOn(calls, 'x', 'y')).catch((e: unknown) => e);
    assert.ok(other instanceof CallFailedError && other.reason === 'budget' && other.attempts.length === 1);
    const here = await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c')).catch((e: unknown) => e);
    assert.ok(here instanceof CallFailedError && here.reason === 'budget' && here.attempts.length === 2, 'one retry, then spent');
    await client.close();
  });
});

describe('call: circuit breakers', () => {
  test('a breaker opens after n failures in a row, and its instance gets no calls while others are available', async () => {
    const events: [string, BreakerState][] = [];
    const { client } = makeClient({
      outlier: false,
      call: { attempts: 1, breaker: { consecutiveFailures: 2, halfOpenAfterMs: 600_000 } },
      hooks: { onBreaker: (_s, i, state) => events.push([i.id!, state]) },
    });
    const calls: string[] = [];
    for (let k = 0; k < 6; k++) await client.call(SERVICE, failingOn(calls, 'a')).catch(() => undefined);
    assert.deepEqual(events, [['a', 'open']]);
    const before = calls.length;
    for (let k = 0; k < 30; k++) assert.notEqual(await client.call(SERVICE, failingOn(calls, 'a')), 'a');
    assert.equal(calls.length, before + 30);
    assert.ok(!calls.slice(before).includes('a'));
    await client.close();
  });

  test('after the open time one trial call goes through (others wait), and its success closes the breaker', async () => {
    const events: [string, BreakerState][] = [];
    const { client } = makeClient({
      outlier: false,
      call: { attempts: 1, timeoutMs: 60_000, breaker: { consecutiveFailures: 1, halfOpenAfterMs: 50 } },
      hooks: { onBreaker: (_s, i, state) => events.push([i.id!, state]) },
    });
    const calls: string[] = [];
    await client.call(SERVICE, failingOn(calls, 'a')).catch(() => undefined);
    assert.deepEqual(events, [['a', 'open']]);

    // a has recovered but answers only when the test lets it: its trial call stays in flight.
    let letTrialAnswer!: () => void;
    const trialGate = new Promise<void>((resolve) => (letTrialAnswer = resolve));
    const slowA = async (instance: Instance): Promise<string> => {
      calls.push(instance.id!);
      if (instance.id === 'a') await trialGate;
      return instance.id!;
    };
    const pending: Promise<string>[] = [];
    const start = calls.length;
    await eventually(() => {
      if (calls.slice(start).includes('a')) return true;
      pending.push(client.call(SERVICE, slowA));
      return false;
    }, 'a call reaching a after its breaker has been open for 50 ms');
    assert.deepEqual(events.at(-1), ['a', 'half-open']);

    const duringTrial = calls.length;
    for (let k = 0; k < 20; k++) assert.notEqual(await client.call(SERVICE, slowA), 'a');
    assert.ok(!calls.slice(duringTrial).includes('a'), 'no second call while the trial is in flight');

    letTrialAnswer();
    await Promise.all(pending);
    assert.deepEqual(events.at(-1), ['a', 'closed']);
    const afterClose: string[] = [];
    for (let k = 0; k < 3; k++) afterClose.push(await client.call(SERVICE, slowA));
    assert.ok(afterClose.includes('a'), `a is back in rotation: ${afterClose.join(' ')}`);
    await client.close();
  });

  test('a failed trial opens the breaker again', async () => {
    const events: BreakerState[] = [];
    const { client } = makeClient({
      outlier: false,
      call: { attempts: 1, breaker: { consecutiveFailures: 1, halfOpenAfterMs: 30 } },
      hooks: { onBreaker: (_s, _i, state) => events.push(state) },
    });
    const calls: string[] = [];
    await client.call(SERVICE, failingOn(calls, 'a')).catch(() => undefined);
    const pending: Promise<unknown>[] = [];
    await eventually(() => {
      pending.push(client.call(SERVICE, failingOn(calls, 'a')).catch(() => undefined));
      return events.length >= 3;
    }, 'a trial call on a');
    await Promise.all(pending);
    assert.deepEqual(events.slice(0, 3), ['open', 'half-open', 'open']);
    await client.close();
  });

  test('when every breaker is open the call still tries an instance, as panic mode does', async () => {
    const { client } = makeClient({
      outlier: false,
      call: { attempts: 1, breaker: { consecutiveFailures: 1, halfOpenAfterMs: 600_000 } },
    });
    const calls: string[] = [];
    for (let k = 0; k < 3; k++) await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c')).catch(() => undefined);
    assert.deepEqual([...calls].sort(), ['a', 'b', 'c'], 'each breaker opened on its first failure');
    const err = await client.call(SERVICE, failingOn(calls, 'a', 'b', 'c')).catch((e: unknown) => e);
    assert.equal(calls.length, 4, 'the request ran although every breaker is open');
    assert.ok(err instanceof CallFailedError);
    // And an instance that works again answers, with its breaker still open.
    assert.ok(['a', 'b', 'c'].includes(await client.call(SERVICE, failingOn(calls))));
    await client.close();
  });

  test('retries prefer an untried instance even when its breaker is open over one that just failed', async () => {
    const { client } = makeClient(
      { outlier: false, call: { attempts: 2, breaker: { consecutiveFailures: 1, halfOpenAfterMs: 600_000 } } },
      [inst('a'), inst('b')],
    );
    const calls: string[] = [];
    await client.call(SERVICE, failingOn(calls, 'a'), { attempts: 1 }).catch(() => undefined); // a open
    const answer = await client.call(SERVICE, failingOn(calls, 'b'));
    assert.deepEqual(calls, ['a', 'b', 'a']);
    assert.equal(answer, 'a');
    await client.close();
  });
});

describe('call: what counts as a failure', () => {
  test('an error isFailure rejects is thrown as is: no retry, no ejection, no breaker', async () => {
    const breakerEvents: BreakerState[] = [];
    const { client, state } = makeClient(
      {
        outlier: { consecutiveFailures: 2 },
        call: { breaker: { consecutiveFailures: 1 }, isFailure: (e) => !(e instanceof NotFound) },
        hooks: { onBreaker: (_s, _i, s) => breakerEvents.push(s) },
      },
      [inst('a'), inst('b')],
    );
    let runs = 0;
    for (let k = 0; k < 10; k++) {
      await assert.rejects(
        client.call(SERVICE, async () => {
          runs++;
          throw new NotFound('no such user');
        }),
        NotFound,
      );
    }
    assert.equal(runs, 10);
    for (const id of ['a', 'b']) {
      assert.equal(state(id).consecutiveFailures, 0);
      assert.equal(state(id).ejected, false);
    }
    assert.deepEqual(breakerEvents, []);
    await client.close();
  });
});

describe('call: cancellation', () => {
  test("the caller's signal aborts the attempt under way; the call rejects with its reason and is not retried", async () => {
    const { client, state } = makeClient({ call: { breaker: { consecutiveFailures: 1 } } });
    const controller = new AbortController();
    const signals: AbortSignal[] = [];
    const call = client.call(SERVICE, (_i, signal) => (signals.push(signal), untilAborted(signal)), { signal: controller.signal });
    await eventually(() => signals.length === 1, 'the attempt to start');
    const reason = new Error('the user went away');
    controller.abort(reason);
    await assert.rejects(call, (e: unknown) => e === reason);
    assert.equal(signals.length, 1);
    assert.equal(signals[0]!.aborted, true);
    assert.equal(state('a').inFlight, 0);
    assert.equal(state('a').consecutiveFailures, 0, 'a cancelled call says nothing about the instance');
    await client.close();
  });

  test('a signal aborted before the call: nothing runs', async () => {
    const { client } = makeClient();
    let ran = false;
    await assert.rejects(
      client.call(SERVICE, async () => (ran = true), { signal: AbortSignal.abort(new Error('too late')) }),
      /too late/,
    );
    assert.equal(ran, false);
    await client.close();
  });

  test('closing the client ends a call under way, aborting its signal', async () => {
    const { client } = makeClient();
    const signals: AbortSignal[] = [];
    const call = client.call(SERVICE, (_i, signal) => (signals.push(signal), untilAborted(signal)), { timeoutMs: 60_000 });
    await eventually(() => signals.length === 1, 'the attempt to start');
    await client.close();
    await assert.rejects(call, (e: unknown) => e instanceof DiscoveryConfigError && /closed while the call was under way/.test(e.message));
    assert.equal(signals[0]!.aborted, true);
  });
});

describe('call: what the selector sees', () => {
  test('every call is in flight while it runs and released after, whatever its end', async () => {
    const { client, state } = makeClient({ outlier: false, call: { breaker: false } }, [inst('a')]);
    const inFlightDuring: number[] = [];
    const request =
      (end: 'ok' | 'fail' | 'not-found' | 'hang') =>
      async (instance: Instance, signal: AbortSignal): Promise<void> => {
        inFlightDuring.push(state(instance.id!).inFlight);
        if (end === 'fail') throw new Error('down');
        if (end === 'not-found') throw new NotFound();
        if (end === 'hang') await untilAborted(signal);
      };
    const isFailure = (e: unknown): boolean => !(e instanceof NotFound);
    await client.call(SERVICE, request('ok'));
    await client.call(SERVICE, request('fail'), { attempts: 2 }).catch(() => undefined);
    await client.call(SERVICE, request('not-found'), { isFailure }).catch(() => undefined);
    await client.call(SERVICE, request('hang'), { timeoutMs: 10, attempts: 1 }).catch(() => undefined);
    const controller = new AbortController();
    const cancelled = client.call(SERVICE, request('hang'), { signal: controller.signal });
    await eventually(() => inFlightDuring.length === 6, 'the last call to start');
    controller.abort();
    await cancelled.catch(() => undefined);
    assert.deepEqual(inFlightDuring, [1, 1, 1, 1, 1, 1]);
    assert.equal(state('a').inFlight, 0);
    await client.close();
  });

  test('P2C peak-EWMA sees the latency call() measures and sends calls to the faster instance', async () => {
    const { client, clock, state } = makeClient({ strategy: 'p2c-peak-ewma', random: seededRandom(7) }, [inst('fast'), inst('slow')]);
    const request = async (instance: Instance): Promise<string> => {
      clock.advance(instance.id === 'slow' ? 200 : 5);
      return instance.id!;
    };
    await client.call(SERVICE, request);
    await client.call(SERVICE, request); // each instance answered once: both have an estimate
    assert.ok(state('slow').latencyMs! > state('fast').latencyMs!, `${state('slow').latencyMs} > ${state('fast').latencyMs}`);
    const answers: string[] = [];
    for (let k = 0; k < 20; k++) answers.push(await client.call(SERVICE, request));
    assert.deepEqual(new Set(answers), new Set(['fast']));
    await client.close();
  });
});

describe('call: hooks', () => {
  test('onCall tells each call’s outcome, last instance and duration', async () => {
    const seen: [string, string | undefined, CallOutcome, number][] = [];
    const { client, clock } = makeClient(
      { outlier: false, call: { breaker: false }, hooks: { onCall: (s, i, o, sec) => seen.push([s, i?.id, o, sec]) } },
      [inst('a')],
    );
    await client.call(SERVICE, async () => clock.advance(1500));
    await client.call(SERVICE, failingOn([], 'a'), { attempts: 1 }).catch(() => undefined);
    await client.call(SERVICE, () => Promise.reject(new NotFound()), { isFailure: (e) => !(e instanceof NotFound) }).catch(() => undefined);
    await client.call(SERVICE, (_i, s) => untilAborted(s), { timeoutMs: 5, attempts: 1 }).catch(() => undefined);
    await client.call(SERVICE, async () => 1, { signal: AbortSignal.abort() }).catch(() => undefined);
    await client.call('nobody', async () => 1).catch(() => undefined);
    assert.deepEqual(seen, [
      [SERVICE, 'a', 'success', 1.5],
      [SERVICE, 'a', 'failed', 0],
      [SERVICE, 'a', 'error', 0],
      [SERVICE, 'a', 'timeout', 0],
      [SERVICE, undefined, 'cancelled', 0],
      ['nobody', undefined, 'no_instance', 0],
    ]);
    await client.close();
  });

  test('a hook that throws is logged and the call goes on', async () => {
    const logged: string[] = [];
    const log = (_o: object, msg: string): number => logged.push(msg);
    const { client } = makeClient({
      hooks: {
        onCall: () => {
          throw new Error('broken hook');
        },
      },
      logger: { debug: log, info: log, warn: log, error: log },
    });
    assert.equal(await client.call(SERVICE, failingOn([])), 'a');
    assert.ok(logged.some((m) => m.startsWith('the discovery hook onCall threw')));
    await client.close();
  });
});

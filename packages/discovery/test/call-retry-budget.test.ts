import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RetryBudget } from '../src/call/retry-budget.ts';
import { DiscoveryConfigError } from '../src/errors.ts';
import { FakeClock } from './fakes.ts';

/** Withdraws until refused; how many were granted (bounded, so a broken budget cannot hang the test). */
function drain(budget: RetryBudget): number {
  let granted = 0;
  while (granted < 100_000 && budget.tryWithdraw()) granted++;
  return granted;
}

describe('RetryBudget', () => {
  test('a client that has made no calls can still retry: the reserve is 10 retries per second over the 10 s window', () => {
    const budget = new RetryBudget({}, new FakeClock());
    assert.equal(budget.balance, 100);
    assert.equal(drain(budget), 100);
    assert.equal(budget.balance, 0);
  });

  test('each call earns a fifth of a retry by default', () => {
    const budget = new RetryBudget({ minRetriesPerSecond: 0 }, new FakeClock());
    assert.equal(budget.tryWithdraw(), false);
    for (let k = 0; k < 10; k++) budget.deposit();
    assert.equal(drain(budget), 2);
    for (let k = 0; k < 4; k++) budget.deposit();
    assert.equal(drain(budget), 0, 'four fifths of a retry is not a retry');
    budget.deposit();
    assert.equal(drain(budget), 1);
  });

  test('under a burst of failing calls, retries stay at the share plus the reserve', () => {
    const budget = new RetryBudget({ minRetriesPerSecond: 1, windowMs: 10_000, retryRatio: 0.1 }, new FakeClock());
    let retries = 0;
    for (let k = 0; k < 1000; k++) {
      budget.deposit();
      if (budget.tryWithdraw()) retries++;
    }
    assert.equal(retries, 100 + 10); // 10 % of 1000 calls, plus 1 per second over 10 s
  });

  test('retries taken come back once they are a window old', () => {
    const clock = new FakeClock();
    const budget = new RetryBudget({ minRetriesPerSecond: 1, windowMs: 10_000 }, clock);
    assert.equal(drain(budget), 10);
    clock.advance(5_000);
    assert.equal(budget.tryWithdraw(), false);
    clock.advance(5_000);
    assert.equal(drain(budget), 10);
  });

  test('deposits expire after the window too', () => {
    const clock = new FakeClock();
    const budget = new RetryBudget({ minRetriesPerSecond: 0, retryRatio: 0.5 }, clock);
    for (let k = 0; k < 4; k++) budget.deposit();
    assert.equal(budget.balance, 2);
    clock.advance(10_000);
    assert.equal(budget.balance, 0);
  });

  test('a long quiet spell empties the whole window, however long it was', () => {
    const clock = new FakeClock();
    const budget = new RetryBudget({ minRetriesPerSecond: 0 }, clock);
    for (let k = 0; k < 50; k++) budget.deposit();
    clock.advance(1e9);
    assert.equal(budget.balance, 0);
    budget.deposit();
    budget.deposit();
    budget.deposit();
    budget.deposit();
    budget.deposit();
    assert.equal(budget.balance, 1);
  });

  test('with no ratio and no reserve nothing is ever retried', () => {
    const budget = new RetryBudget({ minRetriesPerSecond: 0, retryRatio: 0 }, new FakeClock());
    for (let k = 0; k < 100; k++) budget.deposit();
    assert.equal(budget.tryWithdraw(), false);
  });

  test('options out of range are refused, naming them', () => {
    assert.throws(
      () => new RetryBudget({ windowMs: 0, retryRatio: -1 }, new FakeClock()),
      (err: unknown) => err instanceof DiscoveryConfigError && /windowMs is 0/.test(err.message) && /retryRatio is -1/.test(err.message),
    );
  });
});

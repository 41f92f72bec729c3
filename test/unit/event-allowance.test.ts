import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventAllowance, MAX_ALLOWANCES, SPAM_BURST, SPAM_REFILL_MS } from '../../src/kube/events.ts';

describe('EventAllowance (the spam filter)', () => {
  test('a burst per key, then one per refill period; other keys keep their own', () => {
    let now = 1_000_000;
    const a = new EventAllowance(() => now);
    const taken = Array.from({ length: SPAM_BURST + 5 }, () => a.take('si-1|Normal'));
    assert.equal(taken.filter(Boolean).length, SPAM_BURST, 'the burst, and nothing past it');
    assert.equal(taken.slice(SPAM_BURST).some(Boolean), false);
    assert.equal(a.take('si-1|Warning'), true, 'warnings have their own allowance: a run of normal events never keeps one out');
    assert.equal(a.take('si-2|Normal'), true, 'another object has its own');

    now += SPAM_REFILL_MS - 1;
    assert.equal(a.take('si-1|Normal'), false, 'not yet a period since the burst began');
    now += 1;
    assert.equal(a.take('si-1|Normal'), true, 'one token per period');
    assert.equal(a.take('si-1|Normal'), false);
    now += 3 * SPAM_REFILL_MS;
    assert.equal([1, 2, 3, 4].map(() => a.take('si-1|Normal')).filter(Boolean).length, 3, 'three periods, three tokens');
  });

  test('a key idle long enough is full again, and its refill counts from its next event', () => {
    let now = 0;
    const a = new EventAllowance(() => now);
    for (let i = 0; i < SPAM_BURST; i++) assert.ok(a.take('k'));
    assert.equal(a.take('k'), false);
    now += 100 * SPAM_REFILL_MS;
    const burst = Array.from({ length: SPAM_BURST + 1 }, () => a.take('k'));
    assert.equal(burst.filter(Boolean).length, SPAM_BURST, 'never more than the burst, however long it was idle');
    now += SPAM_REFILL_MS;
    assert.equal(a.take('k'), true);
    assert.equal(a.take('k'), false);
  });

  test('past the bound the least recently used key is forgotten, the others are kept', () => {
    const a = new EventAllowance(() => 0);
    for (let i = 0; i < SPAM_BURST; i++) a.take('first');
    for (let i = 0; i < SPAM_BURST; i++) a.take('busy');
    for (let i = 2; i < MAX_ALLOWANCES; i++) a.take(`k${i}`);
    assert.equal(a.take('busy'), false, 'used up, and now the most recently used');
    a.take('one-more');
    assert.equal(a.size, MAX_ALLOWANCES);
    assert.equal(a.take('first'), true, 'forgotten, so full again');
    assert.equal(a.take('busy'), false, 'kept');
  });
});

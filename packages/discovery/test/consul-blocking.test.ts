import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { blockingDeadlineMs, delayBeforeNextQuery, nextIndex } from '../src/consul/blocking.ts';

describe('nextIndex follows Consul’s blocking query rules', () => {
  const cases: { name: string; previous: number; answered: string | null; want: number }[] = [
    { name: 'the first read blocks on the index it answered', previous: 0, answered: '42', want: 42 },
    { name: 'a higher index is the next one to block on', previous: 42, answered: '57', want: 57 },
    { name: 'the same index (wait timed out) blocks on it again', previous: 42, answered: '42', want: 42 },
    { name: 'an index that went backwards resets to a plain read', previous: 42, answered: '7', want: 0 },
    { name: 'an answered 0 is clamped to 1, so the next query blocks', previous: 0, answered: '0', want: 1 },
    { name: 'an answered 0 after a real index is clamped too', previous: 42, answered: '0', want: 1 },
    { name: 'no index header is treated like 0', previous: 0, answered: null, want: 1 },
    { name: 'a garbage index is treated like 0', previous: 5, answered: 'abc', want: 1 },
  ];
  for (const c of cases) test(c.name, () => assert.equal(nextIndex(c.previous, c.answered), c.want));
});

describe('pacing', () => {
  test('the deadline of a blocking query is above wait plus Consul’s jitter of wait/16', () => {
    assert.ok(blockingDeadlineMs(300) > 300_000 + 300_000 / 16);
    assert.ok(blockingDeadlineMs(1) > 1000 + 1000 / 16);
  });

  test('queries start at least the minimum interval apart, and the first at once', () => {
    assert.equal(delayBeforeNextQuery(undefined, 1000, 250), 0);
    assert.equal(delayBeforeNextQuery(1000, 1010, 250), 240);
    assert.equal(delayBeforeNextQuery(1000, 1300, 250), 0);
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeapCompactor } from '../../src/heap-compactor.ts';

/** A heap whose reserved size the test sets; compacting it brings it back to `live`. */
function fakeHeap(): { reserved: number; live: number; compactions: number; compact: () => boolean } {
  const heap = {
    reserved: 150,
    live: 100,
    compactions: 0,
    compact: (): boolean => {
      heap.compactions++;
      heap.reserved = heap.live;
      return true;
    },
  };
  return heap;
}

test('the heap is compacted at start, and again only once it grew past the share while idle', () => {
  const heap = fakeHeap();
  let busy = false;
  let now = 0;
  const seen: [number, number][] = [];
  const compactor = new HeapCompactor({
    intervalMs: 60_000,
    growth: 0.1,
    busy: () => busy,
    busyIntervalMs: 60_000,
    now: () => now,
    memory: () => ({ heapTotal: heap.reserved, heapUsed: heap.live, rss: 0 }),
    compact: heap.compact,
    onCompacted: (before, after) => seen.push([before.heapTotal, after.heapTotal]),
  });
  assert.equal(compactor.start(), true);
  compactor.stop();
  assert.equal(heap.compactions, 1, 'compacted at start');
  assert.deepEqual(seen, [[150, 100]]);

  heap.reserved = 110; // exactly 10 % above the last compaction: not past it
  compactor.check();
  assert.equal(heap.compactions, 1);

  heap.reserved = 111;
  busy = true;
  now = 59_999;
  compactor.check();
  assert.equal(heap.compactions, 1, 'not while work is in hand within a minute of the last');

  busy = false;
  heap.live = 104;
  compactor.check();
  assert.equal(heap.compactions, 2, 'compacted once idle');
  assert.deepEqual(seen.at(-1), [111, 104]);

  // The baseline is what the last compaction left: growth is measured from 104 now.
  heap.reserved = 114;
  compactor.check();
  assert.equal(heap.compactions, 2);
  heap.reserved = 115;
  compactor.check();
  assert.equal(heap.compactions, 3);

  // While busy, again once a minute has passed since the last compaction.
  busy = true;
  heap.reserved = 200;
  now = 59_999 + 59_999;
  compactor.check();
  assert.equal(heap.compactions, 3);
  now = 59_999 + 60_000;
  compactor.check();
  assert.equal(heap.compactions, 4, 'a long stretch of work does not leave the heap growing unchecked');

  // A compaction in the middle of work keeps the work's live garbage (150 here); the idle heap
  // after it is still measured against the idle baseline (104), so it is compacted once idle.
  heap.live = 150;
  heap.reserved = 210;
  now += 60_000;
  compactor.check();
  assert.equal(heap.compactions, 5);
  assert.deepEqual(seen.at(-1), [210, 150]);
  busy = false;
  heap.live = 104;
  compactor.check();
  assert.equal(heap.compactions, 6, 'the heap left by the work is given back once idle');
  assert.deepEqual(seen.at(-1), [150, 104]);
});

test('without a collector to call (no --expose-gc) nothing starts', () => {
  const compactor = new HeapCompactor({
    intervalMs: 10,
    growth: 0.1,
    busy: () => false,
    busyIntervalMs: 10,
    memory: () => ({ heapTotal: 1, heapUsed: 1, rss: 1 }),
    compact: () => false,
  });
  assert.equal(compactor.start(), false);
  compactor.stop();
});

test('while idle, a heap that reserves much more than it uses is compacted, once', () => {
  const figures = { heapTotal: 100, heapUsed: 95, rss: 0 };
  let compactions = 0;
  const compactor = new HeapCompactor({
    intervalMs: 60_000,
    growth: 0.1,
    slackBytes: 8,
    busy: () => busy,
    // The clock stands still: a check while busy never comes a whole busy interval after the
    // last compaction, however slowly a loaded machine runs this test.
    busyIntervalMs: 60_000,
    now: () => 0,
    memory: () => ({ ...figures }),
    compact: () => {
      compactions++;
      figures.heapTotal = figures.heapUsed + 4; // what V8 keeps after compacting
      return true;
    },
  });
  let busy = false;
  /** A check while work is in hand compacts nothing; the next, once idle, makes compaction number `expected`. */
  const checkBusyThenIdle = (expected: number, message: string): void => {
    busy = true;
    compactor.check();
    assert.equal(compactions, expected - 1, 'not while work is in hand');
    busy = false;
    compactor.check();
    assert.equal(compactions, expected, message);
  };
  assert.equal(compactor.start(), true);
  compactor.stop();
  assert.equal(compactions, 1);
  assert.equal(figures.heapTotal, 99);

  // A burst that stayed below the growth mark (108.9) but left 20 reserved and unused.
  figures.heapTotal = 105;
  figures.heapUsed = 85;
  checkBusyThenIdle(2, 'compacted once idle');
  assert.equal(figures.heapTotal, 89);

  // What a compaction leaves is not judged again.
  compactor.check();
  assert.equal(compactions, 2, 'nothing changed since the compaction');

  // In use 7 more than the compaction left (85), within a tenth of 92: left alone.
  figures.heapUsed = 92;
  figures.heapTotal = 96;
  compactor.check();
  assert.equal(compactions, 2);
  // 10 more than it left, over a tenth of 95: old garbage V8 has not collected.
  figures.heapUsed = 95;
  figures.heapTotal = 99;
  checkBusyThenIdle(3, 'the garbage of a finished burst is collected once idle');
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InstanceSelector, type InstanceSelectorOptions } from '../src/selector.ts';
import { seededRandom } from '../src/random.ts';
import type { Instance } from '../src/instance.ts';
import { FakeClock, ids, inst, scriptedRandom, tally } from './fakes.ts';

function selector(options: Partial<InstanceSelectorOptions>, instances: Instance[]): InstanceSelector {
  const s = new InstanceSelector({ service: 'user-service', namespace: 'prod', clock: new FakeClock(), ...options });
  s.update(instances);
  return s;
}

describe('round robin', () => {
  test('visits every instance in turn, starting where the random source says, and ignores weights', () => {
    const s = selector({ strategy: 'round-robin', random: scriptedRandom(0.5) }, [inst('a', { weight: 5 }), inst('b'), inst('c')]);
    const picks = Array.from({ length: 7 }, () => s.pick());
    assert.equal(ids(picks), 'b c a b c a b');
  });
});

describe('random', () => {
  test('spreads picks evenly over the instances', () => {
    const s = selector({ strategy: 'random', random: seededRandom(42) }, [inst('a'), inst('b'), inst('c')]);
    const counts = tally(30_000, () => s.pick());
    for (const id of ['a', 'b', 'c']) {
      const n = counts.get(id) ?? 0;
      assert.ok(n > 9_500 && n < 10_500, `${id} got ${n} of 30000`);
    }
  });
});

describe('smooth weighted round robin', () => {
  test('weights 5/1/1 give exactly a a b a c a a, cycle after cycle (nginx)', () => {
    const s = selector({ strategy: 'weighted-round-robin' }, [
      inst('a', { weight: 5 }),
      inst('b', { weight: 1 }),
      inst('c', { weight: 1 }),
    ]);
    const picks = Array.from({ length: 21 }, () => s.pick());
    assert.equal(ids(picks), 'a a b a c a a a a b a c a a a a b a c a a');
  });

  test('gives each instance exactly its share of the weights per cycle, and none to weight 0', () => {
    const s = selector({ strategy: 'weighted-round-robin' }, [
      inst('a', { weight: 3 }),
      inst('b', { weight: 2 }),
      inst('z', { weight: 0 }),
    ]);
    const counts = tally(50, () => s.pick());
    assert.deepEqual(Object.fromEntries(counts), { a: 30, b: 20 });
  });
});

describe('least connections', () => {
  test('sends each call to the instance with the fewest calls in flight, and back to one that is released', () => {
    const s = selector({ strategy: 'least-connections' }, [inst('a'), inst('b'), inst('c')]);
    const first = [s.acquire(), s.acquire(), s.acquire()];
    assert.equal(ids(first), 'a b c', 'ties are taken in turn');
    const b = first[1]!;
    s.release(b, { ok: true });
    assert.equal(s.acquire().id, 'b', 'b is the only one with nothing in flight');
    for (const i of first) if (i.id !== 'b') s.release(i, { ok: true });
    const next = [s.acquire(), s.acquire()].map((i) => i.id).sort();
    assert.deepEqual(next, ['a', 'c'], 'a and c are idle again, b still has one call');
  });

  test('measures calls in flight per unit of weight', () => {
    const s = selector({ strategy: 'least-connections' }, [inst('a', { weight: 2 }), inst('b', { weight: 1 })]);
    const counts = tally(30, () => s.acquire());
    assert.deepEqual(Object.fromEntries(counts), { a: 20, b: 10 });
  });
});

describe('power of two choices over peak EWMA', () => {
  /** Runs `calls` sequential calls, each answering after `latency(id)` ms. */
  function run(s: InstanceSelector, clock: FakeClock, calls: number, latency: (id: string) => number, stepMs = 1): string[] {
    const picked: string[] = [];
    for (let k = 0; k < calls; k++) {
      const i = s.acquire();
      const ms = latency(i.id!);
      clock.advance(stepMs);
      s.release(i, { ok: true, latencyMs: ms });
      picked.push(i.id!);
    }
    return picked;
  }
  const share = (picked: string[], id: string): number => picked.filter((p) => p === id).length / picked.length;

  test('prefers the fast instances: a slow one gets only its first probe', () => {
    const clock = new FakeClock();
    const s = selector({ strategy: 'p2c-peak-ewma', clock, random: seededRandom(1) }, [inst('a'), inst('b'), inst('c'), inst('slow')]);
    const picked = run(s, clock, 1000, (id) => (id === 'slow' ? 80 : 10));
    assert.equal(picked.filter((p) => p === 'slow').length, 1);
    for (const id of ['a', 'b', 'c']) assert.ok(share(picked, id) > 0.25, `${id}: ${share(picked, id)}`);
  });

  test('routes around an instance that turns slow, and takes it back once its estimate has decayed and it answers fast again', () => {
    const clock = new FakeClock();
    const s = selector({ strategy: 'p2c-peak-ewma', clock, random: seededRandom(7) }, [inst('a'), inst('b'), inst('c')]);
    let slowA = false;
    const latency = (id: string): number => (id === 'a' && slowA ? 500 : 10);
    assert.ok(share(run(s, clock, 300, latency), 'a') > 0.25, 'a shares traffic while fast');

    slowA = true;
    // One call every 100 ms for 30 s: a's estimate is 500 ms × e^(−t/10 s), still above 10 ms.
    const whileSlow = run(s, clock, 300, latency, 100);
    assert.equal(whileSlow.filter((p) => p === 'a').length, 1, 'one slow answer and a is avoided');

    slowA = false;
    // By ~τ·ln(500/10) ≈ 39 s after its slow answer a looks cheaper than the others and is probed.
    const later = run(s, clock, 300, latency, 100);
    const firstBack = later.indexOf('a');
    assert.ok(firstBack >= 50 && firstBack <= 150, `a probed again after ${(firstBack + 1) * 0.1} s more`);
    assert.ok(share(later.slice(firstBack), 'a') > 0.25, 'and shares traffic again once it answers fast');
  });

  test('weighs calls in flight: a fast instance with a queue loses to an idle slower one', () => {
    const clock = new FakeClock();
    const s = selector({ strategy: 'p2c-peak-ewma', clock, random: seededRandom(3) }, [inst('fast'), inst('slower')]);
    for (const [id, ms] of [
      ['fast', 10],
      ['slower', 25],
    ] as const) {
      s.record(inst(id), { ok: true, latencyMs: ms });
    }
    const held = [s.acquire(), s.acquire(), s.acquire()];
    // fast: 10 × 1, 10 × 2, 10 × 3 = 30 > slower 25 × 1.
    assert.equal(ids(held), 'fast fast slower');
  });

  test('tries a new instance at once but sends it only one call until it has answered (Finagle default)', () => {
    const clock = new FakeClock();
    const s = selector({ strategy: 'p2c-peak-ewma', clock, random: seededRandom(5) }, [inst('a'), inst('b')]);
    run(s, clock, 20, () => 10);
    s.update([inst('a'), inst('b'), inst('new')]);
    const held = tally(30, () => s.acquire());
    assert.equal(held.get('new'), 1, 'one call while it has not answered');
    s.release(inst('new'), { ok: true, latencyMs: 2 });
    assert.ok(tally(30, () => s.acquire()).get('new')! > 1, 'fast, idle-ish: it takes calls now');
  });

  test('with a default latency (Linkerd: 30 ms), a new instance waits until the others look worse', () => {
    const clock = new FakeClock();
    const s = selector({ strategy: 'p2c-peak-ewma', clock, random: seededRandom(5), latency: { defaultLatencyMs: 30 } }, [
      inst('a'),
      inst('b'),
    ]);
    run(s, clock, 20, () => 10);
    s.update([inst('a'), inst('b'), inst('new')]);
    assert.equal(run(s, clock, 100, () => 10).filter((p) => p === 'new').length, 0);
  });
});

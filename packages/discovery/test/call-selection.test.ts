/**
 * The selector pieces `call()` relies on: picking while avoiding instances (already tried, breaker
 * open), releasing without an outcome, and the ejection event.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InstanceSelector } from '../src/selector.ts';
import { NoInstanceError } from '../src/errors.ts';
import type { Instance } from '../src/instance.ts';
import { FakeClock, inst, scriptedRandom, tally } from './fakes.ts';

function make(onEjection?: (instance: Instance, ms: number) => void) {
  const clock = new FakeClock();
  const s = new InstanceSelector({
    service: 'user-service',
    namespace: 'prod',
    strategy: 'round-robin',
    clock,
    random: scriptedRandom(0),
    ...(onEjection !== undefined ? { onEjection } : {}),
  });
  return { s, clock };
}

describe('acquireAvoiding', () => {
  test('never returns an avoided instance, and counts the call in flight', () => {
    const { s } = make();
    s.update([inst('a'), inst('b'), inst('c')]);
    const counts = tally(30, () => s.acquireAvoiding(undefined, (i) => i.id === 'b')!);
    assert.deepEqual([...counts.keys()].sort(), ['a', 'c']);
    assert.equal(s.inspect().find((x) => x.id === 'a')?.inFlight, 15);
    assert.equal(s.inspect().find((x) => x.id === 'b')?.inFlight, 0);
  });

  test('returns undefined when every candidate is avoided, so the caller chooses the fallback', () => {
    const { s } = make();
    s.update([inst('a'), inst('b')]);
    assert.equal(
      s.acquireAvoiding(undefined, () => true),
      undefined,
    );
    assert.ok(s.inspect().every((x) => x.inFlight === 0));
  });

  test('honours the tag filter and leaves ejected instances out while others are left', () => {
    const { s } = make();
    s.update([inst('a', { tags: { zone: 'x' } }), inst('b', { tags: { zone: 'x' } }), inst('c', { tags: { zone: 'y' } })]);
    for (let k = 0; k < 5; k++) s.record(inst('a'), { ok: false });
    assert.equal(s.inspect().find((x) => x.id === 'a')?.ejected, true);
    assert.equal(s.acquireAvoiding({ zone: 'x' }, () => false)?.id, 'b');
    assert.equal(
      s.acquireAvoiding({ zone: 'x' }, (i) => i.id === 'b'),
      undefined,
      'a is ejected and b is avoided',
    );
  });

  test('with every match ejected it picks among them (panic), minus the avoided ones', () => {
    const { s } = make();
    s.update([inst('a')]);
    for (let k = 0; k < 5; k++) s.record(inst('a'), { ok: false });
    assert.equal(s.inspect()[0]?.ejected, true);
    assert.equal(s.acquireAvoiding(undefined, () => false)?.id, 'a');
  });

  test('throws NoInstanceError when nothing matches at all, as pick does', () => {
    const { s } = make();
    s.update([inst('a', { tags: { zone: 'x' } })]);
    assert.throws(() => s.acquireAvoiding({ zone: 'y' }, () => false), NoInstanceError);
  });
});

describe('cancel', () => {
  test('ends the call in flight and leaves failures and latency as they were', () => {
    const { s } = make();
    s.update([inst('a')]);
    s.record(inst('a'), { ok: false });
    const a = s.acquire();
    s.cancel(a);
    const state = s.inspect()[0]!;
    assert.equal(state.inFlight, 0);
    assert.equal(state.consecutiveFailures, 1);
    assert.equal(state.latencyMs, undefined);
  });
});

describe('onEjection', () => {
  test('is told once, with the ejection time, when a failure ejects an instance', () => {
    const told: [string | undefined, number][] = [];
    const { s } = make((instance, ms) => told.push([instance.id, ms]));
    s.update([inst('a'), inst('b'), inst('c')]);
    for (let k = 0; k < 4; k++) s.record(inst('a'), { ok: false });
    assert.deepEqual(told, []);
    s.record(inst('a'), { ok: false });
    s.record(inst('a'), { ok: false });
    assert.deepEqual(told, [['a', 30_000]]);
  });
});

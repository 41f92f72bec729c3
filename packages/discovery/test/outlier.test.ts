import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InstanceSelector, type InstanceSelectorOptions } from '../src/selector.ts';
import type { Instance } from '../src/instance.ts';
import { DiscoveryConfigError } from '../src/errors.ts';
import { FakeClock, inst, tally } from './fakes.ts';

/** Instances i0 … i(n-1). */
function many(n: number): Instance[] {
  return Array.from({ length: n }, (_, k) => ({ id: `i${k}`, address: `10.0.1.${k}`, port: 80 }));
}

function setup(instances: Instance[], options: Partial<InstanceSelectorOptions> = {}): { s: InstanceSelector; clock: FakeClock } {
  const clock = new FakeClock();
  const s = new InstanceSelector({ service: 'user-service', namespace: 'prod', strategy: 'round-robin', clock, ...options });
  s.update(instances);
  return { s, clock };
}

function fail(s: InstanceSelector, instance: Instance, times: number): void {
  for (let k = 0; k < times; k++) s.record(instance, { ok: false });
}

function state(s: InstanceSelector, id: string) {
  const found = s.inspect().find((x) => x.id === id);
  assert.ok(found, `${id} is known`);
  return found;
}

describe('outlier ejection', () => {
  test('ejects an instance after 5 failures in a row (Envoy default) and stops picking it', () => {
    const instances = many(10);
    const { s } = setup(instances);
    fail(s, instances[3]!, 4);
    assert.equal(state(s, 'i3').ejected, false, 'four failures are not enough');
    fail(s, instances[3]!, 1);
    assert.equal(state(s, 'i3').ejected, true);
    assert.equal(state(s, 'i3').ejectedUntil, 30_000, 'for the base time, 30 s');
    assert.equal(tally(90, () => s.pick()).get('i3'), undefined);
  });

  test('a success resets the count of failures in a row', () => {
    const instances = many(10);
    const { s } = setup(instances);
    fail(s, instances[0]!, 4);
    s.record(instances[0]!, { ok: true });
    fail(s, instances[0]!, 4);
    assert.equal(state(s, 'i0').ejected, false);
    assert.equal(state(s, 'i0').consecutiveFailures, 4);
  });

  test('returns the instance after its ejection time, and ejects it longer each time in a row, up to the maximum', () => {
    const instances = many(10);
    const { s, clock } = setup(instances, { outlier: { baseEjectionMs: 30_000, maxEjectionMs: 100_000 } });
    const durations: number[] = [];
    for (let round = 0; round < 5; round++) {
      fail(s, instances[0]!, 5);
      const until = state(s, 'i0').ejectedUntil!;
      durations.push(until - clock.now());
      clock.advance(until - clock.now() - 1);
      assert.equal(state(s, 'i0').ejected, true, 'still out 1 ms before the end');
      clock.advance(1);
      assert.equal(state(s, 'i0').ejected, false, 'back at the end');
      assert.ok(tally(10, () => s.pick()).get('i0'), 'and picked again');
    }
    assert.deepEqual(durations, [30_000, 60_000, 90_000, 100_000, 100_000]);
    assert.equal(state(s, 'i0').ejectionMultiplier, 4, 'the multiplier stops where the maximum is reached');
  });

  test('the ejection multiplier goes down by one for every 10 s back in service', () => {
    const instances = many(10);
    const { s, clock } = setup(instances);
    fail(s, instances[0]!, 5);
    clock.advance(30_000);
    fail(s, instances[0]!, 5);
    clock.advance(60_000);
    assert.equal(state(s, 'i0').ejectionMultiplier, 2, 'ejected twice in a row');
    clock.advance(10_000);
    assert.equal(state(s, 'i0').ejectionMultiplier, 1, 'one step down after a quiet interval');
    clock.advance(25_000);
    assert.equal(state(s, 'i0').ejectionMultiplier, 0);
    fail(s, instances[0]!, 5);
    assert.equal(state(s, 'i0').ejectedUntil! - clock.now(), 30_000, 'the next ejection starts from the base time again');
  });

  test('ejects at most 10 % of the instances at once', () => {
    const instances = many(20);
    const { s } = setup(instances);
    for (const i of instances.slice(0, 4)) fail(s, i, 5);
    assert.deepEqual(
      s
        .inspect()
        .filter((x) => x.ejected)
        .map((x) => x.id),
      ['i0', 'i1'],
    );
  });

  test('ejects one instance even when 10 % of them is less than one, and not a second', () => {
    for (const n of [2, 3, 9]) {
      const instances = many(n);
      const { s } = setup(instances);
      fail(s, instances[0]!, 5);
      fail(s, instances[1]!, 5);
      const ejected = s.inspect().filter((x) => x.ejected);
      assert.deepEqual(
        ejected.map((x) => x.id),
        ['i0'],
        `${n} instances`,
      );
    }
  });

  test('an instance kept in by the cap is ejected by its next failure once there is room', () => {
    const instances = many(5);
    const { s, clock } = setup(instances);
    fail(s, instances[0]!, 5);
    fail(s, instances[1]!, 5);
    assert.equal(state(s, 'i1').ejected, false);
    clock.advance(30_000); // i0 returns
    fail(s, instances[1]!, 1);
    assert.equal(state(s, 'i1').ejected, true);
  });

  test('panic: when every instance is ejected, picks fall back to all of them instead of failing', () => {
    const instances = many(2);
    const { s } = setup(instances, { outlier: { maxEjectionPercent: 100 } });
    fail(s, instances[0]!, 5);
    fail(s, instances[1]!, 5);
    assert.ok(s.inspect().every((x) => x.ejected));
    assert.deepEqual(Object.fromEntries(tally(10, () => s.pick())), { i0: 5, i1: 5 });
  });

  test('panic: a single instance that fails is still picked', () => {
    const only = inst('only');
    const { s } = setup([only]);
    fail(s, only, 5);
    assert.equal(state(s, 'only').ejected, true);
    assert.equal(s.pick().id, 'only');
  });

  test('panic per filter: when the tags match only ejected instances, those are picked; other selections still avoid them', () => {
    const a = inst('a', { tags: { zone: 'a' } });
    const b1 = inst('b1', { tags: { zone: 'b' } });
    const b2 = inst('b2', { tags: { zone: 'b' } });
    const { s } = setup([a, b1, b2]);
    fail(s, a, 5);
    assert.equal(state(s, 'a').ejected, true);
    assert.equal(s.pick({ zone: 'a' }).id, 'a');
    assert.equal(tally(10, () => s.pick()).get('a'), undefined);
  });

  test('outlier: false never ejects', () => {
    const instances = many(3);
    const { s } = setup(instances, { outlier: false });
    fail(s, instances[0]!, 50);
    assert.equal(state(s, 'i0').ejected, false);
  });

  test('refuses options out of range, naming the option and what it accepts', () => {
    assert.throws(
      () => setup(many(1), { outlier: { maxEjectionPercent: 150 } }),
      (err: unknown) =>
        err instanceof DiscoveryConfigError &&
        /outlier\.maxEjectionPercent is 150: it must be a percentage from 0 to 100/.test(err.message),
    );
    assert.throws(() => setup(many(1), { outlier: { consecutiveFailures: 0 } }), /outlier\.consecutiveFailures is 0/);
  });
});

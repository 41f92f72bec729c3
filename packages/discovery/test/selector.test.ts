import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InstanceSelector } from '../src/selector.ts';
import { DiscoveryConfigError, InvalidInstanceError, NoInstanceError } from '../src/errors.ts';
import { instanceId } from '../src/instance.ts';
import { FakeClock, ids, inst, scriptedRandom, tally } from './fakes.ts';

function make(strategy: 'round-robin' | 'weighted-round-robin' | 'least-connections' | 'p2c-peak-ewma' = 'round-robin') {
  const clock = new FakeClock();
  const s = new InstanceSelector({ service: 'user-service', namespace: 'prod', strategy, clock, random: scriptedRandom(0) });
  return { s, clock };
}

describe('tag filter', () => {
  test('keeps the instances that carry every tag of the filter', () => {
    const { s } = make();
    s.update([
      inst('a', { tags: { zone: 'a', version: '2' } }),
      inst('b', { tags: { zone: 'a', version: '1' } }),
      inst('c', { tags: { zone: 'b', version: '2' } }),
      inst('d'),
    ]);
    assert.equal(ids(s.instances({ zone: 'a', version: '2' })), 'a');
    assert.equal(ids(s.instances({ zone: 'a' })), 'a b');
    assert.equal(ids(s.instances({})), 'a b c d');
    assert.deepEqual(Object.keys(Object.fromEntries(tally(10, () => s.pick({ version: '2' })))).sort(), ['a', 'c']);
  });

  test('equal filters share one rotation, whatever their key order or object', () => {
    const { s } = make();
    s.update([inst('a', { tags: { x: '1', y: '1' } }), inst('b', { tags: { x: '1', y: '1' } })]);
    assert.equal(ids([s.pick({ x: '1', y: '1' }), s.pick({ y: '1', x: '1' }), s.pick({ x: '1', y: '1' })]), 'a b a');
  });

  test('a filter object changed after use does not change what an equal filter selects', () => {
    const { s } = make();
    s.update([inst('a', { tags: { zone: 'a' } }), inst('b', { tags: { zone: 'b' } })]);
    const filter: Record<string, string> = { zone: 'a' };
    assert.equal(s.pick(filter).id, 'a');
    filter.zone = 'b';
    assert.equal(s.pick({ zone: 'a' }).id, 'a');
  });
});

describe('errors', () => {
  test('no instance at all: says where it looked and what to check', () => {
    const { s } = make();
    assert.throws(
      () => s.pick(),
      (err: unknown) =>
        err instanceof NoInstanceError &&
        err.message === 'no instance of user-service in namespace prod is known: is a ServiceInstance registered there?',
    );
  });

  test('no instance matching the tags: names the tags and how many instances exist without them', () => {
    const { s } = make();
    s.update([inst('a', { tags: { zone: 'b' } }), inst('b', { tags: { zone: 'b' } })]);
    assert.throws(
      () => s.acquire({ zone: 'a' }),
      (err: unknown) =>
        err instanceof NoInstanceError &&
        err.message.startsWith(
          'no instance of user-service in namespace prod matches tags {zone=a}: is a ServiceInstance registered there?',
        ) &&
        err.message.includes('2 instances are known, none with these tags'),
    );
  });

  test('only weight-0 instances match: says they are out of rotation and how to bring them back', () => {
    const { s } = make();
    s.update([inst('a', { weight: 0 })]);
    assert.throws(() => s.pick(), /1 matching instance has weight 0 \(out of rotation\): raise the weight/);
  });

  test('a negative weight rejects the whole update and keeps the instances known before', () => {
    const { s } = make();
    s.update([inst('a')]);
    assert.throws(() => s.update([inst('b'), inst('c', { weight: -1 })]), InvalidInstanceError);
    assert.equal(ids(s.instances()), 'a');
  });

  test('an unknown strategy is refused with the list of known ones', () => {
    const { s } = make();
    assert.throws(
      () => s.setStrategy('fastest' as 'random'),
      (err: unknown) => err instanceof DiscoveryConfigError && /use one of round-robin, random/.test(err.message),
    );
  });
});

describe('membership changes', () => {
  test('instances that stay keep their smooth-WRR position, calls in flight, latency and ejection; new ones start fresh', () => {
    const { s, clock } = make('weighted-round-robin');
    s.update([inst('a', { weight: 5 }), inst('b'), inst('c'), inst('x')]);
    s.setStrategy('weighted-round-robin');
    const held = s.acquire(); // first pick of the cycle
    s.record(inst('b'), { ok: true, latencyMs: 40 });
    for (let k = 0; k < 5; k++) s.record(inst('c'), { ok: false });
    const before = new Map(s.inspect().map((x) => [x.id, x]));
    assert.equal(before.get('c')?.ejected, true);

    clock.advance(1);
    // Fresh objects for a, b, c (b moves address), x goes, d arrives.
    s.update([inst('a', { weight: 5 }), inst('b', { address: '10.9.9.9' }), inst('c'), inst('d')]);
    const after = new Map(s.inspect().map((x) => [x.id, x]));
    assert.equal(after.get('a')?.inFlight, 1);
    assert.equal(after.get('b')?.instance.address, '10.9.9.9');
    assert.ok(Math.abs(after.get('b')!.latencyMs! - before.get('b')!.latencyMs!) < 0.01, 'latency estimate kept (decayed by 1 ms)');
    assert.equal(after.get('c')?.ejected, true);
    assert.equal(after.get('c')?.ejectedUntil, before.get('c')?.ejectedUntil);
    assert.equal(after.has('x'), false);
    assert.deepEqual(
      { ...after.get('d'), instance: undefined },
      {
        id: 'd',
        instance: undefined,
        weight: 1,
        inFlight: 0,
        latencyMs: undefined,
        consecutiveFailures: 0,
        ejected: false,
        ejectedUntil: undefined,
        ejectionMultiplier: 0,
      },
    );

    s.release(held, { ok: true }); // the object from before the update still finds its instance
    assert.equal(s.inspect().find((x) => x.id === 'a')?.inFlight, 0);
  });

  test('smooth WRR continues its cycle across an update that keeps the same instances', () => {
    const { s } = make('weighted-round-robin');
    const set = () => [inst('a', { weight: 5 }), inst('b'), inst('c')];
    s.update(set());
    const picks = [s.pick(), s.pick(), s.pick()];
    s.update(set());
    picks.push(s.pick(), s.pick(), s.pick(), s.pick());
    assert.equal(ids(picks), 'a a b a c a a');
  });

  test('an instance removed and added again starts fresh, and outcomes reported for it meanwhile are ignored', () => {
    const { s } = make();
    const a = inst('a');
    s.update([a, inst('b')]);
    const held = s.acquire();
    assert.equal(held.id, 'a');
    for (let k = 0; k < 4; k++) s.record(a, { ok: false });
    s.update([inst('b')]);
    s.release(held, { ok: false });
    s.update([inst('a'), inst('b')]);
    const fresh = s.inspect().find((x) => x.id === 'a');
    assert.equal(fresh?.inFlight, 0);
    assert.equal(fresh?.consecutiveFailures, 0);
  });

  test('the id defaults to address:port, with IPv6 in brackets', () => {
    assert.equal(instanceId({ address: '10.0.0.12', port: 8080 }), '10.0.0.12:8080');
    assert.equal(instanceId({ address: 'fd00::12', port: 8080 }), '[fd00::12]:8080');
    const { s } = make('least-connections');
    s.update([{ address: '10.0.0.12', port: 8080 }]);
    s.acquire();
    s.update([{ address: '10.0.0.12', port: 8080, tags: { zone: 'a' } }]);
    assert.equal(s.inspect()[0]?.inFlight, 1, 'same address and port: same instance');
  });
});

describe('strategy switch', () => {
  test('takes effect on the next pick and keeps per-instance state', () => {
    const { s } = make('round-robin');
    s.update([inst('a', { weight: 5 }), inst('b'), inst('c')]);
    assert.equal(ids([s.pick(), s.pick(), s.pick()]), 'a b c');
    s.acquire();
    s.setStrategy('weighted-round-robin');
    assert.equal(s.strategy, 'weighted-round-robin');
    assert.equal(ids(Array.from({ length: 7 }, () => s.pick())), 'a a b a c a a');
    s.setStrategy('least-connections');
    assert.equal(s.inspect().find((x) => x.inFlight === 1)?.id, 'a');
    assert.notEqual(s.acquire().id, 'a', 'a still has the call acquired under round robin');
  });
});

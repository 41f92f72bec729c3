import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Clock } from '../../src/clock.ts';
import { TerminalError, WorkQueue } from '../../src/controller/queue.ts';

/** A clock whose timers fire only when the test advances time. */
class FakeClock implements Clock {
  #now = 0;
  #timers: { at: number; fn: () => void; id: number }[] = [];
  #next = 0;
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.push({ at: this.#now + ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle);
  }
  advance(ms: number): void {
    this.#now += ms;
    const due = this.#timers.filter((t) => t.at <= this.#now);
    this.#timers = this.#timers.filter((t) => t.at > this.#now);
    for (const t of due) t.fn();
  }
  get pending(): number {
    return this.#timers.length;
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** A handler that counts its runs and how many overlap, holding its first run until `gate` opens. */
function firstRunHeld(): {
  handler: () => Promise<undefined>;
  gate: { resolve: () => void };
  readonly runs: number;
  readonly maxActive: number;
} {
  const gate = deferred();
  let active = 0;
  const k = {
    runs: 0,
    maxActive: 0,
    gate,
    handler: async (): Promise<undefined> => {
      active++;
      k.maxActive = Math.max(k.maxActive, active);
      k.runs++;
      if (k.runs === 1) await gate.promise;
      active--;
      return undefined;
    },
  };
  return k;
}

describe('WorkQueue', () => {
  test('has() tracks a key while it waits, runs and is due later, and not after it is done', async () => {
    const clock = new FakeClock();
    const gate = deferred();
    let result: { requeueAfterMs?: number } | undefined = { requeueAfterMs: 1000 };
    const q = new WorkQueue(
      async () => {
        await gate.promise;
        return result;
      },
      { concurrency: 1, clock },
    );
    assert.equal(q.has('a'), false);
    q.add('a');
    assert.equal(q.has('a'), true, 'waiting');
    await new Promise((r) => setImmediate(r));
    assert.equal(q.has('a'), true, 'running');
    gate.resolve();
    await q.idle();
    assert.equal(q.has('a'), true, 'its resync is due later');
    result = undefined;
    clock.advance(1000);
    await q.idle();
    assert.equal(q.has('a'), false, 'done, with nothing due');
  });

  test('a key added many times while it waits is processed once', async () => {
    const seen: string[] = [];
    const gate = deferred();
    const q = new WorkQueue(
      async (k) => {
        // The first key holds the only worker so that the others pile up waiting.
        if (k === 'x') await gate.promise;
        seen.push(k);
        return undefined;
      },
      { concurrency: 1 },
    );
    q.add('x');
    await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 5; i++) q.add('a');
    q.add('b');
    assert.equal(q.depth, 3, 'x runs; a and b wait once each');
    gate.resolve();
    await q.idle();
    assert.deepEqual(seen, ['x', 'a', 'b']);
  });

  test('a key is never processed twice at once, and an add while it runs runs it again afterwards', async () => {
    const k = firstRunHeld();
    const q = new WorkQueue(k.handler, { concurrency: 4 });
    q.add('k');
    await Promise.resolve();
    await new Promise((r) => setImmediate(r));
    q.add('k');
    q.add('k');
    k.gate.resolve();
    await new Promise((r) => setImmediate(r));
    await q.idle();
    await q.idle();
    assert.equal(k.maxActive, 1, 'never two at once');
    assert.equal(k.runs, 2, 'the adds during the run collapse into one rerun');
  });

  test('failures requeue with growing per-key backoff; success resets it', async () => {
    const clock = new FakeClock();
    const delays: (number | undefined)[] = [];
    let failuresLeft = 3;
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        calls++;
        if (failuresLeft-- > 0) throw new Error('registry down');
        return undefined;
      },
      {
        concurrency: 1,
        baseBackoffMs: 100,
        maxBackoffMs: 1000,
        clock,
        random: () => 0.5,
        observer: { error: (_k, _e, retry) => delays.push(retry) },
      },
    );
    q.add('k');
    await q.idle();
    for (let i = 0; i < 3; i++) {
      clock.advance(10_000);
      await q.idle();
    }
    assert.equal(calls, 4);
    assert.deepEqual(delays, [100, 200, 400]);
    assert.equal(clock.pending, 0, 'no retry is scheduled after success');
  });

  test('a terminal error is not retried', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        calls++;
        throw new TerminalError('spec is invalid');
      },
      { concurrency: 1, clock },
    );
    q.add('k');
    await q.idle();
    clock.advance(1_000_000);
    await q.idle();
    assert.equal(calls, 1);
    assert.equal(clock.pending, 0);
  });

  test('requeueAfter schedules the next run and an explicit add brings it forward', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        calls++;
        return { requeueAfterMs: 60_000 };
      },
      { concurrency: 1, clock },
    );
    q.add('k');
    await q.idle();
    assert.equal(clock.pending, 1);
    q.add('k');
    await q.idle();
    assert.equal(calls, 2, 'the add ran at once instead of waiting for the timer');
    assert.equal(clock.pending, 1, 'the earlier timer was replaced, not doubled');
    await q.shutdown();
    assert.equal(clock.pending, 0, 'shutdown cancels delayed adds');
  });

  test('delayed adds of many keys share one timer, and each key comes due at its own time, once', async () => {
    const clock = new FakeClock();
    const seen: string[] = [];
    const q = new WorkQueue(
      (key) => {
        seen.push(key);
        return Promise.resolve(undefined);
      },
      { concurrency: 4, clock },
    );
    // 1,000 keys due at 1..1000 s, added in a scrambled order; k7 is moved earlier, k9 later (ignored).
    for (let i = 0; i < 1000; i++) {
      const n = (i * 389) % 1000;
      q.addAfter(`k${n}`, (n + 1) * 1000);
    }
    q.addAfter('k7', 500);
    q.addAfter('k9', 999_999);
    assert.equal(clock.pending, 1, 'one timer for a thousand delayed adds');
    assert.ok(q.has('k999'));

    clock.advance(500);
    await q.idle();
    assert.deepEqual(seen, ['k7'], 'the key moved earlier came due at its new time');
    clock.advance(500);
    await q.idle();
    assert.deepEqual(seen, ['k7', 'k0']);
    clock.advance(9000);
    await q.idle();
    assert.deepEqual(seen.slice(2), ['k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k8', 'k9'], 'in order of their due times, k7 not again');
    // An explicit add takes a key's delayed add away.
    q.add('k500');
    await q.idle();
    clock.advance(1_000_000);
    await q.idle();
    assert.equal(seen.length, 1000, 'every key ran once');
    assert.equal(seen.filter((k) => k === 'k500').length, 1);
    assert.equal(clock.pending, 0, 'nothing left to wait for');
    assert.ok(!q.has('k999'));
    await q.shutdown();
  });

  test('the concurrency bound holds across keys', async () => {
    let active = 0;
    let maxActive = 0;
    const q = new WorkQueue(
      async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((r) => setImmediate(r));
        active--;
        return undefined;
      },
      { concurrency: 3 },
    );
    for (let i = 0; i < 20; i++) q.add(`k${i}`);
    await q.idle();
    assert.equal(maxActive, 3);
  });

  test('lanes: keys of a lane whose work hangs never wait for it; each lane keeps its own bound', async () => {
    const slow = deferred();
    const active = new Map<string, number>();
    const maxActive = new Map<string, number>();
    const done: string[] = [];
    const laneOf = (k: string): string => k.split('-')[0] as string;
    const q = new WorkQueue(
      async (k) => {
        const lane = laneOf(k);
        active.set(lane, (active.get(lane) ?? 0) + 1);
        maxActive.set(lane, Math.max(maxActive.get(lane) ?? 0, active.get(lane) ?? 0));
        if (lane === 'consul') await slow.promise;
        else await new Promise((r) => setImmediate(r));
        active.set(lane, (active.get(lane) ?? 0) - 1);
        done.push(k);
        return undefined;
      },
      { concurrency: 2, lane: laneOf },
    );
    for (let i = 0; i < 5; i++) q.add(`consul-${i}`);
    for (let i = 0; i < 5; i++) q.add(`etcd-${i}`);
    // Every etcd key finishes while the slow lane's workers are all held and three of its keys wait.
    for (let i = 0; i < 50 && done.length < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(done, ['etcd-0', 'etcd-1', 'etcd-2', 'etcd-3', 'etcd-4']);
    assert.equal(q.depth, 5, 'the slow lane: two running, three waiting');
    assert.equal(active.get('consul'), 2);
    slow.resolve();
    await q.idle();
    assert.equal(done.length, 10);
    assert.equal(maxActive.get('consul'), 2, 'the bound holds within a lane');
    assert.equal(maxActive.get('etcd'), 2);
  });

  test('lanes: a key moving to another lane while it runs is never run twice at once', async () => {
    let lane = 'a';
    const k = firstRunHeld();
    const q = new WorkQueue(k.handler, { concurrency: 4, lane: () => lane });
    q.add('k');
    await new Promise((r) => setImmediate(r));
    lane = 'b';
    q.add('k');
    await new Promise((r) => setImmediate(r));
    assert.equal(k.runs, 1, 'the add while it runs waits for the run to end, whatever its lane now');
    k.gate.resolve();
    await q.idle();
    assert.equal(k.runs, 2);
    assert.equal(k.maxActive, 1);
    await q.shutdown();
  });

  test('backoff is capped at the maximum', () => {
    const q = new WorkQueue(async () => undefined, { concurrency: 1, baseBackoffMs: 100, maxBackoffMs: 1000, random: () => 0.5 });
    assert.equal(q.backoffMs(1), 100);
    assert.equal(q.backoffMs(20), 1000);
  });
});

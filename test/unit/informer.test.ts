/**
 * The informer's restarts (src/kube/informer.ts), driven by a fake clock and a scripted list and
 * watch in place of the apiserver: quick ends and failures back off, a healthy watch resets the
 * backoff, and 410 Gone relists.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { Clock } from '../../src/clock.ts';
import { DEFAULT_INFORMER_RETRY, Informer, type CachedObject, type ListPage, type WatchFn } from '../../src/kube/informer.ts';

/** A clock whose timers fire only when the test advances time. */
class FakeClock implements Clock {
  #now = 0;
  #timers: { at: number; ms: number; fn: () => void; id: number }[] = [];
  #next = 0;
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.push({ at: this.#now + ms, ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle);
  }
  /** Moves time on, firing the timers that fall due. */
  advance(ms: number): void {
    this.#now += ms;
    const due = this.#timers.filter((t) => t.at <= this.#now);
    this.#timers = this.#timers.filter((t) => t.at > this.#now);
    for (const t of due) t.fn();
  }
  /** The delays the pending timers were set with. */
  get pending(): number[] {
    return this.#timers.map((t) => t.ms);
  }
}

interface Obj extends CachedObject {
  readonly metadata: { readonly name: string; readonly resourceVersion: string };
}

const obj = (name: string, resourceVersion: string): Obj => ({ metadata: { name, resourceVersion } });

/** One watch the informer started; the test plays the server's side of it. */
interface FakeWatch {
  readonly params: Record<string, string | number | boolean>;
  readonly aborted: boolean;
  event(phase: string, o: unknown): void;
  /** Ends the watch: null for a clean end, else the error. */
  end(err: unknown): void;
}

/** The apiserver's side, scripted: what a list returns, and every watch started. */
class FakeApi {
  lists = 0;
  listed: Obj[] = [];
  listVersion = '10';
  readonly watches: FakeWatch[] = [];

  readonly list = async (): Promise<ListPage<Obj>> => {
    this.lists++;
    return { items: this.listed, metadata: { resourceVersion: this.listVersion } };
  };

  readonly watch: WatchFn = async (_path, params, onEvent, done) => {
    const controller = new AbortController();
    this.watches.push({
      params,
      get aborted() {
        return controller.signal.aborted;
      },
      event: onEvent,
      end: done,
    });
    return controller;
  };

  /** The watch started last. */
  get current(): FakeWatch {
    const w = this.watches.at(-1);
    assert.ok(w, 'a watch was started');
    return w;
  }
}

/** Lets the informer's promise callbacks run (no time passes on the fake clock). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

const serverError = (): Error => Object.assign(new Error('Internal Server Error'), { statusCode: 500 });

async function startInformer(
  random = (): number => 0.5,
): Promise<{ informer: Informer<Obj, Obj>; api: FakeApi; clock: FakeClock; errors: number[]; events: string[] }> {
  const api = new FakeApi();
  api.listed = [obj('a', '5'), obj('b', '6')];
  const clock = new FakeClock();
  const errors: number[] = [];
  const events: string[] = [];
  const informer = new Informer<Obj, Obj>({
    name: 'test',
    kubeConfig: new KubeConfig(),
    path: '/api/v1/things',
    list: api.list,
    watch: api.watch,
    clock,
    random,
    transform: (o) => o,
    logger: pino({ level: 'silent' }),
    onError: (_err, retryInMs) => errors.push(retryInMs),
  });
  informer.on({
    add: (o) => events.push(`add ${o.metadata.name}`),
    update: (o) => events.push(`update ${o.metadata.name}`),
    delete: (o) => events.push(`delete ${o.metadata.name}`),
  });
  await informer.start();
  await settle();
  assert.equal(api.watches.length, 1, 'the first list is followed by a watch');
  return { informer, api, clock, errors, events };
}

/**
 * Ends the current watch `times` times with `end`, each time reading the delay the informer
 * scheduled and letting it pass; returns the delays.
 */
async function restartDelays(api: FakeApi, clock: FakeClock, times: number, end: (w: FakeWatch) => void): Promise<number[]> {
  const delays: number[] = [];
  for (let i = 0; i < times; i++) {
    const watches = api.watches.length;
    end(api.current);
    await settle();
    assert.equal(api.watches.length, watches, `restart ${i + 1} waits for a delay instead of watching again at once`);
    assert.equal(clock.pending.length, 1, `restart ${i + 1} is scheduled once`);
    const [delay = 0] = clock.pending;
    delays.push(delay);
    clock.advance(delay);
    await settle();
    assert.equal(api.watches.length, watches + 1, `after its delay, restart ${i + 1} watches again`);
  }
  return delays;
}

const { initialDelayMs, maxDelayMs, healthyAfterMs } = DEFAULT_INFORMER_RETRY;
/** The delays at the jitter's midpoint: the policy's exact steps. */
const growing = [
  initialDelayMs,
  2 * initialDelayMs,
  4 * initialDelayMs,
  8 * initialDelayMs,
  16 * initialDelayMs,
  32 * initialDelayMs,
  maxDelayMs,
  maxDelayMs,
];

describe('Informer restarts', () => {
  test('a watch that keeps ending cleanly as soon as it started is restarted after growing delays, up to the cap', async () => {
    const { informer, api, clock, events } = await startInformer();
    try {
      assert.deepEqual(await restartDelays(api, clock, growing.length, (w) => w.end(null)), growing);
      assert.equal(api.lists, 1, 'a clean end resumes the watch without relisting');
      assert.ok(
        api.watches.every((w) => w.params['resourceVersion'] === '10'),
        'every restart resumes from the listed resource version',
      );
      assert.deepEqual(events, ['add a', 'add b']);
    } finally {
      informer.stop();
    }
  });

  test('jitter spreads each delay by up to a fifth of its step, and never past the cap', async () => {
    const jittered = async (random: number): Promise<number[]> => {
      const { informer, api, clock } = await startInformer(() => random);
      try {
        return await restartDelays(api, clock, growing.length, (w) => w.end(serverError()));
      } finally {
        informer.stop();
      }
    };
    const low = await jittered(0);
    const high = await jittered(0.999);
    growing.forEach((step, i) => {
      assert.ok(
        (low[i] ?? 0) >= Math.min(0.8 * step, maxDelayMs) && (low[i] ?? 0) <= step,
        `restart ${i + 1}: ${low[i]} ms for a ${step} ms step`,
      );
      assert.ok(
        (high[i] ?? Infinity) >= step && (high[i] ?? Infinity) <= Math.min(1.2 * step, maxDelayMs),
        `restart ${i + 1}: ${high[i]} ms for a ${step} ms step`,
      );
    });
    assert.equal(high.at(-1), maxDelayMs);
  });

  for (const { how, end } of [
    { how: 'an HTTP 500 answer to the watch request', end: (w: FakeWatch) => w.end(serverError()) },
    {
      how: 'an ERROR event with code 500 followed by a clean close',
      end: (w: FakeWatch) => {
        w.event('ERROR', { kind: 'Status', status: 'Failure', code: 500, message: 'etcdserver: request timed out' });
        w.end(null);
      },
    },
  ]) {
    test(`a watch that keeps failing with ${how} backs off exponentially, up to the cap, and reports each failure`, async () => {
      const { informer, api, clock, errors } = await startInformer();
      try {
        assert.deepEqual(await restartDelays(api, clock, growing.length, end), growing);
        assert.deepEqual(errors, growing, 'onError gets every failure with its delay');
        assert.equal(api.lists, 1, 'a 500 keeps the resource version');
      } finally {
        informer.stop();
      }
    });
  }

  test('a watch that ended cleanly after a healthy period is resumed at once, and the backoff starts over', async () => {
    const { informer, api, clock } = await startInformer();
    try {
      assert.deepEqual(await restartDelays(api, clock, 4, (w) => w.end(serverError())), growing.slice(0, 4));
      api.current.event('ADDED', obj('c', '11'));
      clock.advance(healthyAfterMs);
      const watches = api.watches.length;
      api.current.end(null);
      await settle();
      assert.deepEqual(clock.pending, [], 'no delay after a healthy watch');
      assert.equal(api.watches.length, watches + 1, 'watching again at once');
      assert.equal(api.current.params['resourceVersion'], '11', 'from the last resource version seen');
      assert.deepEqual(
        await restartDelays(api, clock, 2, (w) => w.end(serverError())),
        growing.slice(0, 2),
        'later failures start from the initial delay again',
      );
    } finally {
      informer.stop();
    }
  });

  test('a watch that failed after a healthy period is retried after the initial delay, not the grown one', async () => {
    const { informer, api, clock } = await startInformer();
    try {
      assert.deepEqual(await restartDelays(api, clock, 5, (w) => w.end(serverError())), growing.slice(0, 5));
      clock.advance(healthyAfterMs);
      assert.deepEqual(await restartDelays(api, clock, 2, (w) => w.end(serverError())), growing.slice(0, 2));
    } finally {
      informer.stop();
    }
  });

  for (const { how, gone } of [
    {
      how: 'a 410 ERROR event',
      gone: (w: FakeWatch) => {
        w.event('ERROR', { kind: 'Status', status: 'Failure', code: 410, reason: 'Expired', message: 'too old resource version: 10 (20)' });
        w.end(null);
      },
    },
    { how: 'an HTTP 410 answer', gone: (w: FakeWatch) => w.end(Object.assign(new Error('Gone'), { statusCode: 410 })) },
  ]) {
    test(`${how} on a healthy watch relists at once, drops what was deleted meanwhile and watches from the new resource version`, async () => {
      const { informer, api, clock, events } = await startInformer();
      try {
        clock.advance(healthyAfterMs);
        api.listed = [obj('a', '5'), obj('c', '18')];
        api.listVersion = '20';
        gone(api.current);
        await settle();
        assert.deepEqual(clock.pending, []);
        assert.equal(api.lists, 2, 'relisted');
        assert.deepEqual(events, ['add a', 'add b', 'add c', 'delete b']);
        assert.deepEqual(
          informer.list().map((o) => o.metadata.name),
          ['a', 'c'],
        );
        assert.equal(api.watches.length, 2);
        assert.equal(api.current.params['resourceVersion'], '20');
      } finally {
        informer.stop();
      }
    });
  }

  test('a 410 right after the watch started relists too, but after a delay, so a relist loop backs off', async () => {
    const { informer, api, clock } = await startInformer();
    try {
      const delays = await restartDelays(api, clock, 3, (w) => {
        w.event('ERROR', { kind: 'Status', code: 410, reason: 'Expired' });
        w.end(null);
      });
      assert.deepEqual(delays, growing.slice(0, 3));
      assert.equal(api.lists, 4, 'every 410 relists');
    } finally {
      informer.stop();
    }
  });

  test('stop() cancels a pending restart', async () => {
    const { informer, api, clock } = await startInformer();
    api.current.end(serverError());
    await settle();
    assert.equal(clock.pending.length, 1);
    informer.stop();
    assert.deepEqual(clock.pending, []);
  });

  test('stop() aborts the running watch, and its end then schedules nothing', async () => {
    const { informer, api, clock } = await startInformer();
    const running = api.current;
    informer.stop();
    assert.equal(running.aborted, true);
    running.end(Object.assign(new Error('This operation was aborted'), { name: 'AbortError' }));
    await settle();
    assert.deepEqual(clock.pending, []);
    assert.equal(api.watches.length, 1);
  });
});

import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';

import type { KeepaliveStream } from '../../src/registry/etcd/client.ts';
import { LeaseKeepalive } from '../../src/registry/etcd/keepalive.ts';
import type { IntervalTimers } from '../../src/clock.ts';
import { silentLogger } from '../../src/registry/logger.ts';

/** Interval timers that fire only when the test says an interval has passed. */
class FakeClock implements IntervalTimers {
  readonly #timers = new Map<number, () => void>();
  #nextHandle = 1;

  setInterval(fn: () => void): unknown {
    const handle = this.#nextHandle++;
    this.#timers.set(handle, fn);
    return handle;
  }

  clearInterval(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  get timers(): number {
    return this.#timers.size;
  }

  /** One interval passes: every timer fires once. */
  interval(): void {
    for (const fn of [...this.#timers.values()]) fn();
  }
}

/** A keepalive stream that records what is sent and answers only when told to. */
class FakeStream extends EventEmitter {
  readonly sent: string[] = [];
  cancelled = false;

  write(req: { ID: string }): boolean {
    this.sent.push(req.ID);
    return true;
  }

  cancel(): void {
    this.cancelled = true;
  }

  /** etcd answers for lease `id` with the TTL it has left (0: the lease is gone). */
  answer(id: bigint, ttlSeconds: number): void {
    this.emit('data', { ID: id.toString(), TTL: String(ttlSeconds) });
  }
}

/** Opens a fresh fake stream on every call. */
class FakeSource {
  readonly streams: FakeStream[] = [];

  openKeepaliveStream(): Promise<KeepaliveStream> {
    const stream = new FakeStream();
    this.streams.push(stream);
    return Promise.resolve(stream as unknown as KeepaliveStream);
  }

  get latest(): FakeStream {
    const stream = this.streams.at(-1);
    assert.ok(stream, 'a stream was opened');
    return stream;
  }
}

/** Lets the callbacks of an opened stream run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function keeper(overrides: { onLost?: (id: bigint) => void; onRenewed?: (id: bigint) => void; onFailure?: () => void } = {}) {
  const clock = new FakeClock();
  const source = new FakeSource();
  const keepalive = new LeaseKeepalive({ source, clock, intervalMs: 10_000, logger: silentLogger, onLost: () => undefined, ...overrides });
  return { clock, source, keepalive };
}

void describe('etcd lease keepalive', () => {
  void it('renews every lease once when added and once on every interval, and reports each renewal', async () => {
    const renewed: bigint[] = [];
    const { clock, source, keepalive } = keeper({ onRenewed: (id) => renewed.push(id) });
    keepalive.add(7n);
    keepalive.add(9n);
    await settle();
    const stream = source.latest;
    assert.deepEqual([...stream.sent].sort(), ['7', '9']);
    for (let i = 0; i < 3; i++) {
      clock.interval();
      stream.answer(7n, 30);
      stream.answer(9n, 30);
    }
    assert.deepEqual([...stream.sent].sort(), ['7', '7', '7', '7', '9', '9', '9', '9']);
    assert.deepEqual(renewed.sort(), [7n, 7n, 7n, 9n, 9n, 9n]);
    assert.equal(source.streams.length, 1);
    keepalive.close();
  });

  void it('reopens a stream that has not answered for two intervals, and renews on the new one', async () => {
    let failures = 0;
    const { clock, source, keepalive } = keeper({ onFailure: () => failures++ });
    keepalive.add(7n);
    await settle();
    const silent = source.latest;
    clock.interval();
    clock.interval();
    assert.equal(silent.cancelled, false, 'two silent intervals are tolerated');
    clock.interval();
    assert.equal(silent.cancelled, true);
    assert.equal(failures, 1);
    await settle();
    assert.equal(source.streams.length, 2);
    assert.deepEqual(source.latest.sent, ['7']);
    keepalive.close();
  });

  void it('keeps a stream that answers, however many intervals pass', async () => {
    const { clock, source, keepalive } = keeper();
    keepalive.add(7n);
    await settle();
    for (let i = 0; i < 10; i++) {
      clock.interval();
      source.latest.answer(7n, 30);
    }
    assert.equal(source.streams.length, 1);
    keepalive.close();
  });

  void it('reports a lease lost when etcd answers with TTL 0, and stops renewing it', async () => {
    const lost: bigint[] = [];
    let failures = 0;
    const { clock, source, keepalive } = keeper({ onLost: (id) => lost.push(id), onFailure: () => failures++ });
    keepalive.add(7n);
    keepalive.add(9n);
    await settle();
    const stream = source.latest;
    stream.answer(7n, 0);
    assert.deepEqual(lost, [7n]);
    assert.equal(failures, 1);
    assert.equal(keepalive.has(7n), false);
    assert.equal(keepalive.size, 1);
    stream.sent.length = 0;
    clock.interval();
    assert.deepEqual(stream.sent, ['9']);
    stream.answer(7n, 0);
    assert.deepEqual(lost, [7n], 'a lease is reported lost once');
    keepalive.close();
  });

  void it('stops its timer and stream on close and renews nothing afterwards', async () => {
    const { clock, source, keepalive } = keeper();
    keepalive.add(7n);
    await settle();
    assert.equal(clock.timers, 1);
    keepalive.close();
    assert.equal(clock.timers, 0);
    assert.equal(source.latest.cancelled, true);
    keepalive.add(9n);
    assert.equal(keepalive.size, 0);
    assert.equal(clock.timers, 0);
  });
});

/**
 * The write-behind of ServiceInstance finalizers and status: the reconciler never waits for the
 * apiserver, only the newest status of an object is written, failed writes are retried until they
 * land, and a status on its way is what the reconciler compares against.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';

import { FINALIZER, type ServiceInstance, type ServiceInstanceStatus } from '../../src/api/v1alpha1/types.ts';
import { sameStatus, WriteBehind, type ServiceInstanceApi } from '../../src/controller/write-behind.ts';
import { staticServiceInstance } from '../support/resources.ts';

function status(entries: number): ServiceInstanceStatus {
  return { observedGeneration: 1, endpoints: { total: entries, ready: entries, registered: entries } };
}

/** An apiserver stand-in whose writes wait for `release()` and can be made to fail. */
class RecordingApi implements ServiceInstanceApi {
  readonly writes: string[] = [];
  failures = 0;
  #gate: Promise<void> = Promise.resolve();
  #open: () => void = () => undefined;

  hold(): void {
    this.#gate = new Promise((resolve) => (this.#open = resolve));
  }

  release(): void {
    this.#open();
  }

  async #write(what: string): Promise<void> {
    await this.#gate;
    if (this.failures > 0) {
      this.failures--;
      throw Object.assign(new Error('the apiserver is unavailable'), { code: 503 });
    }
    this.writes.push(what);
  }

  addFinalizer(si: ServiceInstance): Promise<unknown> {
    return this.#write(`finalizer ${si.metadata?.name ?? ''}`);
  }

  removeFinalizer(si: ServiceInstance): Promise<void> {
    return this.#write(`remove finalizer ${si.metadata?.name ?? ''}`);
  }

  patchStatus(si: ServiceInstance, s: ServiceInstanceStatus): Promise<void> {
    return this.#write(`status ${si.metadata?.name ?? ''} ${s.endpoints?.registered ?? -1}`);
  }
}

function byKey(objects: readonly ServiceInstance[], key: string): ServiceInstance | undefined {
  return objects.find((o) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}` === key);
}

async function until(what: string | (() => string), check: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await sleep(20);
  }
  assert.fail(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
}

void describe('WriteBehind', () => {
  void it('hands status and finalizer over at once, and writes only the newest status of an object', async () => {
    const api = new RecordingApi();
    const si = staticServiceInstance('prod', 'api', 'api');
    const other = staticServiceInstance('prod', 'web', 'web');
    // One status in flight at a time: the first object's write holds the lane while the second's are queued.
    const writer = new WriteBehind({ api, lookup: (key) => byKey([si, other], key), logger: pino({ level: 'silent' }), concurrency: 1 });
    api.hold();
    await writer.patchStatus(other, status(9));
    await until('the first write to be under way', () => writer.depth === 1);
    // Queued while the apiserver is slow: the reconciler is not held up, and 1 is superseded by 2.
    await writer.addFinalizer(si, FINALIZER);
    await writer.patchStatus(si, status(1));
    await writer.patchStatus(si, status(2));
    assert.deepEqual(writer.intendedStatus(si), status(2), 'the status on its way is what the reconciler compares against');
    api.release();
    await until(
      () => `both objects to be written (${api.writes.join(', ')})`,
      () => api.writes.length === 3,
    );
    assert.deepEqual([...api.writes].sort(), ['finalizer api', 'status api 2', 'status web 9']);
    assert.equal(writer.intendedStatus(si)?.endpoints?.registered, 2, 'until the cache shows it, the written status stands in');
    await writer.shutdown();
  });

  void it('writes finalizers one at a time while statuses wait, and a quarter of the concurrency once they are written', async () => {
    // Each write waits until the test opens it by name.
    const gates = new Map<string, () => void>();
    const started: string[] = [];
    let finalizersRunning = 0;
    const held = (what: string): Promise<void> => {
      started.push(what);
      return new Promise((resolve) => gates.set(what, resolve));
    };
    const api: ServiceInstanceApi = {
      addFinalizer: async (si) => {
        finalizersRunning++;
        try {
          await held(`finalizer ${si.metadata?.name ?? ''}`);
        } finally {
          finalizersRunning--;
        }
      },
      removeFinalizer: () => Promise.resolve(),
      patchStatus: (si) => held(`status ${si.metadata?.name ?? ''}`),
    };
    const objects = ['a', 'b', 'c', 'd'].map((name) => staticServiceInstance('prod', name, name));
    const [a, b, c, d] = objects as [ServiceInstance, ServiceInstance, ServiceInstance, ServiceInstance];
    const writer = new WriteBehind({ api, lookup: (key) => byKey(objects, key), logger: pino({ level: 'silent' }), concurrency: 8 });
    assert.equal(writer.finalizerConcurrency, 2, 'a quarter of the concurrency while no status waits');

    await writer.patchStatus(a, status(1));
    for (const si of [b, c, d]) await writer.addFinalizer(si, FINALIZER);
    await until('the status and a finalizer to be under way', () => started.includes('status a') && finalizersRunning === 1);
    await sleep(100);
    assert.equal(finalizersRunning, 1, 'one finalizer at a time while a status is being written');
    assert.equal(writer.finalizerConcurrency, 1);

    gates.get('status a')?.();
    await until(
      () => `two finalizers under way once the status was written (${finalizersRunning})`,
      () => finalizersRunning === 2,
    );
    assert.equal(writer.finalizerConcurrency, 2);
    for (const name of ['b', 'c', 'd']) {
      await until(`the finalizer of ${name} to start`, () => gates.has(`finalizer ${name}`));
      gates.get(`finalizer ${name}`)?.();
    }
    await until('every finalizer written', () => finalizersRunning === 0 && started.length === 4);
    await writer.shutdown();
  });

  void it('retries a failed write until it lands, unless a newer status replaced it meanwhile', async () => {
    const api = new RecordingApi();
    const si = staticServiceInstance('prod', 'api', 'api');
    const writer = new WriteBehind({ api, lookup: () => si, logger: pino({ level: 'silent' }), concurrency: 2 });
    api.failures = 2;
    await writer.patchStatus(si, status(1));
    await until('the status to land after two failures', () => api.writes.length === 1);
    assert.deepEqual(api.writes, ['status api 1']);
    assert.equal(api.failures, 0, 'both failures were retried');
    await writer.shutdown();
  });

  void it('writes nothing for an object that is gone, or whose cached status already is the one queued', async () => {
    const api = new RecordingApi();
    const current = { ...staticServiceInstance('prod', 'api', 'api', { finalizers: [FINALIZER] }), status: status(3) };
    const objects = new Map<string, ServiceInstance>([['prod/api', current]]);
    const writer = new WriteBehind({ api, lookup: (key) => objects.get(key), logger: pino({ level: 'silent' }), concurrency: 2 });
    await writer.addFinalizer(current, FINALIZER);
    await writer.patchStatus(current, status(3));
    const gone = staticServiceInstance('prod', 'gone', 'gone');
    await writer.patchStatus(gone, status(1));
    const later = staticServiceInstance('prod', 'later', 'later');
    objects.set('prod/later', later);
    await writer.patchStatus(later, status(5));
    await until('the last object to be written', () => api.writes.length === 1);
    assert.deepEqual(api.writes, ['status later 5'], 'the finalizer and status already there and the deleted object cost no write');
    await writer.shutdown();
  });

  void it('removes a finalizer at once and drops the status still queued for the object', async () => {
    const api = new RecordingApi();
    const si = staticServiceInstance('prod', 'api', 'api', { finalizers: [FINALIZER] });
    const other = staticServiceInstance('prod', 'web', 'web');
    const writer = new WriteBehind({ api, lookup: (key) => byKey([si, other], key), logger: pino({ level: 'silent' }), concurrency: 1 });
    api.hold();
    await writer.patchStatus(other, status(9));
    await until('the first write to be under way', () => writer.depth === 1);
    await writer.patchStatus(si, status(1));
    const removal = writer.removeFinalizer(si, FINALIZER);
    api.release();
    await removal;
    await until('the queue to drain', () => writer.depth === 0);
    assert.deepEqual(api.writes.sort(), ['remove finalizer api', 'status web 9']);
    await writer.shutdown();
  });

  void it('forgets a written status after the memory period even when nothing else is written', async () => {
    const api = new RecordingApi();
    const si = staticServiceInstance('prod', 'api', 'api');
    const writer = new WriteBehind({ api, lookup: () => si, logger: pino({ level: 'silent' }), concurrency: 1, writtenMemoryMs: 200 });
    await writer.patchStatus(si, status(3));
    await until('the status to be written', () => api.writes.length === 1);
    assert.equal(writer.remembered, 1, 'remembered until the cache shows it');
    assert.equal(writer.intendedStatus(si)?.endpoints?.registered, 3);
    // No reconcile and no other write comes: the timer alone lets it go.
    await until(
      () => `the written status to be forgotten (${writer.remembered} remembered)`,
      () => writer.remembered === 0,
    );
    assert.equal(writer.intendedStatus(si), undefined);
    await writer.shutdown();
  });
});

describe('sameStatus', () => {
  it('compares as JSON would, whatever the order of keys', () => {
    const built = { observedGeneration: 2, conditions: [{ type: 'Ready', status: 'True', reason: 'Registered' }], endpoints: { total: 1 } };
    const stored = {
      endpoints: { total: 1 },
      conditions: [{ reason: 'Registered', status: 'True', type: 'Ready' }],
      observedGeneration: 2,
    };
    assert.equal(sameStatus(built, stored), true, 'same fields in another order');
    assert.equal(sameStatus({ a: 1, b: undefined }, { a: 1 }), true, 'a field set to undefined is absent');
    assert.equal(sameStatus(undefined, {}), true, 'no status is an empty one');
    assert.equal(sameStatus({ a: [1, undefined] }, { a: [1, null] }), true, 'undefined in an array is null, as in JSON');
  });

  it('tells apart every difference JSON would show', () => {
    const base = { observedGeneration: 2, conditions: [{ type: 'Ready', status: 'True' }], endpoints: { total: 1 } };
    assert.equal(sameStatus(base, { ...base, observedGeneration: 3 }), false, 'a value');
    assert.equal(sameStatus(base, { ...base, extra: 0 }), false, 'a field more');
    assert.equal(sameStatus({ ...base, extra: 0 }, base), false, 'a field less');
    assert.equal(sameStatus(base, { ...base, conditions: [{ type: 'Ready', status: 'False' }] }), false, 'deep in an array');
    assert.equal(sameStatus({ a: [1, 2] }, { a: [2, 1] }), false, 'the order of an array');
    assert.equal(sameStatus({ a: [1] }, { a: [1, 1] }), false, 'the length of an array');
    assert.equal(sameStatus({ a: null }, {}), false, 'null is a value');
    assert.equal(sameStatus({ a: '1' }, { a: 1 }), false, 'a string is not a number');
    assert.equal(sameStatus({ a: [] }, { a: {} }), false, 'an array is not an object');
    assert.equal(sameStatus({ a: {} }, { a: [] }), false, 'an object is not an array');
  });
});

import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';

import { silentLogger } from '../../src/registry/logger.ts';
import { HeartbeatKeeper } from '../../src/registry/consul/heartbeat.ts';

/** Lets promise callbacks queued by a tick run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

void describe('Consul heartbeat keeper', () => {
  void it('passes each heartbeat once per interval, however many there are', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const beats: string[] = [];
    const keeper = new HeartbeatKeeper({
      intervalMs: 1000,
      logger: silentLogger,
      beat: (ns) => (beats.push(ns), Promise.resolve()),
      onFailure: () => undefined,
    });
    keeper.add('dev');
    keeper.add('prod');
    keeper.add('prod');
    for (let i = 0; i < 3; i++) {
      t.mock.timers.tick(1000);
      await settle();
    }
    assert.deepEqual(beats.sort(), ['dev', 'dev', 'dev', 'prod', 'prod', 'prod']);
    await keeper.close();
  });

  void it('reports a failed pass and keeps passing on the next interval', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const failures: unknown[] = [];
    let calls = 0;
    const keeper = new HeartbeatKeeper({
      intervalMs: 1000,
      logger: silentLogger,
      beat: () => (++calls === 1 ? Promise.reject(new Error('agent down')) : Promise.resolve()),
      onFailure: (_ns, err) => failures.push(err),
    });
    keeper.add('prod');
    t.mock.timers.tick(1000);
    await settle();
    t.mock.timers.tick(1000);
    await settle();
    assert.equal(calls, 2);
    assert.equal(failures.length, 1);
    await keeper.close();
  });

  void it('never has two passes of one heartbeat under way at once', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    let release: () => void = () => undefined;
    let calls = 0;
    const keeper = new HeartbeatKeeper({
      intervalMs: 1000,
      logger: silentLogger,
      beat: () => {
        calls++;
        return new Promise<void>((resolve) => (release = resolve));
      },
      onFailure: () => undefined,
    });
    keeper.add('prod');
    t.mock.timers.tick(1000);
    t.mock.timers.tick(1000);
    assert.equal(calls, 1);
    release();
    await settle();
    t.mock.timers.tick(1000);
    assert.equal(calls, 2);
    release();
    await keeper.close();
  });

  void it('stops passing a deleted heartbeat, and everything on close', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const beat = mock.fn((_ns: string) => Promise.resolve());
    const keeper = new HeartbeatKeeper({ intervalMs: 1000, logger: silentLogger, beat, onFailure: () => undefined });
    keeper.add('dev');
    keeper.add('prod');
    keeper.delete('dev');
    t.mock.timers.tick(1000);
    await settle();
    assert.deepEqual(
      beat.mock.calls.map((c) => c.arguments[0]),
      ['prod'],
    );
    await keeper.close();
    t.mock.timers.tick(5000);
    assert.equal(beat.mock.callCount(), 1);
    keeper.add('prod');
    assert.equal(keeper.has('prod'), false);
  });
});

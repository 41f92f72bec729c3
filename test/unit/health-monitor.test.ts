import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';

import { HealthMonitor, PROBE_TICK_MS, type ProbeOutcomeLabel } from '../../src/health/monitor.ts';
import type { ProbeOptions, ProbeResult } from '../../src/health/probe.ts';
import type { EndpointAddress } from '../../src/health/state.ts';
import { withDefaults, type ResolvedHealthCheck } from '../../src/health/types.ts';
import { FakeClock, settle } from '../support/fake-clock.ts';

const check = (timing: { intervalSeconds?: number; failureThreshold?: number; successThreshold?: number } = {}): ResolvedHealthCheck =>
  withDefaults({ tcp: {}, intervalSeconds: 10, ...timing });

const ep = (n: number): EndpointAddress => ({ address: `10.0.0.${n}`, port: 8080 });

/** A monitor on a fake clock whose probes answer what `healthy` says for the endpoint at that moment. */
function harness(options: { concurrency?: number; random?: () => number } = {}) {
  const clock = new FakeClock();
  const healthy = new Map<string, boolean>();
  const probes: { at: number; endpoint: string }[] = [];
  const changes: string[] = [];
  const outcomes: ProbeOutcomeLabel[] = [];
  let hang: Promise<void> | undefined;
  let inFlight = 0;
  let maxInFlight = 0;
  const monitor = new HealthMonitor({
    clock,
    concurrency: options.concurrency ?? 16,
    logger: pino({ level: 'silent' }),
    random: options.random ?? (() => 0),
    onChange: (owner) => changes.push(owner),
    observer: { probe: (outcome) => outcomes.push(outcome) },
    probe: async (endpoint: EndpointAddress, _check: ResolvedHealthCheck, probeOptions: ProbeOptions): Promise<ProbeResult> => {
      const key = `${endpoint.address}:${endpoint.port}`;
      probes.push({ at: clock.now(), endpoint: key });
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        if (hang) {
          await Promise.race([
            hang,
            new Promise<void>((resolve) => probeOptions.signal?.addEventListener('abort', () => resolve(), { once: true })),
          ]);
        }
        const ok = healthy.get(key) ?? true;
        return { healthy: ok, message: ok ? 'connected' : 'connect ECONNREFUSED', durationMs: 1, timedOut: false };
      } finally {
        inFlight--;
      }
    },
  });
  return {
    clock,
    monitor,
    healthy,
    probes,
    changes,
    outcomes,
    get maxInFlight() {
      return maxInFlight;
    },
    hold(): () => void {
      let release!: () => void;
      hang = new Promise((resolve) => (release = resolve));
      return () => {
        hang = undefined;
        release();
      };
    },
  };
}

describe('HealthMonitor', () => {
  it('probes a new endpoint within its first interval, then once per interval, and reports it healthy after its first success', async () => {
    // random 0.5: the first probe at 5 s, then every 9.5 s (intervals are up to 10 % early, never late).
    const h = harness({ random: () => 0.5 });
    const verdicts = h.monitor.track('ns/a', check(), [ep(1)]);
    assert.equal(verdicts.get('10.0.0.1:8080')?.status, 'unknown', 'not healthy before any probe');
    await h.clock.advance(4999);
    assert.equal(h.probes.length, 0, 'the first probe waits for its jittered moment');
    await h.clock.advance(1);
    assert.equal(h.probes.length, 1);
    assert.equal(h.monitor.view('ns/a').get('10.0.0.1:8080')?.status, 'healthy');
    assert.deepEqual(h.changes, ['ns/a']);
    await h.clock.advance(30_000);
    assert.deepEqual(
      h.probes.map((p) => p.at),
      [5000, 14_500, 24_000, 33_500],
    );
    assert.deepEqual(h.changes, ['ns/a'], 'no change is reported while the verdict holds');
    await h.monitor.stop();
  });

  it('spreads the first probes of many endpoints over the first interval', async () => {
    let i = 0;
    const h = harness({ random: () => (i++ % 100) / 100 });
    h.monitor.track(
      'ns/many',
      check(),
      Array.from({ length: 100 }, (_, n) => ({ address: `10.1.0.${n}`, port: 80 })),
    );
    await h.clock.advance(10_000);
    const first = new Map<string, number>();
    for (const p of h.probes) if (!first.has(p.endpoint)) first.set(p.endpoint, p.at);
    assert.equal(first.size, 100, 'every endpoint is probed within its first interval');
    const perSecond = new Map<number, number>();
    for (const at of first.values()) perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
    assert.ok(Math.max(...perSecond.values()) <= 10, `probes per second: ${JSON.stringify([...perSecond])}`);
    assert.ok(
      h.probes.every((p) => p.at % PROBE_TICK_MS === 0),
      'probes start on the grid, so those due together share a wake-up',
    );
    await h.monitor.stop();
  });

  it('ejects only after failureThreshold failures in a row and re-admits only after successThreshold successes', async () => {
    // random 0.999…: the first probe just before 10 s, then one every 10 s (to the ms).
    const h = harness({ random: () => 0.99999 });
    h.monitor.track('ns/b', check({ failureThreshold: 3, successThreshold: 2 }), [ep(2)]);
    await h.clock.advance(10_000);
    assert.equal(h.monitor.view('ns/b').get('10.0.0.2:8080')?.status, 'unknown', 'one success is below successThreshold 2');
    await h.clock.advance(10_000);
    assert.equal(h.monitor.view('ns/b').get('10.0.0.2:8080')?.status, 'healthy', 'two successes make it healthy');
    h.monitor.takeTransitions('ns/b');
    h.healthy.set('10.0.0.2:8080', false);
    await h.clock.advance(10_000);
    await h.clock.advance(10_000);
    assert.equal(h.monitor.view('ns/b').get('10.0.0.2:8080')?.status, 'healthy', 'two failures are below failureThreshold');
    await h.clock.advance(10_000);
    const down = h.monitor.view('ns/b').get('10.0.0.2:8080');
    assert.equal(down?.status, 'unhealthy');
    assert.equal(down?.lastMessage, 'connect ECONNREFUSED');
    assert.equal(down?.since, h.probes.at(-1)?.at, 'since is when the verdict changed: the third failing probe');
    assert.deepEqual(
      h.monitor.takeTransitions('ns/b').map((t) => [t.from, t.to, t.consecutive, t.message]),
      [['healthy', 'unhealthy', 3, 'connect ECONNREFUSED']],
    );
    h.healthy.set('10.0.0.2:8080', true);
    await h.clock.advance(10_000);
    assert.equal(h.monitor.view('ns/b').get('10.0.0.2:8080')?.status, 'unhealthy', 'one success is below successThreshold');
    await h.clock.advance(10_000);
    assert.equal(h.monitor.view('ns/b').get('10.0.0.2:8080')?.status, 'healthy');
    assert.deepEqual(h.outcomes.filter((o) => o === 'failure').length, 3);
    await h.monitor.stop();
  });

  it('keeps at most `concurrency` probes in flight and runs the rest as slots free up', async () => {
    const h = harness({ concurrency: 2 });
    const release = h.hold();
    h.monitor.track(
      'ns/c',
      check(),
      [1, 2, 3, 4, 5].map((n) => ep(n)),
    );
    await h.clock.advance(0);
    assert.equal(h.probes.length, 2, 'two probes started, three wait');
    assert.equal(h.monitor.waiting, 3);
    release();
    await settle();
    await h.clock.advance(0);
    assert.equal(h.probes.length, 5);
    assert.equal(h.maxInFlight, 2);
    await h.monitor.stop();
  });

  it('stops probing endpoints no longer listed and starts afresh when the check changes', async () => {
    const h = harness();
    h.monitor.track('ns/d', check(), [ep(1), ep(2)]);
    await h.clock.advance(0);
    assert.equal(h.probes.length, 2);
    h.monitor.track('ns/d', check(), [ep(1)]);
    await h.clock.advance(10_000);
    assert.deepEqual(
      h.probes.slice(2).map((p) => p.endpoint),
      ['10.0.0.1:8080'],
      'the dropped endpoint is not probed again',
    );
    assert.deepEqual([...h.monitor.view('ns/d').keys()], ['10.0.0.1:8080']);
    const verdicts = h.monitor.track('ns/d', check({ intervalSeconds: 5 }), [ep(1)]);
    assert.equal(verdicts.get('10.0.0.1:8080')?.status, 'unknown', 'a changed check judges afresh');
    h.monitor.untrack('ns/d');
    const before = h.probes.length;
    await h.clock.advance(60_000);
    assert.equal(h.probes.length, before, 'an untracked owner is not probed');
    assert.equal(h.monitor.tracks('ns/d'), false);
  });

  it('counts endpoints by verdict and owners in panic mode, and stop() cancels probes in flight', async () => {
    const h = harness();
    h.healthy.set('10.0.0.2:8080', false);
    h.monitor.track('ns/e', check({ failureThreshold: 1 }), [ep(1), ep(2), ep(3)]);
    h.monitor.setPanic('ns/e', true);
    await h.clock.advance(0);
    assert.deepEqual(h.monitor.counts(), { healthy: 2, unhealthy: 1, unknown: 0, panicking: 1 });
    h.hold();
    await h.clock.advance(10_000);
    assert.equal(h.maxInFlight, 3);
    await h.monitor.stop();
    assert.deepEqual(h.monitor.counts(), { healthy: 0, unhealthy: 0, unknown: 0, panicking: 0 });
    assert.equal(h.monitor.track('ns/e', check(), [ep(1)]).size, 0, 'a stopped monitor tracks nothing');
  });
});

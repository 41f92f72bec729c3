import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { pino } from 'pino';
import { LeaderElector, type LeaseApi } from '../../src/controller/leader.ts';
import type { Clock } from '../../src/clock.ts';
import { FakeClock } from '../support/fake-clock.ts';

const LEASE_DURATION_S = 15;
const RENEW_DEADLINE_S = 10;
const RETRY_PERIOD_S = 2;

type Call = 'read' | 'create' | 'replace';

function statusError(code: number): Error {
  return Object.assign(new Error(`HTTP ${code}`), { code });
}

/** How long a slow call takes to answer. */
const SLOW_MS = 7000;

/**
 * An apiserver's Lease endpoint in memory, with optimistic concurrency. Calls can be made to
 * fail, to answer slowly, or to hang: a hung call ignores its abort signal, as a request on a
 * black-holed link whose abort never reaches anything would, and answers only when the test
 * lets it.
 */
class FakeLeaseApi implements LeaseApi {
  lease: V1Lease | undefined;
  #version = 0;
  readonly #clock: Clock;
  readonly hang = new Set<Call>();
  readonly fail = new Set<Call>();
  readonly slow = new Set<Call>();
  readonly calls: { call: Call; at: number; signal: AbortSignal }[] = [];
  readonly #hung: (() => void)[] = [];

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  read(_namespace: string, _name: string, signal: AbortSignal): Promise<V1Lease> {
    return this.#call('read', signal, () => {
      if (!this.lease) throw statusError(404);
      return this.#copy(this.lease);
    });
  }

  create(_namespace: string, lease: V1Lease, signal: AbortSignal): Promise<V1Lease> {
    return this.#call('create', signal, () => {
      if (this.lease) throw statusError(409);
      return this.#store(lease);
    });
  }

  replace(_namespace: string, _name: string, lease: V1Lease, signal: AbortSignal): Promise<V1Lease> {
    return this.#call('replace', signal, () => {
      if (lease.metadata?.resourceVersion !== this.lease?.metadata?.resourceVersion) throw statusError(409);
      return this.#store(lease);
    });
  }

  /** Writes the record as another process would. */
  write(spec: NonNullable<V1Lease['spec']>): void {
    this.#store({ metadata: { name: 'lease', namespace: 'ns' }, spec });
  }

  /** Lets every hung call answer now (with what the server holds now). */
  answerHungCalls(): void {
    for (const answer of this.#hung.splice(0)) answer();
  }

  get holder(): string | undefined {
    return this.lease?.spec?.holderIdentity;
  }

  #store(lease: V1Lease): V1Lease {
    this.lease = { ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.#version) } };
    return this.#copy(this.lease);
  }

  #copy(lease: V1Lease): V1Lease {
    return { ...lease, metadata: { ...lease.metadata }, spec: { ...lease.spec } };
  }

  #call<T>(call: Call, signal: AbortSignal, answer: () => T): Promise<T> {
    this.calls.push({ call, at: this.#clock.now(), signal });
    if (this.fail.has(call)) return Promise.reject(statusError(500));
    if (!this.hang.has(call) && !this.slow.has(call)) return Promise.resolve().then(answer);
    return new Promise<T>((resolve, reject) => {
      const respond = (): void => {
        try {
          resolve(answer());
        } catch (err: unknown) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      };
      if (this.hang.has(call)) this.#hung.push(respond);
      else this.#clock.setTimeout(respond, SLOW_MS);
    });
  }
}

/** An elector on the fake clock and API, recording when it started and stopped leading. */
function candidate(clock: FakeClock, api: FakeLeaseApi, identity: string): { elector: LeaderElector; events: string[] } {
  const events: string[] = [];
  const elector = new LeaderElector({
    kubeConfig: new KubeConfig(),
    namespace: 'ns',
    name: 'lease',
    leaseDurationSeconds: LEASE_DURATION_S,
    renewDeadlineSeconds: RENEW_DEADLINE_S,
    retryPeriodSeconds: RETRY_PERIOD_S,
    logger: pino({ level: 'silent' }),
    identity,
    clock,
    leaseApi: api,
    random: () => 0,
    onStartedLeading: () => events.push(`started at ${clock.now()}`),
    onStoppedLeading: () => events.push(`stopped at ${clock.now()}`),
  });
  return { elector, events };
}

describe('LeaderElector: a leader that cannot renew', () => {
  // The leader creates the Lease at 0 and renews it at 2 s; from 3 s on its calls go wrong. It
  // must stop leading at 2 s + renewDeadline = 12 s: a standby that saw the 2 s renewal takes the
  // Lease no earlier than 2 s + leaseDuration = 17 s.
  const cases: { name: string; broken: Call; mode: 'hang' | 'fail' }[] = [
    {
      name: 'a leader whose Lease read hangs for ever stops leading at the renew deadline, not at the 30 s request deadline, and the read answering late does not make it leader again',
      broken: 'read',
      mode: 'hang',
    },
    {
      name: 'a leader whose Lease update hangs for ever stops leading at the renew deadline, and the update landing late does not make it leader again',
      broken: 'replace',
      mode: 'hang',
    },
    {
      name: 'a leader whose renewals fail at once stops leading exactly at the renew deadline, not at the first retry after it',
      broken: 'read',
      mode: 'fail',
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const clock = new FakeClock();
      const api = new FakeLeaseApi(clock);
      const { elector, events } = candidate(clock, api, 'me');
      elector.start();
      await clock.advanceTo(3000);
      assert.deepEqual(events, ['started at 0']);
      api[c.mode].add(c.broken);

      await clock.advanceTo(11_999);
      assert.deepEqual(events, ['started at 0'], 'still leading just before the renew deadline');
      assert.equal(elector.leading, true);
      await clock.advanceTo(12_000);
      assert.deepEqual(events, ['started at 0', 'stopped at 12000']);
      assert.equal(elector.leading, false);
      if (c.mode === 'hang') {
        const hung = api.calls.filter((k) => k.call === c.broken && k.at > 3000);
        assert.equal(hung.length, 1, 'one request hung');
        assert.ok(hung[0]?.signal.aborted, 'the hung request was aborted at the deadline');
      }

      // The hung request answers long after the deadline; with the link back, a renewal would succeed.
      api.hang.clear();
      api.fail.clear();
      const callsAtLoss = api.calls.length;
      await clock.advanceTo(20_000);
      api.answerHungCalls();
      await clock.advanceTo(120_000);
      assert.deepEqual(events, ['started at 0', 'stopped at 12000'], 'leadership is not revived');
      assert.equal(elector.leading, false);
      assert.equal(api.calls.length, callsAtLoss, 'no attempt after leadership was lost');
      await elector.stop();
    });
  }
});

describe('LeaderElector: a standby', () => {
  const longAgo = new Date('2001-01-01T00:00:00Z');
  const cases: { name: string; holder: string; holderRenewsEveryMs?: number; expected: string[] }[] = [
    // Attempts run every retryPeriod from 0; the first one at or after 15 s is at 16 s.
    {
      name: 'a standby takes a Lease whose holder stopped renewing only after leaseDuration of an unchanged record, however old its renewTime looks',
      holder: 'other',
      expected: ['started at 16000'],
    },
    { name: 'a standby never takes a Lease whose holder keeps renewing it', holder: 'other', holderRenewsEveryMs: 5000, expected: [] },
    { name: 'a standby takes a released Lease (no holder) at its first attempt', holder: '', expected: ['started at 0'] },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const clock = new FakeClock();
      const api = new FakeLeaseApi(clock);
      api.write({
        holderIdentity: c.holder,
        leaseDurationSeconds: LEASE_DURATION_S,
        renewTime: longAgo,
        acquireTime: longAgo,
        leaseTransitions: 3,
      });
      if (c.holderRenewsEveryMs !== undefined) {
        const every = c.holderRenewsEveryMs;
        const renew = (): void => {
          api.write({ ...api.lease?.spec, renewTime: new Date(clock.now()) });
          clock.setTimeout(renew, every);
        };
        clock.setTimeout(renew, every);
      }
      const { elector, events } = candidate(clock, api, 'standby');
      elector.start();

      await clock.advanceTo(LEASE_DURATION_S * 1000 - 1);
      if (c.holder !== '') {
        assert.deepEqual(events, [], 'not before leaseDuration');
        assert.equal(api.holder, c.holder);
      }
      await clock.advanceTo(60_000);
      assert.deepEqual(events, c.expected);
      assert.equal(api.holder, c.expected.length > 0 ? 'standby' : c.holder);
      if (c.expected.length > 0) assert.equal(api.lease?.spec?.leaseTransitions, 4, 'a takeover counts one transition');
      await elector.stop();
    });
  }
});

describe('LeaderElector: a leader that can renew', () => {
  // The last renewal before the trouble starts at 2 s, so the deadline is 12 s unless one succeeds.
  const cases: { name: string; trouble?: { from: number; to: number; mode: 'slow' | 'fail' } }[] = [
    { name: 'a leader whose renewals succeed keeps leading for many lease durations and renews every retry period' },
    {
      name: 'a leader whose renewals fail for a while, but succeed again within the renew deadline, keeps leading',
      trouble: { from: 3000, to: 9000, mode: 'fail' },
    },
    {
      name: 'a leader whose renewal answers slowly, but within the renew deadline, keeps leading',
      trouble: { from: 3000, to: 9000, mode: 'slow' },
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const clock = new FakeClock();
      const api = new FakeLeaseApi(clock);
      const { elector, events } = candidate(clock, api, 'me');
      elector.start();
      if (c.trouble) {
        await clock.advanceTo(c.trouble.from);
        api[c.trouble.mode].add('read');
        await clock.advanceTo(c.trouble.to);
        api[c.trouble.mode].clear();
      }
      await clock.advanceTo(300_000);
      assert.deepEqual(events, ['started at 0']);
      assert.equal(elector.leading, true);
      assert.equal(api.holder, 'me');
      const renewTime = api.lease?.spec?.renewTime;
      assert.ok(
        renewTime && clock.now() - new Date(renewTime).getTime() <= RETRY_PERIOD_S * 1000,
        `renewed within the last retry period (renewTime ${String(renewTime?.toISOString())})`,
      );
      if (!c.trouble)
        assert.equal(api.calls.filter((k) => k.call === 'replace').length, 300 / RETRY_PERIOD_S, 'one renewal every retry period');
      await elector.stop();
    });
  }

  test('stopping a leader releases the Lease, so that a standby takes it at its next attempt', async () => {
    const clock = new FakeClock();
    const api = new FakeLeaseApi(clock);
    const leader = candidate(clock, api, 'leader');
    leader.elector.start();
    await clock.advanceTo(1000);
    const standby = candidate(clock, api, 'standby');
    standby.elector.start();
    await clock.advanceTo(5000);
    await leader.elector.stop();
    assert.equal(api.holder, '');
    await clock.advanceTo(5000 + RETRY_PERIOD_S * 1000);
    assert.deepEqual(leader.events, ['started at 0'], 'a release is not a loss');
    assert.deepEqual(standby.events, ['started at 7000']);
    await standby.elector.stop();
  });

  test('stopping a leader whose apiserver hangs gives up releasing the Lease at the renew deadline instead of waiting on the request', async () => {
    const clock = new FakeClock();
    const api = new FakeLeaseApi(clock);
    const leader = candidate(clock, api, 'leader');
    leader.elector.start();
    await clock.advanceTo(1000);
    api.hang.add('read');
    let stopped = false;
    const stopping = leader.elector.stop().then(() => (stopped = true));
    await clock.advanceTo(1000 + RENEW_DEADLINE_S * 1000 - 1);
    assert.equal(stopped, false);
    await clock.advanceTo(1000 + RENEW_DEADLINE_S * 1000);
    await stopping;
    assert.equal(api.holder, 'leader', 'not released');
    assert.deepEqual(leader.events, ['started at 0'], 'a stop is not a loss');
  });
});

/** What the client logs and which hooks it calls for registry outages, ejections, breakers and denied retries. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { DiscoveryLogger } from '../src/observability/hooks.ts';
import type { Instance } from '../src/instance.ts';
import { inst } from './fakes.ts';
import { SERVICE, eventually, makeClient } from './call-support.ts';

type Level = 'debug' | 'info' | 'warn' | 'error';

/** A logger that keeps what it is given. */
function recordingLogger() {
  const lines: { level: Level; obj: Record<string, unknown>; msg: string }[] = [];
  const at =
    (level: Level) =>
    (obj: object, msg: string): void =>
      void lines.push({ level, obj: obj as Record<string, unknown>, msg });
  const logger: DiscoveryLogger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  return { logger, lines, find: (re: RegExp) => lines.filter((l) => re.test(l.msg)) };
}

const fails = async (instance: Instance): Promise<never> => {
  throw new Error(`${instance.id} is down`);
};

describe('logs and cache hooks', () => {
  test('a registry outage is logged once when it starts and once when it ends, with how long the cache was stale', async () => {
    const { logger, find } = recordingLogger();
    const sync: [string, boolean][] = [];
    const counts: number[] = [];
    const { client, clock, source } = makeClient({
      logger,
      hooks: { onCacheSync: (s, inSync) => sync.push([s, inSync]), onCacheUpdate: (_s, n) => counts.push(n) },
    });
    await client.ready(SERVICE);
    source.goDown(new Error('connection refused'));
    source.goDown(new Error('connection refused'));
    clock.advance(4_000);
    source.comeBack();
    const lost = find(/^lost the registry/);
    assert.equal(lost.length, 1);
    assert.equal(lost[0]!.level, 'warn');
    assert.equal(lost[0]!.obj.service, SERVICE);
    assert.equal((lost[0]!.obj.err as Error).message, 'connection refused');
    const back = find(/^back in step with the registry/);
    assert.equal(back.length, 1);
    assert.equal(back[0]!.level, 'info');
    assert.equal(back[0]!.obj.staleForMs, 4_000);
    assert.deepEqual(sync, [
      [SERVICE, false],
      [SERVICE, true],
    ]);
    assert.deepEqual(counts, [3, 3]);
    await client.close();
  });

  test('an ejection is logged with the instance and how long it lasts', async () => {
    const { logger, find } = recordingLogger();
    const { client } = makeClient({ logger, outlier: { consecutiveFailures: 2 }, call: { breaker: false, attempts: 1 } }, [
      inst('a'),
      inst('b'),
    ]);
    const aDown = async (instance: Instance): Promise<string> => (instance.id === 'a' ? fails(instance) : instance.id!);
    for (let k = 0; k < 4; k++) await client.call(SERVICE, aDown).catch(() => undefined);
    const ejected = find(/^instance ejected/);
    assert.equal(ejected.length, 1);
    assert.deepEqual({ ...ejected[0]!.obj }, { service: SERVICE, namespace: 'test', instance: 'a', ejectedForMs: 30_000 });
    await client.close();
  });

  test('breakers are logged when they open (warn) and close (info)', async () => {
    const { logger, find, lines } = recordingLogger();
    const { client } = makeClient({
      logger,
      outlier: false,
      call: { attempts: 1, breaker: { consecutiveFailures: 1, halfOpenAfterMs: 20 } },
    });
    await client.call(SERVICE, fails).catch(() => undefined);
    assert.equal(find(/^circuit breaker opened/)[0]?.obj.instance, 'a');
    const pending: Promise<unknown>[] = [];
    await eventually(() => {
      pending.push(client.call(SERVICE, async (i) => i.id));
      return find(/^circuit breaker closed/).length > 0;
    }, 'a successful trial on a');
    await Promise.all(pending);
    assert.equal(find(/^circuit breaker closed/)[0]?.level, 'info');
    assert.deepEqual(
      lines.filter((l) => l.msg.startsWith('circuit breaker')).map((l) => l.level),
      ['warn', 'debug', 'info'],
    );
    await client.close();
  });

  test('denied retries are logged at most once per 10 s per service, counting the ones in between', async () => {
    const { logger, find } = recordingLogger();
    const { client, clock } = makeClient({
      logger,
      outlier: false,
      call: { breaker: false, retryBudget: { minRetriesPerSecond: 0, retryRatio: 0.01 } },
    });
    for (let k = 0; k < 5; k++) await client.call(SERVICE, fails).catch(() => undefined);
    assert.equal(find(/^retry budget spent/).length, 1);
    clock.advance(10_000);
    await client.call(SERVICE, fails).catch(() => undefined);
    const denied = find(/^retry budget spent/);
    assert.equal(denied.length, 2);
    assert.equal(denied[1]!.level, 'warn');
    assert.equal(denied[1]!.obj.alsoDenied, 4);
    await client.close();
  });
});

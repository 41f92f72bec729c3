import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DiscoveryClient } from '../src/client.ts';
import { DiscoveryConfigError, NoInstanceError, RegistryUnavailableError } from '../src/errors.ts';
import { DEFAULT_NAMESPACE, NAMESPACE_ENV, resolveNamespace } from '../src/source.ts';
import { FakeClock, ids, inst, scriptedRandom } from './fakes.ts';
import { MemorySource } from './memory-source.ts';
import { staticSource } from '../src/static-source.ts';

function make(source = new MemorySource('prod')) {
  const clock = new FakeClock();
  const client = new DiscoveryClient({ source, clock, random: scriptedRandom(0), strategy: 'round-robin', initialReadTimeoutMs: 1000 });
  return { client, source, clock };
}

describe('namespace pinning', () => {
  test('the namespace option wins over the environment, which wins over the default', () => {
    assert.equal(resolveNamespace('prod', { [NAMESPACE_ENV]: 'dev' }), 'prod');
    assert.equal(resolveNamespace(undefined, { [NAMESPACE_ENV]: 'dev' }), 'dev');
    assert.equal(resolveNamespace(undefined, {}), DEFAULT_NAMESPACE);
  });

  test('a namespace that cannot be a registry namespace is refused with what to set', () => {
    for (const bad of ['', 'a/b', '_kube-registrar']) {
      assert.throws(
        () => resolveNamespace(bad, {}),
        (err: unknown) => err instanceof DiscoveryConfigError && err.message.includes(NAMESPACE_ENV),
      );
    }
  });
});

describe('the watch cache', () => {
  test('every caller of one service shares one watch', async () => {
    const { client, source } = make();
    source.set('users', [inst('a'), inst('b')]);
    const [one, two] = await Promise.all([client.instances('users'), client.pick('users')]);
    assert.equal(ids(one), 'a b');
    assert.ok(['a', 'b'].includes(two.id!));
    await client.instances('users');
    assert.equal(source.watchers('users'), 1);
    await client.close();
    assert.equal(source.watchers('users'), 0);
    assert.ok(source.closed);
  });

  test('picks follow membership changes and keep the state of instances that stay', async () => {
    const { client, source } = make();
    source.set('users', [inst('a'), inst('b')]);
    await client.ready('users');
    const selector = client.selector('users');
    const a = selector.acquire();
    assert.equal(a.id, 'a');
    source.set('users', [inst('a'), inst('c')]);
    assert.equal(ids(await client.instances('users')), 'a c');
    assert.equal(selector.inspect().find((s) => s.id === 'a')?.inFlight, 1, 'a kept its call in flight across the update');
    source.set('users', []);
    await assert.rejects(
      client.pick('users'),
      (err: unknown) => err instanceof NoInstanceError && /no instance of users in namespace prod/.test(err.message),
    );
    await client.close();
  });

  test('through an outage the last instances keep being served and staleness grows', async () => {
    const { client, source, clock } = make();
    source.set('users', [inst('a')]);
    await client.ready('users');
    assert.deepEqual(
      { inSync: client.staleness('users').inSync, staleForMs: client.staleness('users').staleForMs },
      { inSync: true, staleForMs: 0 },
    );
    source.goDown(new Error('connection refused'));
    clock.advance(5000);
    const during = client.staleness('users');
    assert.equal(during.inSync, false);
    assert.equal(during.staleForMs, 5000);
    assert.match(String(during.lastError), /connection refused/);
    assert.equal((await client.pick('users')).id, 'a', 'the last known instance is still picked');
    source.set('users', [inst('b')]); // changed while down: not seen yet
    assert.equal((await client.pick('users')).id, 'a');
    source.comeBack();
    assert.equal(client.staleness('users').inSync, true);
    assert.equal(client.staleness('users').staleForMs, 0);
    assert.equal((await client.pick('users')).id, 'b', 'caught up once the registry is back');
    await client.close();
  });

  test('a service never read fails after the initial read timeout, saying why', async () => {
    const source = new MemorySource('prod');
    source.goDown(new Error('ECONNREFUSED 127.0.0.1:2379'));
    const client = new DiscoveryClient({ source, initialReadTimeoutMs: 20 });
    await assert.rejects(
      client.pick('users'),
      (err: unknown) =>
        err instanceof RegistryUnavailableError && /users in namespace prod/.test(err.message) && /ECONNREFUSED/.test(err.message),
    );
    await client.close();
  });

  test('setStrategy switches every followed service and those followed later', async () => {
    const { client, source } = make();
    source.set('users', [inst('a')]);
    source.set('orders', [inst('b')]);
    await client.ready('users');
    client.setStrategy('least-connections');
    assert.equal(client.selector('users').strategy, 'least-connections');
    assert.equal(client.selector('orders').strategy, 'least-connections');
    await client.close();
  });
});

describe('self-registration', () => {
  test('without a registrar register() says how to get one', async () => {
    const { client } = make();
    await assert.rejects(client.register({ service: 's', address: '10.0.0.1', port: 80 }), DiscoveryConfigError);
    await client.close();
  });

  test('close() removes every registration still open', async () => {
    const closed: string[] = [];
    const source = new MemorySource('prod');
    const client = new DiscoveryClient({
      source,
      registrar: {
        register: async (e) => ({ id: `${e.service}/${e.port}`, close: async () => void closed.push(`${e.service}/${e.port}`) }),
      },
    });
    const one = await client.register({ service: 's', address: '10.0.0.1', port: 80 });
    await client.register({ service: 's', address: '10.0.0.1', port: 81 });
    await one.close();
    await client.close();
    assert.deepEqual(closed, ['s/80', 's/81']);
  });
});

describe('static source', () => {
  test('serves its fixed list through the same client', async () => {
    const client = new DiscoveryClient({
      source: staticSource({ namespace: 'dev', services: { users: [inst('a', { tags: { zone: 'a' } }), inst('b')] } }),
      strategy: 'round-robin',
      random: scriptedRandom(0),
    });
    assert.equal(client.namespace, 'dev');
    assert.equal(ids(await client.instances('users', { zone: 'a' })), 'a');
    await assert.rejects(client.pick('orders'), NoInstanceError);
    await client.close();
  });
});

/**
 * The resolver against grpc-js 1.14's resolver contract, with an in-memory source: grpc-js creates
 * it as a channel would (`experimental.createResolver`), and the test records what reaches the
 * listener. The integration test (test/integration/discovery-grpc-resolver.test.ts) dials real
 * servers through real etcd.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';

import { credentials, experimental, makeGenericClientConstructor, status, type StatusObject } from '@grpc/grpc-js';

import { DiscoveryConfigError } from '../src/errors.ts';
import { registerDiscoveryResolver, type ResolverRegistration } from '../src/grpc/resolver.ts';
import type { Instance } from '../src/instance.ts';
import { MemorySource } from './memory-source.ts';

type Endpoint = experimental.Endpoint;

/** One call of the resolver's listener. */
interface Resolution {
  readonly endpoints?: readonly string[];
  readonly error?: Pick<StatusObject, 'code' | 'details'>;
  readonly note: string;
}

/** A resolver as grpc-js creates it for a channel, and what its listener has received. */
class Recorder {
  readonly resolutions: Resolution[] = [];
  readonly resolver: experimental.Resolver;
  #waiting: (() => void) | undefined;

  constructor(scheme: string, path: string) {
    this.resolver = experimental.createResolver(
      { scheme, authority: '', path },
      (result, _attributes, _config, note) => {
        const endpoints = result.ok
          ? result.value.map((e: Endpoint) => e.addresses.map((a) => ('host' in a ? `${a.host}:${a.port}` : a.path)).join())
          : undefined;
        this.resolutions.push(
          result.ok ? { endpoints, note } : { error: { code: result.error.code, details: result.error.details }, note },
        );
        this.#waiting?.();
        return true;
      },
      {},
    );
  }

  /** Resolves with the next resolution after `count` have arrived (fails after 5 s). */
  async resolution(count: number): Promise<Resolution> {
    const deadline = Date.now() + 5_000;
    while (this.resolutions.length <= count) {
      if (Date.now() > deadline) assert.fail(`no resolution number ${count + 1} within 5 s; got ${JSON.stringify(this.resolutions)}`);
      await new Promise<void>((resolve) => {
        this.#waiting = resolve;
        setTimeout(resolve, 100);
      });
    }
    return this.resolutions[count]!;
  }
}

const registrations: ResolverRegistration[] = [];
after(async () => {
  for (const r of registrations) await r.close();
});

function instance(port: number, extra: Partial<Instance> = {}): Instance {
  return { address: '127.0.0.1', port, ...extra };
}

/** A registration over one memory source per namespace, under a scheme of its own. */
function setUp(options: { namespace?: string; initialReadTimeoutMs?: number } = {}): {
  scheme: string;
  source: (namespace: string) => MemorySource;
  registration: ResolverRegistration;
} {
  const scheme = `mem${randomUUID().slice(0, 8)}`;
  const sources = new Map<string, MemorySource>();
  const source = (namespace: string): MemorySource => {
    let s = sources.get(namespace);
    if (s === undefined) sources.set(namespace, (s = new MemorySource(namespace)));
    return s;
  };
  const registration = registerDiscoveryResolver({ scheme, sourceFor: (_prefix, namespace) => source(namespace), ...options });
  registrations.push(registration);
  return { scheme, source, registration };
}

describe('the grpc-js resolver of discovery targets', () => {
  test('answers after updateResolution(), never synchronously, with every instance in rotation', async () => {
    const { scheme, source } = setUp();
    source('prod').set('greeter', [instance(1001), instance(1002, { weight: 0 }), instance(1003, { weight: 5 })]);
    const r = new Recorder(scheme, 'grpc/prod/greeter');
    r.resolver.updateResolution();
    assert.equal(r.resolutions.length, 0, 'nothing reaches the listener synchronously');
    assert.deepEqual(await r.resolution(0), { endpoints: ['127.0.0.1:1001', '127.0.0.1:1003'], note: '' });

    // Asked again (grpc-js does after a failed connection): the same set again, again not synchronously.
    r.resolver.updateResolution();
    assert.equal(r.resolutions.length, 1);
    assert.deepEqual(await r.resolution(1), { endpoints: ['127.0.0.1:1001', '127.0.0.1:1003'], note: '' });
    r.resolver.destroy();
  });

  test('follows changes of the set, and hands over no change grpc-js could not use', async () => {
    const { scheme, source } = setUp();
    source('prod').set('greeter', [instance(1001)]);
    const r = new Recorder(scheme, 'grpc/prod/greeter');
    r.resolver.updateResolution();
    await r.resolution(0);
    source('prod').set('greeter', [instance(1001, { tags: { zone: 'a' } })]);
    source('prod').set('greeter', [instance(1001, { tags: { zone: 'a' } }), instance(1002)]);
    assert.deepEqual(await r.resolution(1), { endpoints: ['127.0.0.1:1001', '127.0.0.1:1002'], note: '' });
    assert.equal(r.resolutions.length, 2, 'the tag change alone was not handed over');
    r.resolver.destroy();
  });

  test('an empty set is handed over with a note naming the service, and why when instances are drained', async () => {
    const { scheme, source } = setUp();
    source('prod').set('greeter', []);
    const r = new Recorder(scheme, 'grpc/prod/greeter');
    r.resolver.updateResolution();
    const empty = await r.resolution(0);
    assert.deepEqual(empty.endpoints, []);
    assert.match(empty.note, /no instance of greeter in registry namespace prod \(target \w+:\/\/\/grpc\/prod\/greeter\) is registered/);
    source('prod').set('greeter', [instance(1001, { weight: 0 })]);
    assert.match((await r.resolution(1)).note, /1 registered with weight 0/);
    r.resolver.destroy();
  });

  test('nothing reaches the listener after destroy() until updateResolution() is called again', async () => {
    const { scheme, source } = setUp();
    source('prod').set('greeter', [instance(1001)]);
    const r = new Recorder(scheme, 'grpc/prod/greeter');
    r.resolver.updateResolution();
    await r.resolution(0);
    r.resolver.updateResolution();
    r.resolver.destroy(); // with an answer pending
    source('prod').set('greeter', [instance(1002)]);
    await nextTurn();
    await nextTurn();
    assert.equal(r.resolutions.length, 1, 'neither the pending answer nor the change arrived');
    // Reused, as grpc-js reuses it when an idle channel is used again.
    r.resolver.updateResolution();
    assert.deepEqual(await r.resolution(1), { endpoints: ['127.0.0.1:1002'], note: '' });
    source('prod').set('greeter', [instance(1003)]);
    assert.deepEqual((await r.resolution(2)).endpoints, ['127.0.0.1:1003']);
    r.resolver.destroy();
  });

  const refused: { name: string; path: string; says: RegExp }[] = [
    { name: 'names no service', path: 'greeter', says: /does not name a service: dial \w+:\/\/\/<prefix>\/<namespace>\/<service>/ },
    {
      name: 'is in another namespace than the pinned one',
      path: 'grpc/prod/greeter',
      says: /is in registry namespace prod, but this process is pinned to dev/,
    },
  ];
  for (const c of refused) {
    test(`a target that ${c.name} resolves to UNAVAILABLE saying why, each time it is asked`, async () => {
      const { scheme, source } = setUp({ namespace: 'dev' });
      source('prod').set('greeter', [instance(1001)]);
      const r = new Recorder(scheme, c.path);
      r.resolver.updateResolution();
      assert.equal(r.resolutions.length, 0);
      const first = await r.resolution(0);
      assert.equal(first.error?.code, status.UNAVAILABLE, 'UNAVAILABLE: grpc-js turns INVALID_ARGUMENT from a resolver into INTERNAL');
      assert.match(first.error?.details ?? '', c.says);
      r.resolver.updateResolution();
      assert.equal((await r.resolution(1)).error?.code, status.UNAVAILABLE);
      assert.equal(source('prod').watchers('greeter'), 0, 'nothing was watched for it');
      r.resolver.destroy();
    });
  }

  test('a registry that cannot be read fails resolution with UNAVAILABLE after the timeout, then resolves once it answers', async () => {
    const { scheme, source } = setUp({ initialReadTimeoutMs: 50 });
    source('prod').goDown(new Error('connection refused'));
    const r = new Recorder(scheme, 'grpc/prod/greeter');
    r.resolver.updateResolution();
    const failed = await r.resolution(0);
    assert.equal(failed.error?.code, status.UNAVAILABLE);
    assert.match(failed.error?.details ?? '', /could not read greeter in registry namespace prod .* within 50 ms \(connection refused\)/);
    source('prod').set('greeter', [instance(1001)]);
    source('prod').comeBack();
    assert.deepEqual(await r.resolution(1), { endpoints: ['127.0.0.1:1001'], note: '' });
    r.resolver.destroy();
  });

  test('once the registration is closed, its sources are closed and new resolutions fail with UNAVAILABLE', async () => {
    const { scheme, source, registration } = setUp();
    source('prod').set('greeter', [instance(1001)]);
    const before = new Recorder(scheme, 'grpc/prod/greeter');
    before.resolver.updateResolution();
    await before.resolution(0);
    await registration.close();
    assert.ok(source('prod').closed);
    const r = new Recorder(scheme, 'grpc/prod/other');
    r.resolver.updateResolution();
    const failed = await r.resolution(0);
    assert.equal(failed.error?.code, status.UNAVAILABLE);
    assert.match(failed.error?.details ?? '', /resolver was closed/);
    before.resolver.destroy();
  });

  test('a client for an invalid target is constructed, and its calls fail with the resolver’s explanation', async () => {
    const { scheme } = setUp();
    const Client = makeGenericClientConstructor(
      {
        echo: {
          path: '/test.Echo/Echo',
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      'Echo',
    );
    const client = new Client(`${scheme}:///greeter`, credentials.createInsecure());
    try {
      const err = await new Promise<unknown>((resolve) => {
        client.makeUnaryRequest(
          '/test.Echo/Echo',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from('hi'),
          { deadline: Date.now() + 10_000 },
          (e) => resolve(e),
        );
      });
      assert.equal((err as StatusObject).code, status.UNAVAILABLE);
      assert.match((err as StatusObject).details, /does not name a service/);
    } finally {
      client.close();
    }
  });

  test('schemes grpc-js resolves itself, and strings that are no URI scheme, are refused', () => {
    for (const scheme of ['dns', 'unix', 'etcd:', '']) {
      assert.throws(() => registerDiscoveryResolver({ scheme, sourceFor: () => new MemorySource() }), DiscoveryConfigError);
    }
  });
});

/**
 * The discovery client's etcd backend against real etcd servers: entries are written exactly as
 * the operator writes them (its own codec and key layout, on a lease), in every value format, and
 * a `DiscoveryClient` with an `etcdSource` must read them, follow changes, stay pinned to its
 * registry namespace, keep serving through an outage and lose no delete across a compaction.
 * `etcdRegistrar` must write what the operator would write for the same endpoint, never over
 * someone else's entry, and its entry must go at once on close() and within the TTL when the
 * process dies.
 *
 * The shared bed's etcd serves the tests that change nothing but their own prefix; the outage and
 * compaction tests stop, cut off and compact an etcd of their own.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { ExponentialBackoff } from 'cockatiel';
import { Etcd3 } from 'etcd3';

import {
  DiscoveryClient,
  EntryOwnedElsewhereError,
  etcdDiscovery,
  etcdRegistrar,
  etcdSource,
  NAMESPACE_ENV,
  type EtcdSourceOptions,
  type Instance,
} from '../../packages/discovery/src/index.ts';
import { encodeEntry, type EtcdValueFormat } from '../../src/registry/etcd/codec.ts';
import { EtcdKeyLayout } from '../../src/registry/etcd/keys.ts';
import type { Owner, RegistryEntry } from '../../src/registry/types.ts';
import { REPO_ROOT } from '../../testbed/provision.ts';
import { startOwnEtcd, TcpProxy, waitFor, type OwnEtcd } from '../support/faults.ts';
import { bedEtcdEndpoints } from '../support/env.ts';

const endpoints = bedEtcdEndpoints();

/** Generous: a loaded 2-core machine, and clients deep in their backoff after an outage. */
const WAIT_MS = 60_000;
/** Quick retries, so that tests spend their time on what they check rather than in backoff. */
const fastBackoff = (): ExponentialBackoff<unknown> => new ExponentialBackoff({ initialDelay: 50, maxDelay: 1_000 });

const etcd = new Etcd3({ hosts: endpoints });
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  etcd.close();
});

const OPERATOR: Owner = { clusterId: 'cluster-a', namespace: 'prod', name: 'user-si' };

function freshPrefix(leadingSlash = true): string {
  return `${leadingSlash ? '/' : ''}disc-${randomUUID().slice(0, 8)}`;
}

/** An entry as the operator builds it for a pod endpoint. */
function operatorEntry(
  registryNamespace: string,
  service: string,
  address: string,
  port: number,
  extra: { weight?: number; tags?: Record<string, string>; metadata?: Record<string, string>; owner?: Owner } = {},
): RegistryEntry {
  const owner = extra.owner ?? OPERATOR;
  return {
    registryNamespace,
    k8sNamespace: owner.namespace,
    owner,
    endpoint: {
      service,
      instanceId: address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`,
      address,
      port,
      weight: extra.weight ?? 1,
      tags: extra.tags ?? {},
      metadata: extra.metadata ?? {},
      source: `pod/${owner.namespace}/${service}-${port}`,
    },
  };
}

/** The instance a consumer should see for an entry. */
function expected(entry: RegistryEntry): Instance {
  const e = entry.endpoint;
  return { id: e.instanceId, address: e.address, port: e.port, weight: e.weight, tags: e.tags, metadata: e.metadata };
}

/** Writes entries the way the operator does: value and owner index in one transaction, on its lease. */
async function writeAsOperator(
  client: Etcd3,
  layout: EtcdKeyLayout,
  format: EtcdValueFormat,
  leaseId: string,
  ...entries: RegistryEntry[]
): Promise<void> {
  const ops = entries.flatMap((entry) => {
    const { registryNamespace: ns, endpoint } = entry;
    const encoded = encodeEntry(format, entry);
    const puts = [
      client
        .put(layout.entry(ns, endpoint.service, endpoint.instanceId))
        .value(encoded.value)
        .lease(leaseId),
    ];
    if (encoded.ownerIndex !== undefined) {
      puts.push(
        client
          .put(layout.ownerIndex(ns, endpoint.service, endpoint.instanceId))
          .value(encoded.ownerIndex)
          .lease(leaseId),
      );
    }
    return puts;
  });
  await client
    .if(layout.entry('probe', 'probe', 'probe'), 'Create', '==', 0)
    .then(...ops)
    .commit();
}

/** Deletes an entry the way the operator does: value and owner index in one transaction. */
async function deleteAsOperator(client: Etcd3, layout: EtcdKeyLayout, entry: RegistryEntry): Promise<void> {
  const { registryNamespace: ns, endpoint } = entry;
  await client
    .if(layout.entry('probe', 'probe', 'probe'), 'Create', '==', 0)
    .then(
      client.delete().key(layout.entry(ns, endpoint.service, endpoint.instanceId)),
      client.delete().key(layout.ownerIndex(ns, endpoint.service, endpoint.instanceId)),
    )
    .commit();
}

/** A lease like the operator's (long, since some tests stop etcd; revoked at the end). */
async function operatorLease(client: Etcd3): Promise<string> {
  const lease = client.lease(600, { autoKeepAlive: false });
  const id = await lease.grant();
  closers.push(() => lease.revoke());
  return id;
}

function consumer(options: EtcdSourceOptions): DiscoveryClient {
  const client = new DiscoveryClient({ source: etcdSource({ backoff: fastBackoff(), ...options }), initialReadTimeoutMs: WAIT_MS });
  closers.push(() => client.close());
  return client;
}

/** Waits until the cache of `service` holds exactly `want` (weight 0 included), then checks it field by field. */
async function waitForSet(client: DiscoveryClient, service: string, want: readonly Instance[], what: string): Promise<void> {
  const sorted = [...want].sort((a, b) => (a.id! < b.id! ? -1 : 1));
  await waitFor(what, async () => (isDeepStrictEqual(client.cache(service).instances, sorted) ? true : undefined), WAIT_MS, 50).catch(
    (err: unknown) => {
      throw new Error(`${String(err)}; the client holds ${JSON.stringify(client.cache(service).instances)}`, { cause: err });
    },
  );
  assert.deepEqual(client.cache(service).instances, sorted);
}

async function rawValue(client: Etcd3, key: string): Promise<{ value: string; lease: string } | undefined> {
  const res = await client.get(key).exec();
  const kv = res.kvs[0];
  return kv === undefined ? undefined : { value: kv.value.toString('utf8'), lease: kv.lease };
}

describe('etcdSource reads what the operator writes', () => {
  const formats: { format: EtcdValueFormat; leadingSlash: boolean }[] = [
    { format: 'json', leadingSlash: true },
    { format: 'grpc', leadingSlash: false },
    { format: 'hostport', leadingSlash: true },
  ];
  for (const { format, leadingSlash } of formats) {
    test(`${format}: the initial read has every entry with its tags, weight and metadata, then puts and deletes follow`, async () => {
      const prefix = freshPrefix(leadingSlash);
      const layout = new EtcdKeyLayout(prefix);
      const lease = await operatorLease(etcd);
      const a = operatorEntry('prod', 'user', '10.0.0.1', 8080, {
        weight: 5,
        tags: { zone: 'a', version: '2' },
        metadata: { team: 'core' },
      });
      const b = operatorEntry('prod', 'user', 'fd00::2', 8080, { weight: 0, tags: { zone: 'b' } });
      await writeAsOperator(etcd, layout, format, lease, a, b);
      // What a consumer must step over: garbage, a key one level too deep, an orphan owner index.
      await etcd.put(`${layout.servicePrefix('prod', 'user')}garbage`).value('not an endpoint {');
      await etcd.put(`${layout.servicePrefix('prod', 'user')}deeper/10.0.0.9:80`).value('10.0.0.9:80');
      await etcd.put(layout.ownerIndex('prod', 'user', '10.0.0.8:80')).value('{"half":');

      const client = consumer({ hosts: endpoints, prefix: `${prefix}/`, namespace: 'prod' });
      await client.ready('user');
      assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)], 'sorted by instance id');
      assert.deepEqual(
        (await client.instances('user', { zone: 'a' })).map((i) => i.id),
        ['10.0.0.1:8080'],
        'weight 0 is out of rotation, tags filter',
      );
      assert.equal(client.staleness('user').inSync, true);

      const c = operatorEntry('prod', 'user', '10.0.0.3', 9090, { weight: 2, tags: { zone: 'c' }, metadata: { build: '7' } });
      await writeAsOperator(etcd, layout, format, lease, c);
      await waitForSet(client, 'user', [expected(a), expected(b), expected(c)], 'a put to appear');

      // A weight change is an owner index change only, for grpc and hostport.
      const a2 = operatorEntry('prod', 'user', '10.0.0.1', 8080, { weight: 9, tags: { zone: 'a' }, metadata: {} });
      await writeAsOperator(etcd, layout, format, lease, a2);
      await waitForSet(client, 'user', [expected(a2), expected(b), expected(c)], 'an update to show');

      await deleteAsOperator(etcd, layout, b);
      await waitForSet(client, 'user', [expected(a2), expected(c)], 'a delete to disappear');
    });
  }

  test('one service holding values of all three formats at once (a Registry changing format) is read whole', async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const lease = await operatorLease(etcd);
    const entries = (['json', 'grpc', 'hostport'] as const).map((format, i) => {
      const entry = operatorEntry('prod', 'mixed', `10.0.1.${i + 1}`, 80, { weight: i + 1, tags: { format } });
      return { format, entry };
    });
    for (const { format, entry } of entries) await writeAsOperator(etcd, layout, format, lease, entry);
    // An old grpc value with its record in Metadata, as kube-registrar once wrote it.
    const old = operatorEntry('prod', 'mixed', '10.0.1.9', 80, { weight: 4, tags: { format: 'old-grpc' } });
    const record = JSON.parse(encodeEntry('json', old).value) as object;
    await etcd
      .put(layout.entry('prod', 'mixed', '10.0.1.9:80'))
      .value(JSON.stringify({ Op: 0, Addr: '10.0.1.9:80', Metadata: record }))
      .lease(lease);

    const client = consumer({ hosts: endpoints, prefix, namespace: 'prod' });
    await client.ready('mixed');
    assert.deepEqual(client.cache('mixed').instances, [...entries.map((e) => expected(e.entry)), expected(old)]);
  });

  test('the namespace pin: entries of another registry namespace are never returned; the default comes from the environment', async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const lease = await operatorLease(etcd);
    const prod = operatorEntry('prod', 'user', '10.0.2.1', 80);
    const staging = operatorEntry('staging', 'user', '10.0.2.2', 80);
    await writeAsOperator(etcd, layout, 'json', lease, prod, staging);

    const pinned = consumer({ hosts: endpoints, prefix, namespace: 'prod' });
    await pinned.ready('user');
    assert.deepEqual(pinned.cache('user').instances, [expected(prod)]);
    // A later staging write, then a prod write: once the prod one shows, the staging one has gone by.
    const staging2 = operatorEntry('staging', 'user', '10.0.2.3', 80);
    const prod2 = operatorEntry('prod', 'user', '10.0.2.4', 80);
    await writeAsOperator(etcd, layout, 'json', lease, staging2);
    await writeAsOperator(etcd, layout, 'json', lease, prod2);
    await waitForSet(pinned, 'user', [expected(prod), expected(prod2)], 'the later prod entry to show');

    const saved = process.env[NAMESPACE_ENV];
    process.env[NAMESPACE_ENV] = 'staging';
    let fromEnv: DiscoveryClient;
    try {
      fromEnv = consumer({ hosts: endpoints, prefix });
    } finally {
      if (saved === undefined) delete process.env[NAMESPACE_ENV];
      else process.env[NAMESPACE_ENV] = saved;
    }
    assert.equal(fromEnv.namespace, 'staging');
    await fromEnv.ready('user');
    assert.deepEqual(fromEnv.cache('user').instances, [expected(staging), expected(staging2)]);
  });
});

describe('through outages and compactions (an etcd of its own)', () => {
  let own: OwnEtcd;
  let writer: Etcd3;
  before(async () => {
    own = await startOwnEtcd();
    closers.push(() => own.close());
    writer = new Etcd3({ hosts: own.clientUrl });
    closers.push(async () => writer.close());
  });

  test('etcd stopped: the last set keeps being served while staleness grows; after the restart the client catches up', async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const lease = await operatorLease(writer);
    const a = operatorEntry('prod', 'user', '10.0.3.1', 80, { tags: { zone: 'a' } });
    const b = operatorEntry('prod', 'user', '10.0.3.2', 80, { weight: 3 });
    await writeAsOperator(writer, layout, 'grpc', lease, a, b);

    const client = consumer({ hosts: own.clientUrl, prefix, namespace: 'prod' });
    await client.ready('user');
    assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)]);

    await own.server.stop();
    const first = await waitFor(
      'the client to notice the outage',
      async () => {
        const s = client.staleness('user');
        return s.inSync ? undefined : s;
      },
      WAIT_MS,
    );
    assert.ok(first.lastError !== undefined, 'the staleness says why');
    await waitFor('staleness to grow', async () => (client.staleness('user').staleForMs > first.staleForMs ? true : undefined), WAIT_MS);
    assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)], 'the last set is still served');
    assert.deepEqual(
      (await client.instances('user')).map((i) => i.id),
      ['10.0.3.1:80', '10.0.3.2:80'],
    );

    await own.server.start();
    const c = operatorEntry('prod', 'user', '10.0.3.3', 80, { metadata: { after: 'restart' } });
    await waitFor(
      'the writer to reach etcd again',
      async () => {
        await deleteAsOperator(writer, layout, a);
        await writeAsOperator(writer, layout, 'grpc', lease, c);
        return true;
      },
      WAIT_MS,
    );
    await waitForSet(client, 'user', [expected(b), expected(c)], 'the client to catch up after the restart');
    await waitFor('the client to be in sync', async () => (client.staleness('user').inSync ? true : undefined), WAIT_MS);
  });

  test('a compaction while the client is cut off loses no delete', async () => {
    const proxy = await TcpProxy.start(own.clientUrl);
    closers.push(() => proxy.close());
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const lease = await operatorLease(writer);
    const entries = [1, 2, 3].map((i) => operatorEntry('prod', 'user', `10.0.4.${i}`, 80, { weight: i }));
    await writeAsOperator(writer, layout, 'hostport', lease, ...entries);

    const client = consumer({ hosts: proxy.url('http'), prefix, namespace: 'prod' });
    await client.ready('user');
    assert.deepEqual(client.cache('user').instances, entries.map(expected));
    const seenRevision = BigInt(client.staleness('user').revision ?? '0');

    proxy.cut('close');
    await waitFor('the client to lose its watch', async () => (client.staleness('user').inSync ? undefined : true), WAIT_MS);
    await deleteAsOperator(writer, layout, entries[1]!);
    for (let i = 0; i < 50; i++) await writer.put(`${prefix}/noise/${i % 5}`).value(String(i));
    const compactTo = BigInt((await writer.get(`${prefix}/noise/0`).exec()).header.revision);
    await own.ctl(['compact', String(compactTo), '--physical']);
    assert.ok(compactTo > seenRevision + 1n, 'the revisions the client would resume from are compacted away');
    proxy.heal();

    await waitForSet(client, 'user', [expected(entries[0]!), expected(entries[2]!)], 'the delete to show after the compaction');
    await waitFor('the client to be in sync', async () => (client.staleness('user').inSync ? true : undefined), WAIT_MS);
    assert.ok(BigInt(client.staleness('user').revision ?? '0') >= compactTo, 'the client follows from after the compaction');
  });

  test('a link that silently swallows packets is noticed (keepalive pings), and the client catches up once it heals', async () => {
    const proxy = await TcpProxy.start(own.clientUrl);
    closers.push(() => proxy.close());
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const lease = await operatorLease(writer);
    const a = operatorEntry('prod', 'user', '10.0.11.1', 80);
    const b = operatorEntry('prod', 'user', '10.0.11.2', 80);
    await writeAsOperator(writer, layout, 'json', lease, a);

    const client = consumer({ hosts: proxy.url('http'), prefix, namespace: 'prod', callTimeoutMs: 3_000 });
    await client.ready('user');
    proxy.cut('blackhole');
    await waitFor('the client to notice the dead link', async () => (client.staleness('user').inSync ? undefined : true), WAIT_MS);
    assert.deepEqual(client.cache('user').instances, [expected(a)], 'the last set is still served');
    await writeAsOperator(writer, layout, 'json', lease, b);
    proxy.heal();
    await waitForSet(client, 'user', [expected(a), expected(b)], 'the client to catch up after the partition');
  });

  test('a registration whose lease expired while etcd was out of reach is written again on a new lease once etcd answers', async () => {
    const proxy = await TcpProxy.start(own.clientUrl);
    closers.push(() => proxy.close());
    const prefix = freshPrefix();
    const key = new EtcdKeyLayout(prefix).entry('prod', 'agent', '10.0.10.1:5000');
    const logs: string[] = [];
    const log = (_fields: object, message: string): void => void logs.push(message);
    const registrar = etcdRegistrar({
      hosts: proxy.url('http'),
      prefix,
      namespace: 'prod',
      leaseTtlSeconds: 2,
      backoff: fastBackoff(),
      logger: { debug: log, info: log, warn: log, error: log },
    });
    closers.push(() => registrar.close());
    const registration = await registrar.register({ service: 'agent', address: '10.0.10.1', port: 5000 });
    const firstLease = (await rawValue(writer, key))?.lease;
    assert.ok(firstLease !== undefined);

    proxy.cut('close');
    await waitFor(
      'the entry to expire while the registrar is cut off',
      async () => ((await rawValue(writer, key)) === undefined ? true : undefined),
      WAIT_MS,
    );
    proxy.heal();
    const back = await waitFor('the entry to be written again', async () => rawValue(writer, key), WAIT_MS);
    assert.notEqual(back.lease, firstLease, 'on a new lease');
    assert.ok(logs.includes('registration lease lost; registering again once etcd answers'), logs.join('; '));
    await waitFor('the log to say so', async () => (logs.includes('registered again on a new lease') ? true : undefined), WAIT_MS);

    await registration.close();
    assert.equal(await rawValue(writer, key), undefined, 'close() removes the new entry at once');
  });
});

describe('etcdRegistrar', () => {
  const self = (ns: string, service: string): Owner => ({ clusterId: `process:${hostname()}`, namespace: ns, name: service });

  for (const format of ['json', 'grpc', 'hostport'] as const) {
    test(`${format}: writes what the operator would write, on a lease of its own, and removes it at once on close()`, async () => {
      const prefix = freshPrefix(format !== 'grpc');
      const layout = new EtcdKeyLayout(prefix);
      const registrar = etcdRegistrar({ hosts: endpoints, prefix, namespace: 'prod', format, leaseTtlSeconds: 10 });
      closers.push(() => registrar.close());
      const registration = await registrar.register({
        service: 'worker',
        address: '10.0.5.1',
        port: 7000,
        weight: 4,
        tags: { zone: 'b', version: '3' },
        metadata: { host: 'vm-1' },
      });
      const key = layout.entry('prod', 'worker', '10.0.5.1:7000');
      assert.equal(registration.id, key);

      const want = encodeEntry(format, {
        ...operatorEntry('prod', 'worker', '10.0.5.1', 7000, {
          weight: 4,
          tags: { zone: 'b', version: '3' },
          metadata: { host: 'vm-1' },
          owner: self('prod', 'worker'),
        }),
        endpoint: {
          ...operatorEntry('prod', 'worker', '10.0.5.1', 7000).endpoint,
          weight: 4,
          tags: { zone: 'b', version: '3' },
          metadata: { host: 'vm-1' },
          source: `process:${hostname()}/${process.pid}`,
        },
      });
      const value = await rawValue(etcd, key);
      assert.equal(value?.value, want.value);
      assert.notEqual(value?.lease, '0', 'the entry hangs on a lease');
      if (want.ownerIndex !== undefined) {
        const index = await rawValue(etcd, layout.ownerIndex('prod', 'worker', '10.0.5.1:7000'));
        assert.equal(index?.value, want.ownerIndex);
        assert.equal(index?.lease, value?.lease, 'the owner index hangs on the same lease');
      }

      const reader = consumer({ hosts: endpoints, prefix, namespace: 'prod' });
      await reader.ready('worker');
      assert.deepEqual(reader.cache('worker').instances, [
        { id: '10.0.5.1:7000', address: '10.0.5.1', port: 7000, weight: 4, tags: { version: '3', zone: 'b' }, metadata: { host: 'vm-1' } },
      ]);

      await registration.close();
      assert.equal(await rawValue(etcd, key), undefined, 'gone as soon as close() returns');
      assert.equal(await rawValue(etcd, layout.ownerIndex('prod', 'worker', '10.0.5.1:7000')), undefined);
      await registration.close(); // idempotent
      await waitForSet(reader, 'worker', [], 'readers to see it go');
    });
  }

  test("refuses a key that holds the operator's entry, and leaves that entry as it was", async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const lease = await operatorLease(etcd);
    const theirs = operatorEntry('prod', 'api', '10.0.6.1', 8080, { weight: 2 });
    await writeAsOperator(etcd, layout, 'hostport', lease, theirs);
    const before = await rawValue(etcd, layout.ownerIndex('prod', 'api', '10.0.6.1:8080'));

    for (const format of ['json', 'grpc', 'hostport'] as const) {
      const registrar = etcdRegistrar({ hosts: endpoints, prefix, namespace: 'prod', format });
      closers.push(() => registrar.close());
      await assert.rejects(
        registrar.register({ service: 'api', address: '10.0.6.1', port: 8080 }),
        (err: unknown) =>
          err instanceof EntryOwnedElsewhereError && err.message.includes('"cluster-a"') && err.message.includes('prod/user-si'),
      );
    }
    assert.equal((await rawValue(etcd, layout.entry('prod', 'api', '10.0.6.1:8080')))?.value, '10.0.6.1:8080');
    assert.deepEqual(await rawValue(etcd, layout.ownerIndex('prod', 'api', '10.0.6.1:8080')), before);
  });

  test("a restarted process takes over its own host's entry at once, and the old lease's end no longer removes it", async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const key = layout.entry('prod', 'batch', '10.0.9.1:6000');
    const before = etcdRegistrar({ hosts: endpoints, prefix, namespace: 'prod', format: 'hostport' });
    const after = etcdRegistrar({ hosts: endpoints, prefix, namespace: 'prod', format: 'json' });
    closers.push(
      () => before.close(),
      () => after.close(),
    );
    const old = await before.register({ service: 'batch', address: '10.0.9.1', port: 6000 });
    const oldLease = (await rawValue(etcd, key))?.lease;

    await after.register({ service: 'batch', address: '10.0.9.1', port: 6000, weight: 2 });
    const now = await rawValue(etcd, key);
    assert.notEqual(now?.lease, oldLease, 'the entry moved to the new lease');
    assert.equal((JSON.parse(now?.value ?? '{}') as { weight?: number }).weight, 2);
    assert.equal(
      await rawValue(etcd, layout.ownerIndex('prod', 'batch', '10.0.9.1:6000')),
      undefined,
      'the old format leaves no index behind',
    );

    await old.close();
    assert.equal((await rawValue(etcd, key))?.lease, now?.lease, 'revoking the old lease leaves the new entry');
  });

  test('etcdDiscovery: register() and reads through one client; closing the client removes the registration', async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const client = etcdDiscovery({ hosts: endpoints, prefix, namespace: 'prod', format: 'grpc', initialReadTimeoutMs: WAIT_MS });
    closers.push(() => client.close());
    await client.register({ service: 'cron', address: '10.0.7.1', port: 9000, tags: { role: 'leader' } });
    assert.deepEqual((await client.pick('cron', { role: 'leader' })).id, '10.0.7.1:9000');
    await client.close();
    assert.equal(await rawValue(etcd, layout.entry('prod', 'cron', '10.0.7.1:9000')), undefined);
  });

  test('a process killed without close(): its entry disappears within the lease TTL', async () => {
    const prefix = freshPrefix();
    const layout = new EtcdKeyLayout(prefix);
    const key = layout.entry('prod', 'batch', '10.0.8.1:6000');
    const script = `
      import { etcdRegistrar } from ${JSON.stringify(join(REPO_ROOT, 'packages/discovery/src/index.ts'))};
      const registrar = etcdRegistrar({ hosts: ${JSON.stringify(endpoints)}, prefix: ${JSON.stringify(prefix)}, namespace: 'prod', leaseTtlSeconds: 3 });
      await registrar.register({ service: 'batch', address: '10.0.8.1', port: 6000 });
      console.log('registered');
      setInterval(() => undefined, 1000);
    `;
    const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    closers.push(async () => void child.kill('SIGKILL'));
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await waitFor('the child to register', async () => (output.includes('registered') ? true : undefined), WAIT_MS).catch(
      (err: unknown) => {
        throw new Error(`the child did not register: ${output}`, { cause: err });
      },
    );
    assert.ok((await rawValue(etcd, key)) !== undefined, 'the entry is there while the process lives');
    const leaseId = (await rawValue(etcd, key))!.lease;
    const granted = await etcd.leaseClient.leaseTimeToLive({ ID: leaseId });
    assert.equal(Number(granted.grantedTTL), 3, 'the entry hangs on a lease of the configured TTL');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    await waitFor(
      'the entry to expire with its lease',
      async () => ((await rawValue(etcd, key)) === undefined ? true : undefined),
      WAIT_MS,
    );
  });
});

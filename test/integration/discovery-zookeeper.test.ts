/**
 * The discovery client's ZooKeeper source against real ZooKeeper servers: entries are written
 * exactly as the operator writes them (its own codec and layout, as ephemeral nodes of a session
 * of its own client adapter), in every format, and a `DiscoveryClient` with a `zookeeperSource`
 * must read them, follow additions, deletions and data changes, serve foreign Curator
 * registrations, stay pinned to its registry namespace, keep serving through an outage, and read
 * everything again after its session expired.
 *
 * The shared bed's ZooKeeper serves the tests that change nothing but their own base path; the
 * outage and expiry tests stop a ZooKeeper of their own, or cut the link to it.
 */
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { ExponentialBackoff } from 'cockatiel';

import { DiscoveryClient, NAMESPACE_ENV, type Instance } from '../../packages/discovery/src/index.ts';
import {
  zookeeperDiscovery,
  zookeeperSource,
  ZOOKEEPER_CODES,
  ZooKeeperReadError,
  type ZooKeeperSourceOptions,
} from '../../packages/discovery/src/zookeeper/index.ts';
import type { Owner, RegistryEntry } from '../../src/registry/types.ts';
import { digestAcl, OPEN_ACL, type ZooKeeperAcl } from '../../src/registry/zookeeper/acl.ts';
import { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import { encodeZooKeeperEntry, SPRING_INSTANCE_CLASS, type ZooKeeperValueFormat } from '../../src/registry/zookeeper/codec.ts';
import { hasZooKeeperCode } from '../../src/registry/zookeeper/errors.ts';
import { ZooKeeperLayout } from '../../src/registry/zookeeper/paths.ts';
import type { ZooKeeperServer } from '../../testbed/zookeeper.ts';
import { bedEnv, uniqueSuffix } from '../support/env.ts';
import { TcpProxy, waitFor } from '../support/faults.ts';
import { startOwnZooKeeper } from '../support/zookeeper.ts';

/** Generous: a loaded 2-core machine, and clients deep in their backoff after an outage. */
const WAIT_MS = 60_000;
/** Quick retries, so that tests spend their time on what they check rather than in backoff. */
const fastBackoff = (): ExponentialBackoff<unknown> => new ExponentialBackoff({ initialDelay: 50, maxDelay: 1_000 });

const OPERATOR: Owner = { clusterId: 'cluster-a', namespace: 'prod', name: 'user-si' };
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
});

/** A session of the operator's client adapter, detached at the end unless the test ended it. */
async function operatorSession(connectString: string, sessionTimeoutMs = 30_000): Promise<ZooKeeperSession> {
  const session = await ZooKeeperSession.connect({ connectString, sessionTimeoutMs, callTimeoutMs: 30_000, connectTimeoutMs: WAIT_MS });
  closers.push(() => session.close());
  return session;
}

/** Base paths made on the bed's server, removed (persistent parents included) at the end. */
const bedBasePaths: string[] = [];

function freshBase(): string {
  return `/disc-zk-${uniqueSuffix()}`;
}

/** Deletes a subtree, children first. */
async function removeTree(session: ZooKeeperSession, path: string): Promise<void> {
  const children = await session.getChildren(path).catch((err: unknown) => {
    if (hasZooKeeperCode(err, 'NO_NODE')) return [];
    throw err;
  });
  for (const child of children) await removeTree(session, `${path}/${child}`);
  await session.remove(path, -1).catch((err: unknown) => {
    if (!hasZooKeeperCode(err, 'NO_NODE')) throw err;
  });
}

/** An entry as the operator builds it for a pod endpoint. */
function operatorEntry(
  registryNamespace: string,
  service: string,
  address: string,
  port: number,
  extra: { weight?: number; tags?: Record<string, string>; metadata?: Record<string, string> } = {},
): RegistryEntry {
  return {
    registryNamespace,
    k8sNamespace: OPERATOR.namespace,
    owner: OPERATOR,
    endpoint: {
      service,
      instanceId: address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`,
      address,
      port,
      weight: extra.weight ?? 1,
      tags: extra.tags ?? {},
      metadata: extra.metadata ?? {},
      source: `pod/${OPERATOR.namespace}/${service}-${port}`,
    },
  };
}

/** The instance a consumer should see for an entry. */
function expected(entry: RegistryEntry): Instance {
  const e = entry.endpoint;
  return { id: e.instanceId, address: e.address, port: e.port, weight: e.weight, tags: e.tags, metadata: e.metadata };
}

/** Creates `path` and its missing ancestors as persistent nodes. */
async function ensurePath(session: ZooKeeperSession, path: string): Promise<void> {
  for (const node of [...ZooKeeperLayout.ancestors(path), path]) {
    await session.create(node, Buffer.alloc(0)).catch((err: unknown) => {
      if (!hasZooKeeperCode(err, 'NODE_EXISTS')) throw err;
    });
  }
}

/** The operator's writes: entry and (hostport) owner index as ephemeral nodes, in one multi. */
class OperatorWriter {
  readonly #session: ZooKeeperSession;
  readonly #layout: ZooKeeperLayout;

  constructor(session: ZooKeeperSession, basePath: string) {
    this.#session = session;
    this.#layout = new ZooKeeperLayout(basePath);
  }

  #paths(entry: RegistryEntry): { entry: string; index: string } {
    const { registryNamespace: ns, endpoint } = entry;
    return {
      entry: this.#layout.entry(ns, endpoint.service, endpoint.instanceId),
      index: this.#layout.ownerIndex(ns, endpoint.service, endpoint.instanceId),
    };
  }

  async create(format: ZooKeeperValueFormat, ...entries: RegistryEntry[]): Promise<void> {
    await this.createWithAcl(format, OPEN_ACL, ...entries);
  }

  async createWithAcl(format: ZooKeeperValueFormat, acl: readonly ZooKeeperAcl[], ...entries: RegistryEntry[]): Promise<void> {
    for (const entry of entries) {
      const paths = this.#paths(entry);
      const encoded = encodeZooKeeperEntry(format, entry, Date.now());
      await ensurePath(this.#session, this.#layout.servicePath(entry.registryNamespace, entry.endpoint.service));
      const ops = [{ op: 'create' as const, path: paths.entry, data: Buffer.from(encoded.value), mode: 'ephemeral' as const, acl }];
      if (encoded.ownerIndex !== undefined) {
        await ensurePath(this.#session, this.#layout.ownerIndexServicePath(entry.registryNamespace, entry.endpoint.service));
        ops.push({ op: 'create', path: paths.index, data: Buffer.from(encoded.ownerIndex), mode: 'ephemeral', acl });
      }
      await this.#session.multi(ops);
    }
  }

  /** Rewrites an entry in place (a weight or tags change), as the operator's update does. */
  async update(format: ZooKeeperValueFormat, entry: RegistryEntry): Promise<void> {
    const paths = this.#paths(entry);
    const encoded = encodeZooKeeperEntry(format, entry, Date.now());
    const ops = [{ op: 'setData' as const, path: paths.entry, data: Buffer.from(encoded.value), version: -1 }];
    if (encoded.ownerIndex !== undefined)
      ops.push({ op: 'setData', path: paths.index, data: Buffer.from(encoded.ownerIndex), version: -1 });
    await this.#session.multi(ops);
  }

  async remove(format: ZooKeeperValueFormat, entry: RegistryEntry): Promise<void> {
    const paths = this.#paths(entry);
    const ops = [{ op: 'remove' as const, path: paths.entry, version: -1 }];
    if (format === 'hostport') ops.push({ op: 'remove', path: paths.index, version: -1 });
    await this.#session.multi(ops);
  }

  /** A node written by hand under the service (garbage, or someone else's registration). */
  async raw(ns: string, service: string, name: string, data: string): Promise<void> {
    await ensurePath(this.#session, this.#layout.servicePath(ns, service));
    await this.#session.create(this.#layout.entry(ns, service, name), Buffer.from(data), { mode: 'ephemeral' });
  }
}

function consumer(options: ZooKeeperSourceOptions): DiscoveryClient {
  const client = new DiscoveryClient({
    source: zookeeperSource({ backoff: fastBackoff(), callTimeoutMs: 5_000, ...options }),
    initialReadTimeoutMs: WAIT_MS,
  });
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

describe('zookeeperSource reads what the operator writes (the bed’s ZooKeeper)', () => {
  const connectString = bedEnv('ZOOKEEPER_CONNECT');
  let session: ZooKeeperSession;
  before(async () => {
    // Registered first, so it runs last: after the writers' sessions took their ephemeral nodes along.
    closers.push(async () => {
      const cleaner = await ZooKeeperSession.connect({ connectString, sessionTimeoutMs: 10_000, callTimeoutMs: 30_000 });
      try {
        for (const path of bedBasePaths) await removeTree(cleaner, path);
      } finally {
        await cleaner.close();
      }
    });
    session = await operatorSession(connectString);
  });

  /** A base path of its own on the bed's server. */
  const bedBase = (): string => {
    const path = freshBase();
    bedBasePaths.push(path);
    return path;
  };

  for (const format of ['curator', 'hostport', 'json'] as const) {
    test(`${format}: the initial read has every entry with its tags, weight and metadata; additions, changes and deletions follow`, async () => {
      const basePath = bedBase();
      const writer = new OperatorWriter(session, basePath);
      const a = operatorEntry('prod', 'user', '10.0.0.1', 8080, {
        weight: 5,
        tags: { zone: 'a', version: '2' },
        metadata: { team: 'core' },
      });
      const b = operatorEntry('prod', 'user', 'fd00::2', 8080, { weight: 0, tags: { zone: 'b' } });
      await writer.create(format, a, b);
      await writer.raw('prod', 'user', 'garbage', 'not an endpoint {');

      const client = consumer({ connectString, basePath, namespace: 'prod' });
      await client.ready('user');
      assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)], 'sorted by instance id, garbage skipped');
      assert.deepEqual(
        (await client.instances('user', { zone: 'a' })).map((i) => i.id),
        ['10.0.0.1:8080'],
        'weight 0 is out of rotation, tags filter',
      );
      assert.equal(client.staleness('user').inSync, true);

      const c = operatorEntry('prod', 'user', '10.0.0.3', 9090, { weight: 2, tags: { zone: 'c' }, metadata: { build: '7' } });
      await writer.create(format, c);
      await waitForSet(client, 'user', [expected(a), expected(b), expected(c)], 'a new node to appear');

      // For hostport, a weight change touches only the owner index node.
      const a2 = operatorEntry('prod', 'user', '10.0.0.1', 8080, { weight: 9, tags: { zone: 'a', version: '3' } });
      await writer.update(format, a2);
      await waitForSet(client, 'user', [expected(a2), expected(b), expected(c)], 'a data change to show');

      await writer.remove(format, b);
      await waitForSet(client, 'user', [expected(a2), expected(c)], 'a deleted node to vanish');
    });
  }

  test('one service holding all three formats and a foreign Curator registration is read whole', async () => {
    const basePath = bedBase();
    const writer = new OperatorWriter(session, basePath);
    const entries = (['curator', 'hostport', 'json'] as const).map((format, i) => ({
      format,
      entry: operatorEntry('prod', 'mixed', `10.0.1.${i + 1}`, 80, { weight: i + 1, tags: { format } }),
    }));
    for (const { format, entry } of entries) await writer.create(format, entry);
    // A Spring Cloud Zookeeper application registered itself beside the operator's entries.
    const spring = {
      name: 'mixed',
      id: '5f2c9a0e-spring',
      address: '10.0.1.99',
      port: 9000,
      sslPort: null,
      payload: { '@class': SPRING_INSTANCE_CLASS, id: 'app-1', name: 'mixed', metadata: { version: '2', weight: '3' } },
      registrationTimeUTC: 5,
      serviceType: 'DYNAMIC',
      uriSpec: { parts: [] },
    };
    await writer.raw('prod', 'mixed', spring.id, JSON.stringify(spring));
    await writer.raw('prod', 'mixed', '10.0.1.7:80', '{"Op":0,"Addr":"10.0.1.7:80"}'); // etcd's grpc value: not a ZooKeeper format

    const client = consumer({ connectString, basePath, namespace: 'prod' });
    await client.ready('mixed');
    const foreign: Instance = {
      id: spring.id,
      address: '10.0.1.99',
      port: 9000,
      weight: 1,
      tags: {},
      metadata: { version: '2', weight: '3' },
    };
    assert.deepEqual(client.cache('mixed').instances, [...entries.map((e) => expected(e.entry)), foreign]);
  });

  test('a service whose node does not exist has no instances until its first entry is written', async () => {
    const basePath = bedBase();
    const writer = new OperatorWriter(session, basePath);
    const client = consumer({ connectString, basePath, namespace: 'prod' });
    await client.ready('late');
    assert.deepEqual(client.cache('late').instances, []);
    assert.equal(client.staleness('late').inSync, true, 'a missing node is an answer, not an outage');

    const a = operatorEntry('prod', 'late', '10.0.7.1', 80, { tags: { zone: 'a' } });
    await writer.create('curator', a);
    await waitForSet(client, 'late', [expected(a)], 'the entry of a service created after the watch began');
  });

  test('the namespace pin: entries of another registry namespace are never returned; the default comes from the environment', async () => {
    const basePath = bedBase();
    const writer = new OperatorWriter(session, basePath);
    const prod = operatorEntry('prod', 'user', '10.0.2.1', 80);
    const staging = operatorEntry('staging', 'user', '10.0.2.2', 80);
    await writer.create('curator', prod, staging);

    const pinned = consumer({ connectString, basePath, namespace: 'prod' });
    await pinned.ready('user');
    assert.deepEqual(pinned.cache('user').instances, [expected(prod)]);
    // A later staging write, then a prod write: once the prod one shows, the staging one has gone by.
    const staging2 = operatorEntry('staging', 'user', '10.0.2.3', 80);
    const prod2 = operatorEntry('prod', 'user', '10.0.2.4', 80);
    await writer.create('curator', staging2);
    await writer.create('curator', prod2);
    await waitForSet(pinned, 'user', [expected(prod), expected(prod2)], 'the later prod entry to show');

    const saved = process.env[NAMESPACE_ENV];
    process.env[NAMESPACE_ENV] = 'staging';
    let fromEnv: DiscoveryClient;
    try {
      fromEnv = consumer({ connectString, basePath });
    } finally {
      if (saved === undefined) delete process.env[NAMESPACE_ENV];
      else process.env[NAMESPACE_ENV] = saved;
    }
    assert.equal(fromEnv.namespace, 'staging');
    await fromEnv.ready('user');
    assert.deepEqual(fromEnv.cache('user').instances, [expected(staging), expected(staging2)]);
  });

  test("entries readable only with the Registry's digest credentials: refused without them (NO_AUTH), read with them", async () => {
    const basePath = bedBase();
    const credentials = `reader-${uniqueSuffix()}:secret`;
    const writer = new OperatorWriter(session, basePath);
    const a = operatorEntry('prod', 'guarded', '10.0.9.1', 80, { weight: 2 });
    const b = operatorEntry('prod', 'guarded', '10.0.9.2', 80, { tags: { zone: 'b' } });
    // The writer needs the identity of the ACL to create nodes under it; reading them back proves it took.
    await session.addDigestAuth(credentials);
    await writer.createWithAcl('hostport', [digestAcl(credentials)], a, b);

    const anonymous = new DiscoveryClient({
      source: zookeeperSource({ connectString, basePath, namespace: 'prod', backoff: fastBackoff() }),
      initialReadTimeoutMs: 1_000,
    });
    closers.push(() => anonymous.close());
    await assert.rejects(anonymous.ready('guarded'), /could not read guarded/);
    const refused = await waitFor('the refusal to be reported', async () => anonymous.staleness('guarded').lastError, WAIT_MS);
    assert.ok(refused instanceof ZooKeeperReadError && refused.code === ZOOKEEPER_CODES.NO_AUTH, String(refused));

    const reader = consumer({ connectString, basePath, namespace: 'prod', digestCredentials: [credentials] });
    await reader.ready('guarded');
    assert.deepEqual(reader.cache('guarded').instances, [expected(a), expected(b)]);
  });

  test('zookeeperDiscovery: picks and calls read the namespace; register() is refused, saying what to use', async () => {
    const basePath = bedBase();
    const writer = new OperatorWriter(session, basePath);
    const a = operatorEntry('prod', 'api', '10.0.8.1', 8080, { tags: { zone: 'a' } });
    await writer.create('hostport', a);
    const client = zookeeperDiscovery({ connectString, basePath, namespace: 'prod', initialReadTimeoutMs: WAIT_MS });
    closers.push(() => client.close());
    assert.deepEqual(await client.pick('api', { zone: 'a' }), expected(a));
    assert.equal(await client.call('api', async (instance) => instance.id), '10.0.8.1:8080');
    await assert.rejects(client.register({ service: 'api', address: '10.0.8.2', port: 80 }), /register\(\) needs a registrar/);
  });
});

describe('through outages and session expiry (a ZooKeeper of its own)', () => {
  let server: ZooKeeperServer;
  before(async () => {
    const own = await startOwnZooKeeper('discovery-zk');
    server = own.server;
    closers.push(() => own.close());
  });

  test('ZooKeeper stopped: the last set keeps being served while staleness grows; after the restart updates resume', async () => {
    const basePath = freshBase();
    // The operator's session outlives the restart (sessions survive one within their timeout).
    const writer = new OperatorWriter(await operatorSession(server.connectString, 60_000), basePath);
    const a = operatorEntry('prod', 'user', '10.0.3.1', 80, { tags: { zone: 'a' } });
    const b = operatorEntry('prod', 'user', '10.0.3.2', 80, { weight: 3 });
    await writer.create('hostport', a, b);

    const client = consumer({ connectString: server.connectString, basePath, namespace: 'prod', sessionTimeoutMs: 60_000 });
    await client.ready('user');
    assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)]);

    await server.stop();
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

    await server.start();
    const c = operatorEntry('prod', 'user', '10.0.3.3', 80, { metadata: { after: 'restart' } });
    await writer.remove('hostport', a);
    await writer.create('hostport', c);
    await waitForSet(client, 'user', [expected(b), expected(c)], 'the client to catch up after the restart');
    await waitFor('the client to be in sync', async () => (client.staleness('user').inSync ? true : undefined), WAIT_MS);
  });

  test('a session that expired while the link was cut is replaced by a new one, and everything is read again', async () => {
    const proxy = await TcpProxy.start(`http://${server.connectString}`);
    closers.push(() => proxy.close());
    const viaProxy = `127.0.0.1:${proxy.port}`;
    const basePath = freshBase();
    const writer = new OperatorWriter(await operatorSession(server.connectString), basePath);
    const a = operatorEntry('prod', 'user', '10.0.12.1', 80);
    const b = operatorEntry('prod', 'user', '10.0.12.2', 80, { weight: 4 });
    await writer.create('json', a, b);

    const logs: string[] = [];
    const log = (_fields: object, message: string): void => void logs.push(message);
    const client = consumer({
      connectString: viaProxy,
      basePath,
      namespace: 'prod',
      sessionTimeoutMs: 2_000,
      logger: { debug: log, info: log, warn: log, error: log },
    });
    await client.ready('user');
    assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)]);

    // A witness through the same link with a longer session: once its ephemeral node is gone, the
    // client's shorter session has certainly expired too.
    const witness = await operatorSession(viaProxy, 4_000);
    const witnessNode = `${basePath}/witness`;
    await witness.create(witnessNode, Buffer.alloc(0), { mode: 'ephemeral' });
    const observer = await operatorSession(server.connectString);

    // Black-holed, not closed: the link goes silent, as in a partition that drops packets, which the
    // library alone would never notice.
    proxy.cut('blackhole');
    await waitFor('the client to notice the cut', async () => (client.staleness('user').inSync ? undefined : true), WAIT_MS);
    await writer.remove('json', a);
    const c = operatorEntry('prod', 'user', '10.0.12.3', 80, { tags: { after: 'expiry' } });
    await writer.create('json', c);
    await waitFor(
      'the sessions behind the cut to expire',
      async () => ((await observer.exists(witnessNode)) === undefined ? true : undefined),
      WAIT_MS,
    );
    assert.deepEqual(client.cache('user').instances, [expected(a), expected(b)], 'the last set is served meanwhile');
    proxy.heal();

    await waitForSet(client, 'user', [expected(b), expected(c)], 'the client to read everything again on a new session');
    assert.ok(logs.includes('ZooKeeper session ended; opening a new one'), logs.join('; '));
    await waitFor('the client to be in sync', async () => (client.staleness('user').inSync ? true : undefined), WAIT_MS);

    // The new session's watches work: a change after the expiry still arrives.
    await writer.remove('json', b);
    await waitForSet(client, 'user', [expected(c)], 'a delete after the new session to show');
  });
});

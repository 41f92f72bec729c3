/**
 * What the operator writes to ZooKeeper, read by readers nobody here wrote: Apache Curator 5.9
 * x-discovery with Spring Cloud Zookeeper's payload class and Spring's own ZookeeperServiceInstance
 * adapter (what Spring's DiscoveryClient hands an application), Curator with `Object` and `Void`
 * payloads, and a plain org.apache.zookeeper.ZooKeeper client for `hostport`. They run in the bed's
 * zookeeper-java-reader (tools/zookeeper-java-reader, built from Maven Central by provisioning).
 *
 * Entries are written by the operator's own ZooKeeper backend, reconciled as the controller does,
 * under a base path of each test's own. Each Java run is
 * a fresh process reading once, so what it prints is what a consumer starting now would see.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { formatHostPort } from '../../src/registry/etcd/codec.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';
import { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import { SPRING_INSTANCE_CLASS, springMetadata, type ZooKeeperValueFormat } from '../../src/registry/zookeeper/codec.ts';
import { ZooKeeperLayout } from '../../src/registry/zookeeper/paths.ts';
import { ZooKeeperRegistry } from '../../src/registry/zookeeper/zookeeper-registry.ts';
import { bedEnv, uniqueSuffix } from '../support/env.ts';
import { reconcileOnce } from '../support/reconcile.ts';
import { removeTree } from '../support/zookeeper.ts';

const execFileAsync = promisify(execFile);

const REGISTRY_NAMESPACE = 'prod';
const REGISTERED_AT_MS = 1_732_960_000_000;
// A JVM start and one ZooKeeper read take about a second; this is for a loaded 2-core machine.
const JAVA_RUN_TIMEOUT_MS = 120_000;

/** A line of `curator` mode: Curator's ServiceInstance as its getters return it. */
interface CuratorLine {
  readonly id: string;
  readonly name: string;
  readonly address: string;
  readonly port: number | null;
  readonly sslPort: number | null;
  readonly serviceType: string;
  readonly registrationTimeUTC: number;
  readonly enabled: boolean;
  readonly uri: string;
  readonly payloadClass: string | null;
  readonly metadata: Record<string, string> | null;
}

/** A line of `spring` mode: Spring's ZookeeperServiceInstance as its getters return it. */
interface SpringLine {
  readonly serviceId: string;
  readonly host: string;
  readonly port: number;
  readonly secure: boolean;
  readonly uri: string;
  readonly metadata: Record<string, string>;
  readonly id: string;
}

/** A line of `hostport` mode: one child of the service node and its data. */
interface HostPortLine {
  readonly node: string;
  readonly data: string;
}

/** Runs the Java reader once and parses its JSON lines; a failure carries the reader's stderr. */
async function readJava<T>(...args: string[]): Promise<T[]> {
  try {
    const { stdout } = await execFileAsync(bedEnv('ZOOKEEPER_JAVA_READER'), args, { timeout: JAVA_RUN_TIMEOUT_MS });
    return stdout
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as T);
  } catch (err: unknown) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`zookeeper-java-reader ${args.join(' ')} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}

const sessions: ZooKeeperSession[] = [];
const basePaths: string[] = [];

async function openSession(digestCredentials?: string[]): Promise<ZooKeeperSession> {
  const session = await ZooKeeperSession.connect({
    connectString: bedEnv('ZOOKEEPER_CONNECT'),
    sessionTimeoutMs: 30_000,
    callTimeoutMs: 30_000,
    connectTimeoutMs: 60_000,
    ...(digestCredentials ? { digestCredentials } : {}),
  });
  sessions.push(session);
  return session;
}

/** A layout under a base path of its own, removed at the end of the file. */
function uniqueLayout(): ZooKeeperLayout {
  const layout = new ZooKeeperLayout(`/interop-${uniqueSuffix()}`);
  basePaths.push(layout.basePath);
  return layout;
}

function entry(
  service: string,
  address: string,
  port: number,
  more: { weight?: number; tags?: Record<string, string>; metadata?: Record<string, string> } = {},
): RegistryEntry {
  return {
    registryNamespace: REGISTRY_NAMESPACE,
    k8sNamespace: 'shop',
    owner: { clusterId: 'cluster-a', namespace: 'shop', name: service },
    endpoint: {
      service,
      instanceId: formatHostPort(address, port),
      address,
      port,
      weight: more.weight ?? 1,
      tags: more.tags ?? {},
      metadata: more.metadata ?? {},
      source: `static/shop/${service}/0`,
    },
  };
}

/** The operator's ZooKeeper backend for one layout and format, as a Registry of that spec builds it. */
function operatorBackend(layout: ZooKeeperLayout, format: ZooKeeperValueFormat): ZooKeeperRegistry {
  const backend = new ZooKeeperRegistry({
    servers: bedEnv('ZOOKEEPER_CONNECT'),
    basePath: layout.basePath,
    format,
    clusterId: 'cluster-a',
    registryName: 'interop',
    sessionTimeoutMs: 10_000,
    callTimeoutMs: 30_000,
    now: () => REGISTERED_AT_MS,
  });
  backends.push(backend);
  return backend;
}

/** Converges `service` in the backend to `entries`, as one reconcile of its ServiceInstance does. */
async function publish(backend: ZooKeeperRegistry, service: string, entries: readonly RegistryEntry[]): Promise<void> {
  const owner = { clusterId: 'cluster-a', namespace: 'shop', name: service };
  const conflicts = await reconcileOnce(backend, owner, { registryNamespace: REGISTRY_NAMESPACE, service }, [...entries]);
  assert.deepEqual(conflicts, []);
}

const backends: ZooKeeperRegistry[] = [];

after(async () => {
  for (const backend of backends.splice(0)) await backend.close();
  const admin = await openSession([bedEnv('ZOOKEEPER_SUPER_AUTH')]);
  for (const base of basePaths) await removeTree(admin, base);
  for (const session of sessions.splice(0)) await session.close();
});

describe('format curator, read by Curator x-discovery and Spring Cloud Zookeeper', () => {
  const checkout = [
    entry('checkout', '10.1.2.3', 8080, { weight: 5, tags: { zone: 'a' }, metadata: { version: '2.1', team: 'payments' } }),
    entry('checkout', '10.1.2.4', 8080, { weight: 1, tags: { zone: 'b' } }),
    entry('checkout', '10.1.2.5', 9090, { weight: 3, metadata: { version: '2.2' } }),
  ];
  const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

  test('every instance is seen with its address, port, string metadata (weight included) and http://address:port', async () => {
    const layout = uniqueLayout();
    const backend = operatorBackend(layout, 'curator');
    await publish(backend, 'checkout', checkout);
    await publish(backend, 'cart', [entry('cart', '10.1.3.1', 7000)]);
    const basePath = layout.namespacePath(REGISTRY_NAMESPACE);

    const curator = await readJava<CuratorLine>('curator', bedEnv('ZOOKEEPER_CONNECT'), basePath, 'checkout', 'spring');
    assert.deepEqual(
      curator,
      checkout
        .map((e) => ({
          id: e.endpoint.instanceId,
          name: 'checkout',
          address: e.endpoint.address,
          port: e.endpoint.port,
          sslPort: null,
          serviceType: 'DYNAMIC',
          registrationTimeUTC: REGISTERED_AT_MS,
          enabled: true,
          uri: `http://${e.endpoint.address}:${e.endpoint.port}`,
          payloadClass: SPRING_INSTANCE_CLASS,
          metadata: springMetadata(e),
        }))
        .sort(byId),
    );
    assert.deepEqual(
      curator[0]?.metadata,
      { team: 'payments', version: '2.1', weight: '5', zone: 'a' },
      'tags, weight and metadata as strings',
    );

    const spring = await readJava<SpringLine>('spring', bedEnv('ZOOKEEPER_CONNECT'), basePath, 'checkout');
    assert.deepEqual(
      spring,
      checkout
        .map((e) => ({
          serviceId: 'checkout',
          host: e.endpoint.address,
          port: e.endpoint.port,
          secure: false,
          uri: `http://${e.endpoint.address}:${e.endpoint.port}`,
          metadata: springMetadata(e),
          id: e.endpoint.instanceId,
        }))
        .sort(byId),
    );

    // Spring's class is on this reader's class path, so a ServiceDiscovery<Object> gets it too.
    const untyped = await readJava<CuratorLine>('curator', bedEnv('ZOOKEEPER_CONNECT'), basePath, 'checkout', 'object');
    assert.deepEqual(
      untyped.map((l) => [l.id, l.payloadClass, l.metadata]),
      curator.map((l) => [l.id, SPRING_INSTANCE_CLASS, l.metadata]),
    );

    // The services of the namespace, and nothing of kube-registrar's own bookkeeping.
    const names = await readJava<{ services: string[] }>('services', bedEnv('ZOOKEEPER_CONNECT'), basePath);
    assert.deepEqual(names, [{ services: ['cart', 'checkout'] }]);
  });

  test('a ServiceDiscovery<Void> consumer cannot read the Spring payload (the documented trap)', async () => {
    const layout = uniqueLayout();
    await publish(operatorBackend(layout, 'curator'), 'checkout', [checkout[0]!]);
    const basePath = layout.namespacePath(REGISTRY_NAMESPACE);
    // The same node reads fine with Spring's class: the failure below is the payload type's alone.
    assert.equal((await readJava<CuratorLine>('curator', bedEnv('ZOOKEEPER_CONNECT'), basePath, 'checkout', 'spring')).length, 1);
    await assert.rejects(
      readJava<CuratorLine>('curator', bedEnv('ZOOKEEPER_CONNECT'), basePath, 'checkout', 'void'),
      /ClassCastException.*ZookeeperInstance/,
    );
  });

  test('an IPv6 instance has the right host and port, but Curator builds its URI without brackets', async () => {
    const layout = uniqueLayout();
    await publish(operatorBackend(layout, 'curator'), 'checkout', [entry('checkout', 'fd00::7', 8080)]);
    const spring = await readJava<SpringLine>('spring', bedEnv('ZOOKEEPER_CONNECT'), layout.namespacePath(REGISTRY_NAMESPACE), 'checkout');
    assert.deepEqual(
      spring.map((l) => [l.id, l.host, l.port, l.uri]),
      // UriSpec pastes {address} as it is: consumers of IPv6 entries must use getHost()/getPort().
      [['[fd00::7]:8080', 'fd00::7', 8080, 'http://fd00::7:8080']],
    );
  });

  test('a deleted entry leaves the list, and the last one leaving empties it', async () => {
    const layout = uniqueLayout();
    const backend = operatorBackend(layout, 'curator');
    await publish(backend, 'checkout', checkout);
    const basePath = layout.namespacePath(REGISTRY_NAMESPACE);
    const ids = async (): Promise<string[]> =>
      (await readJava<CuratorLine>('curator', bedEnv('ZOOKEEPER_CONNECT'), basePath, 'checkout', 'spring')).map((l) => l.id);
    const all = checkout.map((e) => e.endpoint.instanceId).sort();
    assert.deepEqual(await ids(), all);

    const gone = checkout[1]!.endpoint.instanceId;
    await publish(
      backend,
      'checkout',
      checkout.filter((e) => e.endpoint.instanceId !== gone),
    );
    assert.deepEqual(
      await ids(),
      all.filter((id) => id !== gone),
    );

    await publish(backend, 'checkout', []);
    assert.deepEqual(await ids(), [], 'no instance left');
  });
});

describe('format hostport, read by a plain ZooKeeper client', () => {
  test('the children of the service node hold ip:port, and a deleted one is no longer listed', async () => {
    const layout = uniqueLayout();
    const backend = operatorBackend(layout, 'hostport');
    const entries = [entry('ledger', '10.2.0.7', 5432), entry('ledger', 'fd00::7', 5433)];
    await publish(backend, 'ledger', entries);
    const servicePath = layout.servicePath(REGISTRY_NAMESPACE, 'ledger');

    const before = await readJava<HostPortLine>('hostport', bedEnv('ZOOKEEPER_CONNECT'), servicePath);
    assert.deepEqual(before, [
      { node: '10.2.0.7:5432', data: '10.2.0.7:5432' },
      { node: '[fd00::7]:5433', data: '[fd00::7]:5433' },
    ]);

    await publish(backend, 'ledger', [entries[1]!]);
    const afterDelete = await readJava<HostPortLine>('hostport', bedEnv('ZOOKEEPER_CONNECT'), servicePath);
    assert.deepEqual(afterDelete, [{ node: '[fd00::7]:5433', data: '[fd00::7]:5433' }]);
  });
});

/**
 * The owner-wide sweep above the backend boundary: an in-memory registry, in-memory caches, a fake
 * clock. What it may remove and what it must leave alone.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';

import type { Registry as RegistryResource, ServiceInstance } from '../../src/api/v1alpha1/types.ts';
import { GarbageCollector } from '../../src/controller/garbage-collector.ts';
import type { Clock } from '../../src/clock.ts';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import type { Backend } from '../../src/registry/provider.ts';
import type { Owner, RegistryEntry } from '../../src/registry/types.ts';
import { registryResource, staticServiceInstance } from '../support/resources.ts';

const CLUSTER = 'cluster-a';

const registry = registryResource;
const serviceInstance = staticServiceInstance;

function entry(owner: Owner, service: string, address = '10.0.0.1'): RegistryEntry {
  return {
    registryNamespace: owner.namespace,
    k8sNamespace: owner.namespace,
    owner,
    endpoint: { service, instanceId: `${address}:80`, address, port: 80, weight: 1, tags: {}, metadata: {}, source: 'static' },
  };
}

/** An in-memory backend that can list what a cluster owns, as the real backends do. */
function backendOver(store: InMemoryRegistry, dryRun = false): Backend {
  return {
    records: (scope) => store.records(scope),
    applyChanges: (changes) => (dryRun ? Promise.resolve() : store.applyChanges(changes)),
    close: () => store.close(),
    dryRun,
    ownedByCluster: () => Promise.resolve(store.entries().filter((e) => e.owner.clusterId === CLUSTER)),
  };
}

const noTimers: Clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => undefined };

function collector(
  registries: RegistryResource[],
  backends: Map<string, Backend>,
  instances: ServiceInstance[],
  watchNamespaces: string[] = [],
  built = true,
): { gc: GarbageCollector; collected: Map<string, number> } {
  const collected = new Map<string, number>();
  const gc = new GarbageCollector({
    clusterId: CLUSTER,
    caches: {
      serviceInstance: (key) => instances.find((si) => `${si.metadata?.namespace ?? ''}/${si.metadata?.name ?? ''}` === key),
      pods: () => [],
      registries: () => registries,
      namespaceLabels: () => ({}),
      allServiceInstances: () => instances,
    },
    backends: { get: (reg) => Promise.resolve(backends.get(reg.metadata?.name ?? '') as Backend), isBuilt: () => built },
    logger: pino({ level: 'silent' }),
    watchNamespaces,
    intervalMs: 60_000,
    clock: noTimers,
    onCollected: (name, n) => collected.set(name, (collected.get(name) ?? 0) + n),
  });
  return { gc, collected };
}

const keepOwner: Owner = { clusterId: CLUSTER, namespace: 'prod', name: 'keep' };
const goneOwner: Owner = { clusterId: CLUSTER, namespace: 'prod', name: 'gone' };
const renamedOwner: Owner = { clusterId: CLUSTER, namespace: 'prod', name: 'renamed' };
const foreignOwner: Owner = { clusterId: 'cluster-b', namespace: 'prod', name: 'gone' };
const otherInstallOwner: Owner = { clusterId: CLUSTER, namespace: 'elsewhere', name: 'gone' };

void describe('GarbageCollector', () => {
  void it('removes entries whose ServiceInstance is gone or no longer targets their service, and leaves wanted and foreign ones', async () => {
    const store = new InMemoryRegistry([
      entry(keepOwner, 'keep'),
      entry(goneOwner, 'gone'),
      entry(renamedOwner, 'old-name'),
      entry(renamedOwner, 'new-name'),
      entry(foreignOwner, 'gone', '10.0.0.9'),
    ]);
    const { gc, collected } = collector([registry('main')], new Map([['main', backendOver(store)]]), [
      serviceInstance('prod', 'keep', 'keep'),
      serviceInstance('prod', 'renamed', 'new-name'),
    ]);
    const result = await gc.sweep();
    assert.deepEqual(
      store
        .entries()
        .map((e) => `${e.owner.clusterId}/${e.owner.name}/${e.endpoint.service}`)
        .sort(),
      ['cluster-a/keep/keep', 'cluster-a/renamed/new-name', 'cluster-b/gone/gone'],
    );
    assert.equal(result.collected.get('main'), 2);
    assert.equal(collected.get('main'), 2, 'the metric hook counts what was removed');
  });

  void it('never sweeps an upsert-only Registry, and only logs in a dry run', async () => {
    const upsert = new InMemoryRegistry([entry(goneOwner, 'gone')]);
    const dry = new InMemoryRegistry([entry(goneOwner, 'gone')]);
    const { gc, collected } = collector(
      [registry('upsert', { policy: 'upsert-only' }), registry('dry', { dryRun: true })],
      new Map([
        ['upsert', backendOver(upsert)],
        ['dry', backendOver(dry, true)],
      ]),
      [],
    );
    await gc.sweep();
    assert.equal(upsert.entries().length, 1);
    assert.equal(dry.entries().length, 1);
    assert.equal(collected.size, 0);
  });

  void it('leaves entries of namespaces this operator does not watch to the install that does', async () => {
    const store = new InMemoryRegistry([entry(otherInstallOwner, 'gone'), entry(goneOwner, 'gone')]);
    const { gc } = collector([registry('main')], new Map([['main', backendOver(store)]]), [], ['prod']);
    await gc.sweep();
    assert.deepEqual(
      store.entries().map((e) => e.owner.namespace),
      ['elsewhere'],
    );
  });

  void it('a Registry that cannot be read is reported and skipped, the others are still swept', async () => {
    const store = new InMemoryRegistry([entry(goneOwner, 'gone')]);
    const broken: Backend = {
      ...backendOver(new InMemoryRegistry()),
      ownedByCluster: () => Promise.reject(new Error('connection refused')),
    };
    const { gc } = collector(
      [registry('broken'), registry('main')],
      new Map([
        ['broken', broken],
        ['main', backendOver(store)],
      ]),
      [],
    );
    const result = await gc.sweep();
    assert.match(result.failed.get('broken') ?? '', /connection refused/);
    assert.equal(store.entries().length, 0);
  });

  void it('keeps an entry that another Registry of its ServiceInstance writes: two Registries may reach the same storage', async () => {
    // `bulk` and `main` point at the same agent; the ServiceInstance targets only `main`.
    const store = new InMemoryRegistry([entry(keepOwner, 'keep')]);
    const { gc } = collector(
      [registry('main'), registry('bulk', { default: false })],
      new Map([
        ['main', backendOver(store)],
        ['bulk', backendOver(store)],
      ]),
      [serviceInstance('prod', 'keep', 'keep')],
    );
    await gc.sweep();
    assert.equal(store.entries().length, 1);
  });

  void it('does not build a backend for a Registry that nothing targets and no backend serves', async () => {
    // No backend in the map: asking for one would fail the sweep of that Registry.
    const { gc } = collector([registry('unused', { default: false })], new Map(), [], [], false);
    const result = await gc.sweep();
    assert.equal(result.failed.size, 0);
    assert.equal(result.collected.size, 0);
  });
});

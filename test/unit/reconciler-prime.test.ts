/**
 * The reconciler's first pass: every ServiceInstance's entries handed to a batching backend at once,
 * before the work queue starts, and the reconciles after it reporting what it wrote. Above the
 * backend boundary: an in-memory registry and in-memory caches, no servers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';

import { FINALIZER, type ServiceInstance, type ServiceInstanceStatus } from '../../src/api/v1alpha1/types.ts';
import { ServiceInstanceReconciler } from '../../src/controller/service-instance-reconciler.ts';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import type { Backend } from '../../src/registry/provider.ts';
import type { Changes, RegistryEntry, Scope } from '../../src/registry/types.ts';
import type { SlimPod } from '../../src/source/pods.ts';
import { registryResource, staticServiceInstance } from '../support/resources.ts';

/** The in-memory registry, counting the applyChanges calls it got and able to claim it batches them. */
class CountingRegistry implements Backend {
  readonly inner: InMemoryRegistry;
  readonly batchesWrites: boolean;
  readonly writeBatch?: number;
  applied = 0;
  /** Entries written by each applyChanges call. */
  readonly sizes: number[] = [];
  constructor(batchesWrites: boolean, entries: readonly RegistryEntry[] = [], writeBatch?: number) {
    this.inner = new InMemoryRegistry(entries);
    this.batchesWrites = batchesWrites;
    if (writeBatch !== undefined) this.writeBatch = writeBatch;
  }
  records(scope: Scope): Promise<RegistryEntry[]> {
    return this.inner.records(scope);
  }
  applyChanges(changes: Changes): Promise<void> {
    this.applied++;
    this.sizes.push(changes.create.length + changes.updateNew.length + changes.delete.length);
    return this.inner.applyChanges(changes);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A reconciler over the cached objects in `cache`, whose finalizer and status writes are only recorded. */
function setUp(
  backend: Backend,
  objects: readonly ServiceInstance[],
  registry = registryResource('main'),
  pods: readonly SlimPod[] = [],
): {
  reconciler: ServiceInstanceReconciler;
  cache: Map<string, ServiceInstance>;
  statuses: Map<string, ServiceInstanceStatus>;
  events: { key: string; reason: string; message: string }[];
} {
  const cache = new Map(objects.map((si) => [`${si.metadata?.namespace ?? ''}/${si.metadata?.name ?? ''}`, si]));
  const statuses = new Map<string, ServiceInstanceStatus>();
  const events: { key: string; reason: string; message: string }[] = [];
  const keyOf = (t: { namespace?: string; name: string }): string => `${t.namespace ?? ''}/${t.name}`;
  const reconciler = new ServiceInstanceReconciler({
    clusterId: 'cluster-a',
    caches: {
      serviceInstance: (key) => cache.get(key),
      pods: (ns) => pods.filter((p) => p.metadata.namespace === ns),
      registries: () => [registry],
      namespaceLabels: () => ({}),
    },
    backends: { get: () => Promise.resolve(backend) },
    writer: {
      addFinalizer: () => Promise.resolve(),
      removeFinalizer: () => Promise.resolve(),
      patchStatus: (si, status) => {
        statuses.set(`${si.metadata?.namespace ?? ''}/${si.metadata?.name ?? ''}`, status);
        return Promise.resolve();
      },
    },
    events: {
      normal: (t, reason, message) => events.push({ key: keyOf(t), reason, message }),
      warning: (t, reason, message) => events.push({ key: keyOf(t), reason, message }),
    },
    logger: pino({ level: 'silent' }),
    now: () => new Date('2026-12-01T00:00:00Z'),
    resyncMs: 60_000,
  });
  return { reconciler, cache, statuses, events };
}

function fleet(n: number, finalizers: string[] = [FINALIZER]): ServiceInstance[] {
  return Array.from({ length: n }, (_, i) =>
    staticServiceInstance(`ns${i % 3}`, `si${i}`, `svc${i}`, { uid: `u${i}`, generation: 1, finalizers }),
  );
}

async function entriesOf(backend: CountingRegistry, si: ServiceInstance): Promise<RegistryEntry[]> {
  return backend.records({ registryNamespace: si.metadata?.namespace ?? '', service: si.spec.service });
}

void describe('ServiceInstanceReconciler.prime', () => {
  void it('writes every ServiceInstance’s entries at once, and the reconciles after it report them without writing again', async () => {
    const backend = new CountingRegistry(true);
    const objects = fleet(30);
    const { reconciler, cache, statuses, events } = setUp(backend, objects);
    const summary = await reconciler.prime(objects);
    assert.deepEqual({ scopes: summary.scopes, entries: summary.entries, failed: summary.failed }, { scopes: 30, entries: 30, failed: 0 });
    for (const si of objects) assert.equal((await entriesOf(backend, si)).length, 1, `${si.metadata?.name ?? ''} has its entry`);
    // 30 ServiceInstances over three registry namespaces (ns0, ns1, ns2): one backend call each.
    assert.equal(backend.applied, 3, 'the writes of each registry namespace go to the backend in one call');
    const writesByPrime = backend.applied;

    for (const key of cache.keys()) await reconciler.reconcile(key);
    assert.equal(backend.applied, writesByPrime, 'the reconciles found every entry in place');
    assert.equal(statuses.size, 30);
    for (const [key, status] of statuses) {
      assert.equal(status.registrations?.[0]?.entries, 1, key);
      assert.equal(status.registrations?.[0]?.lastSyncTime, '2026-12-01T00:00:00Z', `${key}: a first registration has a sync time`);
    }
    const registered = events.filter((e) => e.reason === 'Registered');
    assert.equal(registered.length, 30, 'each ServiceInstance announces what the first pass registered for it, once');
    assert.match(registered[0]?.message ?? '', /registered 1 and updated 0 endpoint/);

    // The next round writes nothing and announces nothing: what was primed was reported once.
    for (const [key, si] of cache) cache.set(key, { ...si, status: statuses.get(key) });
    statuses.clear();
    for (const key of cache.keys()) await reconciler.reconcile(key);
    assert.equal(events.filter((e) => e.reason === 'Registered').length, 30);
    assert.equal(statuses.size, 0);
  });

  void it('hands a backend that names its batch whole multiples of it, so that no write goes out partly filled', async () => {
    // A batch of 7 entries: groups of 7 × 37 = 259 (the multiple nearest to 256), after a first
    // group of 16 that settles the namespace (its lease) while the rest is planned.
    const backend = new CountingRegistry(true, [], 7);
    const objects = Array.from({ length: 1000 }, (_, i) =>
      staticServiceInstance('ns0', `si${i}`, `svc${i}`, { uid: `u${i}`, generation: 1, finalizers: [FINALIZER] }),
    );
    const summary = await setUp(backend, objects).reconciler.prime(objects);
    assert.equal(summary.entries, 1000);
    assert.deepEqual(backend.sizes, [16, 259, 259, 259, 207]);
    const plain = new CountingRegistry(true);
    await setUp(plain, objects).reconciler.prime(objects);
    assert.deepEqual(plain.sizes, [16, 256, 256, 256, 216], 'without a named batch, groups of 256');
  });

  void it('after an outage puts every entry back without a status write or an event', async () => {
    const backend = new CountingRegistry(true);
    const objects = fleet(6);
    const first = setUp(backend, objects);
    for (const key of first.cache.keys()) await first.reconciler.reconcile(key);
    assert.equal(first.statuses.size, 6);
    const converged = objects.map((si) => ({
      ...si,
      status: first.statuses.get(`${si.metadata?.namespace ?? ''}/${si.metadata?.name ?? ''}`),
    }));
    // Every lease expired while no operator ran.
    for (const si of objects)
      await backend.applyChanges({ create: [], updateOld: [], updateNew: [], delete: await entriesOf(backend, si) });
    for (const si of objects) assert.equal((await entriesOf(backend, si)).length, 0);

    const restarted = setUp(backend, converged);
    const summary = await restarted.reconciler.prime(converged);
    assert.equal(summary.entries, 6);
    for (const si of objects) assert.equal((await entriesOf(backend, si)).length, 1, 'the entry is back');
    for (const key of restarted.cache.keys()) await restarted.reconciler.reconcile(key);
    assert.equal(restarted.statuses.size, 0, 'nothing a ServiceInstance registers changed: no status write');
    assert.deepEqual(restarted.events, [], 'and no event');
  });

  void it('leaves to the reconciles: backends that do not batch, dry runs, health-checked and deleted ServiceInstances', async () => {
    const plain = new CountingRegistry(false);
    const objects = fleet(3);
    assert.equal((await setUp(plain, objects).reconciler.prime(objects)).scopes, 0);
    assert.equal(plain.applied, 0, 'a backend without batched writes gets nothing from the first pass');

    const batching = new CountingRegistry(true);
    assert.equal((await setUp(batching, objects, registryResource('main', { dryRun: true })).reconciler.prime(objects)).scopes, 0);
    assert.equal(batching.applied, 0, 'a dry-run Registry gets nothing written');

    const [checked, deleting] = fleet(2);
    assert.ok(checked && deleting);
    const special = [
      { ...checked, spec: { ...checked.spec, healthCheck: { tcp: {} } } },
      { ...deleting, metadata: { ...deleting.metadata, deletionTimestamp: new Date('2026-12-01T00:00:00Z') } },
    ] as ServiceInstance[];
    assert.equal((await setUp(batching, special).reconciler.prime(special)).scopes, 0);
    assert.equal(batching.applied, 0, 'health-checked endpoints wait for their probes, deleted objects register nothing');
  });

  void it('never touches a foreign entry: the reconcile after it reports the collision', async () => {
    const objects = fleet(2);
    const [mine, other] = objects;
    assert.ok(mine && other);
    const foreign: RegistryEntry = {
      registryNamespace: 'ns0',
      k8sNamespace: 'ns0',
      owner: { clusterId: 'cluster-b', namespace: 'ns0', name: 'theirs' },
      endpoint: {
        service: 'svc0',
        instanceId: '10.0.0.1:80',
        address: '10.0.0.1',
        port: 80,
        weight: 5,
        tags: {},
        metadata: {},
        source: 'x',
      },
    };
    const backend = new CountingRegistry(true, [foreign]);
    const { reconciler, cache, events } = setUp(backend, objects);
    const summary = await reconciler.prime(objects);
    assert.equal(summary.entries, 1, 'only the entry without a collision is written');
    assert.deepEqual(await entriesOf(backend, mine), [foreign], 'the foreign entry is untouched');
    assert.equal((await entriesOf(backend, other)).length, 1);
    for (const key of cache.keys()) await reconciler.reconcile(key);
    assert.ok(events.some((e) => e.key === 'ns0/si0' && e.reason === 'OwnershipConflict'));
    assert.deepEqual(await entriesOf(backend, mine), [foreign]);
  });

  void it('removes what it wrote for a ServiceInstance that goes before its finalizer landed', async () => {
    const backend = new CountingRegistry(true);
    const objects = fleet(2, []);
    const [gone, kept] = objects;
    assert.ok(gone && kept);
    const { reconciler, cache } = setUp(backend, objects);
    await reconciler.prime(objects);
    assert.equal((await entriesOf(backend, gone)).length, 1);
    cache.delete('ns0/si0');
    await reconciler.reconcile('ns0/si0');
    assert.deepEqual(await entriesOf(backend, gone), [], 'no entry outlives its ServiceInstance');
    assert.equal((await entriesOf(backend, kept)).length, 1);
  });

  void it('registers the ready pods each selector matches, matchLabels and matchExpressions alike', async () => {
    const pod = (name: string, labels: Record<string, string>, ip: string, ready = true): SlimPod => ({
      metadata: { name, namespace: 'ns0', labels, terminating: false },
      ip,
      ready,
      finished: false,
      ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
    });
    const pods = [
      pod('a-1', { app: 'a', tier: 'web' }, '10.1.0.1'),
      pod('a-2', { app: 'a', tier: 'db' }, '10.1.0.2'),
      pod('a-3', { app: 'a', tier: 'web' }, '10.1.0.3', false),
      pod('b-1', { app: 'b', tier: 'web' }, '10.1.0.4'),
    ];
    const selecting = (name: string, selector: NonNullable<ServiceInstance['spec']['selector']>): ServiceInstance => ({
      apiVersion: 'registrar.dev/v1alpha1',
      kind: 'ServiceInstance',
      metadata: { namespace: 'ns0', name, uid: name, generation: 1, finalizers: [FINALIZER] },
      spec: { service: name, selector, port: 'http', weight: 1 },
    });
    const objects = [
      selecting('web-a', { matchLabels: { app: 'a', tier: 'web' } }),
      selecting('not-db', { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['db'] }] }),
    ];
    const backend = new CountingRegistry(true);
    await setUp(backend, objects, registryResource('main'), pods).reconciler.prime(objects);
    const addresses = async (service: string): Promise<string[]> =>
      (await backend.records({ registryNamespace: 'ns0', service })).map((e) => e.endpoint.instanceId).sort();
    assert.deepEqual(await addresses('web-a'), ['10.1.0.1:8080'], 'both labels must match, and only ready pods count');
    assert.deepEqual(await addresses('not-db'), ['10.1.0.1:8080', '10.1.0.4:8080']);
  });
});

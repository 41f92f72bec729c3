/**
 * The ServiceInstance reconciler with its finalizer and status written behind its back: entries go
 * first, and still none outlives its ServiceInstance; a registry that lost its entries gets them
 * back without a status write or an event per ServiceInstance. Above the backend boundary: an
 * in-memory registry and in-memory caches, no servers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';

import { FINALIZER, type ServiceInstance, type ServiceInstanceStatus } from '../../src/api/v1alpha1/types.ts';
import { ServiceInstanceReconciler } from '../../src/controller/service-instance-reconciler.ts';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import { registryResource, staticServiceInstance } from '../support/resources.ts';

const registry = registryResource('main');
const scope = { registryNamespace: 'prod', service: 'api' };

/** `value` as the apiserver returns it: every object's keys in alphabetical order. */
function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, sortedKeys((value as Record<string, unknown>)[k])]),
  );
}

/** A reconciler over one cached object (`cache.si`), whose finalizer and status writes are only recorded. */
function setUp(): {
  reconciler: ServiceInstanceReconciler;
  backend: InMemoryRegistry;
  cache: { si: ServiceInstance | undefined };
  writes: string[];
  statuses: ServiceInstanceStatus[];
  events: string[];
} {
  const backend = new InMemoryRegistry([]);
  const cache: { si: ServiceInstance | undefined } = { si: undefined };
  const writes: string[] = [];
  const statuses: ServiceInstanceStatus[] = [];
  const events: string[] = [];
  const reconciler = new ServiceInstanceReconciler({
    clusterId: 'cluster-a',
    caches: { serviceInstance: () => cache.si, pods: () => [], registries: () => [registry], namespaceLabels: () => ({}) },
    backends: { get: () => Promise.resolve(backend) },
    writer: {
      // Recorded, not applied: the cache does not show them, as while a write-behind is under way.
      addFinalizer: () => {
        writes.push('addFinalizer');
        return Promise.resolve();
      },
      removeFinalizer: () => {
        writes.push('removeFinalizer');
        return Promise.resolve();
      },
      patchStatus: (_si, status) => {
        statuses.push(status);
        return Promise.resolve();
      },
    },
    events: {
      normal: (_t, reason) => events.push(reason),
      warning: (_t, reason) => events.push(reason),
    },
    logger: pino({ level: 'silent' }),
    now: () => new Date('2026-11-30T00:00:00Z'),
    resyncMs: 60_000,
  });
  return { reconciler, backend, cache, writes, statuses, events };
}

void describe('ServiceInstanceReconciler with write-behind', () => {
  void it('writes the entry before the finalizer lands, and removes it when the object goes before the finalizer did', async () => {
    const { reconciler, backend, cache, writes } = setUp();
    cache.si = staticServiceInstance('prod', 'api', 'api', { uid: 'u1', generation: 1 });
    await reconciler.reconcile('prod/api');
    assert.equal((await backend.records(scope)).length, 1, 'the entry is written without waiting for the finalizer');
    assert.deepEqual(writes, ['addFinalizer']);
    cache.si = undefined;
    await reconciler.reconcile('prod/api');
    assert.deepEqual(await backend.records(scope), [], 'no entry outlives its ServiceInstance');
  });

  void it('removes the entry of an object being deleted under someone else’s finalizer before ours landed', async () => {
    const { reconciler, backend, cache, writes } = setUp();
    cache.si = staticServiceInstance('prod', 'api', 'api', { uid: 'u1', generation: 1, finalizers: ['example.com/other'] });
    await reconciler.reconcile('prod/api');
    assert.equal((await backend.records(scope)).length, 1);
    cache.si = {
      ...cache.si,
      metadata: { ...cache.si.metadata, deletionTimestamp: new Date('2026-11-30T00:00:01Z') },
    };
    await reconciler.reconcile('prod/api');
    assert.deepEqual(await backend.records(scope), []);
    assert.deepEqual(writes, ['addFinalizer'], 'nothing removes a finalizer that is not ours');
  });

  void it('writes no status when nothing changed, though the apiserver hands the status back with its keys sorted', async () => {
    const { reconciler, cache, statuses } = setUp();
    const si = staticServiceInstance('prod', 'api', 'api', { uid: 'u1', generation: 1, finalizers: [FINALIZER] });
    cache.si = si;
    await reconciler.reconcile('prod/api');
    assert.equal(statuses.length, 1);
    cache.si = { ...si, status: sortedKeys(statuses[0]) as ServiceInstanceStatus };
    assert.notEqual(JSON.stringify(cache.si.status), JSON.stringify(statuses[0]), 'the stored status reads back in another key order');
    await reconciler.reconcile('prod/api');
    await reconciler.reconcile('prod/api');
    assert.equal(statuses.length, 1, 'resyncs of an unchanged object write nothing');
  });

  void it('puts back entries the registry lost without a new status or a Registered event', async () => {
    const { reconciler, backend, cache, statuses, events } = setUp();
    const si = staticServiceInstance('prod', 'api', 'api', { uid: 'u1', generation: 1, finalizers: [FINALIZER] });
    cache.si = si;
    await reconciler.reconcile('prod/api');
    assert.equal(statuses.length, 1);
    assert.ok(events.includes('Registered'));
    cache.si = { ...si, status: statuses[0] };
    // The registry loses everything (a lease expired while the operator was away).
    await backend.applyChanges({ create: [], updateOld: [], updateNew: [], delete: await backend.records(scope) });
    await reconciler.reconcile('prod/api');
    assert.equal((await backend.records(scope)).length, 1, 'the entry is back');
    assert.equal(statuses.length, 1, 'no status write: nothing the ServiceInstance registers changed');
    assert.deepEqual(
      events.filter((e) => e === 'Registered'),
      ['Registered'],
      'no second Registered event',
    );

    // So does a restarted operator, which has no memory of what it wrote.
    const restarted = setUp();
    restarted.cache.si = cache.si;
    await restarted.reconciler.reconcile('prod/api');
    assert.equal((await restarted.backend.records(scope)).length, 1, 'the restarted operator writes the entry');
    assert.deepEqual(restarted.statuses, [], 'and no status');
    assert.deepEqual(restarted.events, []);

    // A real change still moves lastSyncTime and is announced.
    cache.si = { ...si, metadata: { ...si.metadata, generation: 2 }, spec: { ...si.spec, endpoints: [{ address: '10.0.0.2', port: 80 }] } };
    await reconciler.reconcile('prod/api');
    assert.equal(statuses.length, 2);
    assert.equal(events.filter((e) => e === 'Registered').length, 2);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { calculatePlan } from '../../src/plan/plan.ts';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import { OwnedRegistry, UNKNOWN_OWNER } from '../../src/registry/owner.ts';
import type { Changes, Owner, RegistryEntry } from '../../src/registry/types.ts';

const mine: Owner = { clusterId: 'cluster-a', namespace: 'prod', name: 'user-service' };
const theirs: Owner = { clusterId: 'cluster-b', namespace: 'prod', name: 'user-service' };
const scope = { registryNamespace: 'prod', service: 'user-service' };

function entry(ip: string, owner: Owner, weight = 1): RegistryEntry {
  return {
    registryNamespace: 'prod',
    k8sNamespace: owner.namespace,
    owner,
    endpoint: {
      service: 'user-service',
      instanceId: `${ip}:8080`,
      address: ip,
      port: 8080,
      weight,
      tags: {},
      metadata: {},
      source: `pod/prod/${ip}`,
    },
  };
}

const none: Changes = { create: [], updateOld: [], updateNew: [], delete: [] };

void describe('OwnedRegistry', () => {
  void it('records shows only the entries of its owner', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', mine), entry('10.0.0.2', theirs), entry('10.0.0.3', UNKNOWN_OWNER)]);
    const got = await new OwnedRegistry(backend, mine).records(scope);
    assert.deepEqual(got, [entry('10.0.0.1', mine)]);
  });

  void it('a create over a foreign entry at the same key is reported as a conflict and not written', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', theirs)]);
    const result = await new OwnedRegistry(backend, mine).applyChanges({
      ...none,
      create: [entry('10.0.0.1', mine), entry('10.0.0.2', mine)],
    });
    assert.equal(result.conflicts.length, 1);
    assert.equal(result.conflicts[0]?.operation, 'create');
    assert.deepEqual(result.conflicts[0]?.foreignOwner, theirs);
    assert.match(result.conflicts[0]?.message ?? '', /prod\/user-service\/10\.0\.0\.1:8080.*cluster "cluster-b".*never modifies/);
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', theirs), entry('10.0.0.2', mine)]);
  });

  void it('a create over an entry without a known owner is a conflict too', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', UNKNOWN_OWNER)]);
    const result = await new OwnedRegistry(backend, mine).applyChanges({ ...none, create: [entry('10.0.0.1', mine)] });
    assert.match(result.conflicts[0]?.message ?? '', /nobody known/);
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', UNKNOWN_OWNER)]);
    assert.equal(backend.appliedChanges().length, 0);
  });

  void it('an update of an entry that now belongs to someone else is refused', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', theirs)]);
    const result = await new OwnedRegistry(backend, mine).applyChanges({
      ...none,
      updateOld: [entry('10.0.0.1', mine)],
      updateNew: [entry('10.0.0.1', mine, 5)],
    });
    assert.equal(result.conflicts[0]?.operation, 'update');
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', theirs)]);
  });

  void it('a delete of a foreign entry is refused even when the change claims to own it', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', theirs)]);
    const result = await new OwnedRegistry(backend, mine).applyChanges({
      ...none,
      delete: [entry('10.0.0.1', mine), entry('10.0.0.1', theirs)],
    });
    assert.deepEqual(
      result.conflicts.map((c) => c.operation),
      ['delete', 'delete'],
    );
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', theirs)]);
  });

  void it('own creates, updates and deletes are applied', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', mine), entry('10.0.0.2', mine)]);
    const result = await new OwnedRegistry(backend, mine).applyChanges({
      create: [entry('10.0.0.3', mine)],
      updateOld: [entry('10.0.0.1', mine)],
      updateNew: [entry('10.0.0.1', mine, 7)],
      delete: [entry('10.0.0.2', mine)],
    });
    assert.deepEqual(result.conflicts, []);
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', mine, 7), entry('10.0.0.3', mine)]);
  });

  void it('a delete of a key that is already empty is dropped without a backend write', async () => {
    const backend = new InMemoryRegistry();
    const result = await new OwnedRegistry(backend, mine).applyChanges({ ...none, delete: [entry('10.0.0.1', mine)] });
    assert.deepEqual(result.applied.delete, []);
    assert.equal(backend.appliedChanges().length, 0);
  });

  void it('a plan made from the owned view never deletes foreign entries in the same service', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', theirs), entry('10.0.0.2', mine)]);
    const owned = new OwnedRegistry(backend, mine);
    const changes = calculatePlan({ current: await owned.records(scope), desired: [], owner: mine, policy: 'sync' });
    await owned.applyChanges(changes);
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', theirs)]);
  });

  void it('a scope read by records() is not read again by applyChanges, and still guards foreign entries', async () => {
    const backend = new InMemoryRegistry([entry('10.0.0.1', theirs)]);
    let reads = 0;
    const counting = Object.assign(Object.create(backend) as InMemoryRegistry, {
      records: (s: typeof scope) => {
        reads++;
        return backend.records(s);
      },
      applyChanges: (c: Changes) => backend.applyChanges(c),
    });
    const view = new OwnedRegistry(counting, mine);
    await view.records(scope);
    const result = await view.applyChanges({ ...none, create: [entry('10.0.0.1', mine), entry('10.0.0.2', mine)] });
    assert.equal(reads, 1, 'one read for the reconcile');
    assert.deepEqual(
      result.conflicts.map((c) => c.operation),
      ['create'],
    );
    assert.deepEqual(backend.entries(), [entry('10.0.0.1', theirs), entry('10.0.0.2', mine)]);
    // A fresh view (the next reconcile) reads again.
    await new OwnedRegistry(counting, mine).applyChanges({ ...none, delete: [entry('10.0.0.2', mine)] });
    assert.equal(reads, 2);
  });

  void it('a backend failure propagates and leaves the registry unchanged', async () => {
    const backend = new InMemoryRegistry();
    backend.failNext('applyChanges', new Error('etcd down'));
    await assert.rejects(new OwnedRegistry(backend, mine).applyChanges({ ...none, create: [entry('10.0.0.1', mine)] }), /etcd down/);
    assert.deepEqual(backend.entries(), []);
  });
});

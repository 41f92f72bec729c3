/**
 * The discovery package's ZooKeeper source against the operator's own code, where no real server
 * is needed: its decoder reads every value the operator's codec writes as the operator reads it
 * back (a guard against the two drifting apart), and an error code node-zookeeper-client does not
 * know (SESSION_MOVED, which a standalone server cannot be made to send) fails a read instead of
 * crashing the process.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import zookeeper from 'node-zookeeper-client';

import type { Instance, SourceListener } from '../../packages/discovery/src/index.ts';
import { decodeZooKeeperInstance, zookeeperSource, ZooKeeperReadError } from '../../packages/discovery/src/zookeeper/index.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';
import {
  decodeZooKeeperEntry,
  encodeZooKeeperEntry,
  SPRING_INSTANCE_CLASS,
  type ZooKeeperValueFormat,
} from '../../src/registry/zookeeper/codec.ts';
import { waitFor } from '../support/faults.ts';
import { ZooKeeperWireStub } from '../support/zookeeper-wire-stub.ts';

const SESSION_MOVED = -118;

function entry(address: string, extra: Partial<RegistryEntry['endpoint']> = {}): RegistryEntry {
  const port = 8080;
  return {
    registryNamespace: 'prod',
    k8sNamespace: 'prod',
    owner: { clusterId: 'c1', namespace: 'prod', name: 'user' },
    endpoint: {
      service: 'user',
      instanceId: address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`,
      address,
      port,
      weight: 2,
      tags: { zone: 'a' },
      metadata: { team: 'core' },
      source: 'static/prod/user/0',
      ...extra,
    },
  };
}

/** What the operator's own decoder says a consumer should see. */
function operatorView(value: string, ownerIndex: string | undefined, e: RegistryEntry): Instance | undefined {
  const at = { registryNamespace: 'prod', service: 'user', instanceId: e.endpoint.instanceId };
  const decoded = decodeZooKeeperEntry(value, ownerIndex, at)?.entry.endpoint;
  if (decoded === undefined) return undefined;
  const { instanceId: id, address, port, weight, tags, metadata } = decoded;
  return { id, address, port, weight, tags, metadata };
}

describe("the package's ZooKeeper decoder and the operator's codec", () => {
  for (const format of ['curator', 'hostport', 'json'] as ZooKeeperValueFormat[]) {
    for (const e of [
      entry('10.0.0.12'),
      entry('fd00::12', { weight: 0, tags: {} }),
      entry('vm-1.example.com', { metadata: {}, tags: { a: '1', b: '2' } }),
    ]) {
      test(`${format} at ${e.endpoint.address}: the package reads what the operator wrote as the operator reads it`, () => {
        const encoded = encodeZooKeeperEntry(format, e, 1_700_000_000_000);
        const seen = decodeZooKeeperInstance(e.endpoint.instanceId, encoded.value, encoded.ownerIndex);
        assert.deepEqual(seen, operatorView(encoded.value, encoded.ownerIndex, e));
        const { instanceId: id, address, port, weight, tags, metadata } = e.endpoint;
        assert.deepEqual(seen, { id, address, port, weight, tags, metadata });
      });
    }
  }

  test('a foreign Curator registration, garbage and the grpc value are read alike', () => {
    const e = entry('10.0.0.99');
    const spring = JSON.stringify({
      name: 'user',
      id: e.endpoint.instanceId,
      address: '10.0.0.99',
      port: 8080,
      sslPort: null,
      payload: { '@class': SPRING_INSTANCE_CLASS, id: 'app', name: 'user', metadata: { version: '2' } },
      registrationTimeUTC: 5,
      serviceType: 'DYNAMIC',
      uriSpec: { parts: [] },
    });
    for (const value of [spring, 'garbage', '{"Op":0,"Addr":"10.0.0.1:80"}', '{"name":"user","port":"80"}']) {
      assert.deepEqual(decodeZooKeeperInstance(e.endpoint.instanceId, value, undefined), operatorView(value, undefined, e), value);
    }
  });
});

describe('an error code node-zookeeper-client does not know', () => {
  test('SESSION_MOVED fails the read and is reported to the listener; the process goes on', async () => {
    // Without the guard, the library throws this inside its socket handler.
    assert.throws(() => (zookeeper.Exception as unknown as { create(code: number): unknown }).create(SESSION_MOVED), /Unknown code/);
    const stub = await ZooKeeperWireStub.start(() => SESSION_MOVED);
    const source = zookeeperSource({ connectString: stub.connectString, namespace: 'prod', callTimeoutMs: 30_000 });
    const errors: unknown[] = [];
    const updates: (readonly Instance[])[] = [];
    const listener: SourceListener = { update: (instances) => void updates.push(instances), disconnected: (err) => void errors.push(err) };
    const watch = source.watch('user', listener);
    try {
      const error = await waitFor('the read to fail', async () => errors[0], 30_000, 20);
      assert.ok(error instanceof ZooKeeperReadError, String(error));
      assert.equal(error.code, SESSION_MOVED);
      assert.deepEqual(updates, []);
      assert.ok(stub.requestTypes.length > 0, 'the request reached the server');
    } finally {
      await watch.close();
      await source.close();
      await stub.close();
    }
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatHostPort } from '../../src/registry/etcd/codec.ts';
import { UNKNOWN_OWNER } from '../../src/registry/owner.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';
import {
  decodeZooKeeperEntry,
  encodeZooKeeperEntry,
  SPRING_INSTANCE_CLASS,
  type ZooKeeperValueFormat,
} from '../../src/registry/zookeeper/codec.ts';
import { ZooKeeperLayout, ZooKeeperPathError } from '../../src/registry/zookeeper/paths.ts';

const owner = { clusterId: 'c1', namespace: 'prod', name: 'user' };

function entry(address: string, port = 8080): RegistryEntry {
  return {
    registryNamespace: 'prod',
    k8sNamespace: 'prod',
    owner,
    endpoint: {
      service: 'user',
      instanceId: formatHostPort(address, port),
      address,
      port,
      weight: 2,
      tags: { zone: 'a' },
      metadata: { team: 'core' },
      source: 'static/prod/user/0',
    },
  };
}

const at = (e: RegistryEntry) => ({
  registryNamespace: e.registryNamespace,
  service: e.endpoint.service,
  instanceId: e.endpoint.instanceId,
});

void describe('ZooKeeper value codec', () => {
  for (const format of ['curator', 'hostport', 'json'] as ZooKeeperValueFormat[]) {
    for (const address of ['10.0.0.12', 'fd00::12', 'vm-1.example.com']) {
      void it(`an entry at ${address} survives a ${format} round trip unchanged`, () => {
        const e = entry(address);
        const encoded = encodeZooKeeperEntry(format, e, 1_700_000_000_000);
        const decoded = decodeZooKeeperEntry(encoded.value, encoded.ownerIndex, at(e));
        assert.equal(decoded?.format, format);
        assert.deepEqual(decoded?.entry, e);
        assert.equal(format === 'hostport', encoded.ownerIndex !== undefined, 'only hostport keeps an owner index');
      });
    }
  }

  void it('writes the curator instance as Curator compatible mode does, with the Spring payload class and string metadata', () => {
    const value = JSON.parse(encodeZooKeeperEntry('curator', entry('10.0.0.12'), 1_700_000_000_123.7).value) as Record<string, unknown>;
    assert.deepEqual(Object.keys(value), [
      'name',
      'id',
      'address',
      'port',
      'sslPort',
      'payload',
      'registrationTimeUTC',
      'serviceType',
      'uriSpec',
    ]);
    assert.equal(value.name, 'user');
    assert.equal(value.id, '10.0.0.12:8080');
    assert.equal(value.sslPort, null, 'a non-null sslPort would make Spring dial https');
    assert.equal(value.registrationTimeUTC, 1_700_000_000_123);
    assert.equal(value.serviceType, 'DYNAMIC');
    assert.equal('enabled' in value, false);
    const payload = value.payload as Record<string, unknown>;
    assert.equal(payload['@class'], SPRING_INSTANCE_CLASS);
    assert.equal(Object.keys(payload)[0], '@class', 'Jackson reads the type id from the first property');
    assert.deepEqual(payload.metadata, { team: 'core', weight: '2', zone: 'a' });
  });

  void it('keeps registrationTimeUTC from the node read back, so equal entries give equal bytes', () => {
    const e = entry('10.0.0.12');
    const first = encodeZooKeeperEntry('curator', e, 1000);
    const decoded = decodeZooKeeperEntry(first.value, undefined, at(e));
    assert.equal(decoded?.registeredAtMs, 1000);
    assert.equal(encodeZooKeeperEntry('curator', e, decoded?.registeredAtMs ?? 0).value, first.value);
  });

  void it('reads a Spring application registration as an entry of nobody known, with its metadata', () => {
    const spring = JSON.stringify({
      name: 'user',
      id: '5f2c',
      address: '10.0.0.99',
      port: 9000,
      sslPort: null,
      payload: { '@class': SPRING_INSTANCE_CLASS, id: 'app-1', name: 'user', metadata: { version: '2' } },
      registrationTimeUTC: 5,
      serviceType: 'DYNAMIC',
      uriSpec: { parts: [] },
    });
    const decoded = decodeZooKeeperEntry(spring, undefined, { registryNamespace: 'prod', service: 'user', instanceId: '5f2c' });
    assert.deepEqual(decoded?.entry.owner, UNKNOWN_OWNER);
    assert.equal(decoded?.entry.endpoint.address, '10.0.0.99');
    assert.deepEqual(decoded?.entry.endpoint.metadata, { version: '2' });
  });

  void it('gives undefined for data that is no endpoint, and for the etcd-only grpc value', () => {
    const where = { registryNamespace: 'prod', service: 'user', instanceId: 'x' };
    for (const junk of ['', 'garbage', '{"name":"user","port":"80"}', '{"Op":0,"Addr":"10.0.0.1:80"}'])
      assert.equal(decodeZooKeeperEntry(junk, undefined, where), undefined, junk);
  });
});

void describe('ZooKeeper layout', () => {
  void it('places entries, the owner index and the session store under the base path', () => {
    const layout = new ZooKeeperLayout('/services/');
    assert.equal(layout.entry('prod', 'user', '10.0.0.1:80'), '/services/prod/user/10.0.0.1:80');
    assert.equal(layout.ownerIndex('prod', 'user', '10.0.0.1:80'), '/services/_kube-registrar/owners/prod/user/10.0.0.1:80');
    assert.equal(layout.sessionStore('uid-1', 'main'), '/services/_kube-registrar/sessions/uid-1/main');
    assert.deepEqual(ZooKeeperLayout.ancestors('/a/b/c'), ['/a', '/a/b']);
    assert.equal(new ZooKeeperLayout('/').entry('dev', 's', 'i'), '/dev/s/i');
  });

  void it('refuses segments ZooKeeper cannot hold and namespaces in the reserved area', () => {
    const layout = new ZooKeeperLayout('/services');
    assert.throws(() => layout.entry('_kube-registrar', 'user', 'i'), ZooKeeperPathError);
    assert.throws(() => layout.entry('prod', 'a/b', 'i'), ZooKeeperPathError);
    assert.throws(() => layout.entry('prod', '..', 'i'), ZooKeeperPathError);
    assert.throws(() => layout.entry('prod', 'user', 'x\u0001'), ZooKeeperPathError);
    assert.throws(() => new ZooKeeperLayout('services'), /must start with '\/'/);
    assert.throws(() => new ZooKeeperLayout('/zookeeper/x'), /reserves/);
    assert.throws(() => new ZooKeeperLayout('/a//b'), ZooKeeperPathError);
  });
});

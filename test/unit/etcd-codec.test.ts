import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { decodeEntry, encodeEntry, formatHostPort, parseHostPort } from '../../src/registry/etcd/codec.ts';
import type { EtcdValueFormat } from '../../src/registry/etcd/codec.ts';
import { EtcdKeyError, EtcdKeyLayout } from '../../src/registry/etcd/keys.ts';
import { UNKNOWN_OWNER } from '../../src/registry/owner.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';

const owner = { clusterId: 'c1', namespace: 'prod', name: 'user' };

function entry(address: string, port = 8080): RegistryEntry {
  return {
    registryNamespace: 'prod',
    k8sNamespace: 'prod',
    owner,
    endpoint: {
      service: 'user',
      instanceId: `${formatHostPort(address, port)}`,
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

void describe('etcd value codec', () => {
  const formats: EtcdValueFormat[] = ['json', 'grpc', 'hostport'];
  for (const format of formats) {
    for (const address of ['10.0.0.12', 'fd00::12', 'vm-1.example.com']) {
      void it(`an entry at ${address} survives a ${format} round trip unchanged`, () => {
        const e = entry(address);
        const encoded = encodeEntry(format, e);
        assert.deepEqual(decodeEntry(encoded.value, encoded.ownerIndex, at(e)), { entry: e, format });
      });
    }
  }

  void it('json carries ip only for IP addresses', () => {
    assert.equal((JSON.parse(encodeEntry('json', entry('10.0.0.1')).value) as { ip?: string }).ip, '10.0.0.1');
    assert.equal('ip' in (JSON.parse(encodeEntry('json', entry('vm.example.com')).value) as object), false);
  });

  void it('equal entries with differently ordered maps encode to the same bytes', () => {
    const a = entry('10.0.0.1');
    const b = { ...a, endpoint: { ...a.endpoint, tags: { y: '2', x: '1' } } };
    const c = { ...a, endpoint: { ...a.endpoint, tags: { x: '1', y: '2' } } };
    assert.equal(encodeEntry('json', b).value, encodeEntry('json', c).value);
  });

  void it('a hand-written host:port without an owner index is an entry of an unknown owner', () => {
    const decoded = decodeEntry('10.0.0.9:80', undefined, { registryNamespace: 'prod', service: 'user', instanceId: '10.0.0.9:80' });
    assert.deepEqual(decoded?.entry.owner, UNKNOWN_OWNER);
    assert.equal(decoded?.format, 'hostport');
  });

  void it('grpc writes only Op and Addr, so grpc-go gets no Metadata to compare, and keeps the record in the owner index', () => {
    const e = entry('10.0.0.12');
    const encoded = encodeEntry('grpc', e);
    assert.equal(encoded.value, '{"Op":0,"Addr":"10.0.0.12:8080"}');
    assert.equal(encoded.ownerIndex, encodeEntry('json', e).value);
  });

  void it('a grpc value whose Metadata is a JSON object, as written before, keeps its owner and is marked for a rewrite', () => {
    const e = entry('10.0.0.12');
    const before = JSON.stringify({ Op: 0, Addr: '10.0.0.12:8080', Metadata: JSON.parse(encodeEntry('json', e).value) as unknown });
    assert.deepEqual(decodeEntry(before, undefined, at(e)), { entry: e, format: 'grpc', objectMetadata: true });
  });

  void it('a grpc value registered by a Go service through etcd’s endpoints.Manager is an entry of an unknown owner', () => {
    const decoded = decodeEntry('{"Op":0,"Addr":"10.0.0.9:80","Metadata":null}', undefined, {
      registryNamespace: 'prod',
      service: 'user',
      instanceId: '10.0.0.9:80',
    });
    assert.deepEqual(decoded?.entry.owner, UNKNOWN_OWNER);
    assert.equal(decoded?.format, 'grpc');
    assert.equal(decoded?.objectMetadata, undefined);
  });

  void it('json without an owner is an entry of an unknown owner', () => {
    const decoded = decodeEntry('{"address":"10.0.0.9","port":80}', undefined, {
      registryNamespace: 'prod',
      service: 'user',
      instanceId: '10.0.0.9:80',
    });
    assert.deepEqual(decoded?.entry.owner, UNKNOWN_OWNER);
  });

  const garbage: Array<[string, string]> = [
    ['text that is no endpoint is skipped', 'hello'],
    ['json without an address is skipped', '{"port":80}'],
    ['a port out of range is skipped', '{"address":"10.0.0.1","port":70000}'],
    ['a grpc value with an unparseable Addr is skipped', '{"Op":0,"Addr":"nope"}'],
    ['an unbracketed IPv6 host:port is skipped', 'fd00::1:80'],
  ];
  for (const [name, value] of garbage) {
    void it(name, () =>
      assert.equal(decodeEntry(value, undefined, { registryNamespace: 'prod', service: 'user', instanceId: 'x' }), undefined),
    );
  }

  void it('host:port parsing handles brackets and rejects bad ports', () => {
    assert.deepEqual(parseHostPort('[fd00::1]:443'), { address: 'fd00::1', port: 443 });
    assert.deepEqual(parseHostPort('db.example.com:5432'), { address: 'db.example.com', port: 5432 });
    assert.equal(parseHostPort('10.0.0.1:0'), undefined);
    assert.equal(parseHostPort('[not-ipv6]:80'), undefined);
  });
});

void describe('etcd key layout', () => {
  const keys = new EtcdKeyLayout('/services/');

  void it('entry keys are prefix/namespace/service/instance', () => {
    assert.equal(keys.entry('prod', 'user', '[fd00::1]:8080'), '/services/prod/user/[fd00::1]:8080');
  });

  void it('bookkeeping keys live under the reserved segment', () => {
    assert.equal(keys.ownerIndex('prod', 'user', '10.0.0.1:80'), '/services/_kube-registrar/owners/prod/user/10.0.0.1:80');
    assert.equal(keys.leaseId('uid-1', 'prod'), '/services/_kube-registrar/leases/uid-1/prod');
  });

  const bad: Array<[string, () => unknown]> = [
    [
      'a registry namespace starting with an underscore is refused so it cannot reach the reserved keys',
      () => keys.namespacePrefix('_kube-registrar'),
    ],
    ['a slash in a service is refused', () => keys.servicePrefix('prod', 'a/b')],
    ['an empty instance id is refused', () => keys.entry('prod', 'user', '')],
    ['a dot-dot namespace is refused', () => keys.namespacePrefix('..')],
  ];
  for (const [name, build] of bad) void it(name, () => assert.throws(build, EtcdKeyError));

  void it('a prefix without a leading slash lays out entries and bookkeeping the same way', () => {
    const relative = new EtcdKeyLayout('grpc');
    assert.equal(relative.entry('prod', 'greeter', '10.0.0.1:50051'), 'grpc/prod/greeter/10.0.0.1:50051');
    assert.equal(relative.ownerIndex('prod', 'greeter', '10.0.0.1:50051'), 'grpc/_kube-registrar/owners/prod/greeter/10.0.0.1:50051');
    assert.equal(relative.leaseId('uid-1', 'prod'), 'grpc/_kube-registrar/leases/uid-1/prod');
  });

  void it('the Go dial target is etcd:/// and the service prefix, so a leading slash in the prefix becomes a fourth slash', () => {
    assert.equal(new EtcdKeyLayout('grpc').grpcTarget('prod', 'greeter'), 'etcd:///grpc/prod/greeter');
    assert.equal(new EtcdKeyLayout('a/b').grpcTarget('prod', 'greeter'), 'etcd:///a/b/prod/greeter');
    assert.equal(keys.grpcTarget('prod', 'greeter'), 'etcd:////services/prod/greeter');
  });

  void it('childName finds direct children only', () => {
    assert.equal(EtcdKeyLayout.childName('/p/ns/svc/', '/p/ns/svc/1.2.3.4:80'), '1.2.3.4:80');
    assert.equal(EtcdKeyLayout.childName('/p/ns/svc/', '/p/ns/svc/deeper/x'), undefined);
    assert.equal(EtcdKeyLayout.childName('/p/ns/svc/', '/p/ns/svc2/x'), undefined);
  });
});

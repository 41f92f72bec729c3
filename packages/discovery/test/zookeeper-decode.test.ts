import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { DiscoveryConfigError } from '../src/errors.ts';
import { decodeZooKeeperInstance, needsOwnerIndex } from '../src/zookeeper/decode.ts';
import { normaliseBasePath, servicePaths } from '../src/zookeeper/paths.ts';
import { zookeeperSource } from '../src/zookeeper/source.ts';

const owner = { clusterId: 'c1', namespace: 'prod', name: 'user-si' };
const record = {
  serviceName: 'user-service',
  ip: '10.0.0.12',
  address: '10.0.0.12',
  port: 8080,
  tags: { version: '2', zone: 'a' },
  weight: 3,
  metadata: { team: 'core' },
  namespace: 'prod',
  owner,
  source: 'pod/prod/user-1',
};
const full = {
  id: '10.0.0.12:8080',
  address: '10.0.0.12',
  port: 8080,
  weight: 3,
  tags: { version: '2', zone: 'a' },
  metadata: { team: 'core' },
};

/** A Curator ServiceInstance as Curator's compatible mode writes it, with the given payload. */
function curator(payload: object, at: { address?: unknown; port?: unknown } = {}): string {
  return JSON.stringify({
    name: 'user-service',
    id: '10.0.0.12:8080',
    address: at.address ?? '10.0.0.12',
    port: at.port ?? 8080,
    sslPort: null,
    payload,
    registrationTimeUTC: 1_700_000_000_000,
    serviceType: 'DYNAMIC',
    uriSpec: { parts: [] },
  });
}

const springPayload = (extra: object = {}) => ({
  '@class': 'org.springframework.cloud.zookeeper.discovery.ZookeeperInstance',
  id: 'app-1',
  name: 'user-service',
  metadata: { version: '2', weight: '3', broken: 7 },
  ...extra,
});

describe('decodeZooKeeperInstance', () => {
  const cases: { name: string; data: string; index?: string; want: object | undefined }[] = [
    { name: 'curator: the record from payload.kubeRegistrar', data: curator(springPayload({ kubeRegistrar: record })), want: full },
    {
      name: 'curator: address and port come from the instance, which is what Curator readers dial',
      data: curator(springPayload({ kubeRegistrar: record }), { address: '10.0.0.99', port: 9000 }),
      want: { ...full, address: '10.0.0.99', port: 9000 },
    },
    {
      name: 'curator without a kube-registrar record (a Spring application): weight 1, no tags, the string metadata of the payload',
      data: curator(springPayload()),
      want: { id: '10.0.0.12:8080', address: '10.0.0.12', port: 8080, weight: 1, tags: {}, metadata: { version: '2', weight: '3' } },
    },
    {
      name: 'curator without any payload',
      data: curator(null as unknown as object),
      want: { id: '10.0.0.12:8080', address: '10.0.0.12', port: 8080, weight: 1, tags: {}, metadata: {} },
    },
    { name: 'curator without a usable port is skipped', data: curator(springPayload(), { port: '8080' }), want: undefined },
    { name: 'curator without an address is skipped', data: curator(springPayload(), { address: '' }), want: undefined },
    { name: 'json: the record itself', data: JSON.stringify(record), want: full },
    { name: 'hostport: the record from the owner index', data: '10.0.0.12:8080', index: JSON.stringify(record), want: full },
    {
      name: 'hostport without an owner index: the value with the defaults',
      data: '10.0.0.12:8080',
      want: { id: '10.0.0.12:8080', address: '10.0.0.12', port: 8080, weight: 1, tags: {}, metadata: {} },
    },
    {
      name: 'hostport with a broken owner index: the defaults',
      data: '[fd00::1]:80',
      index: '{"half":',
      want: { id: '10.0.0.12:8080', address: 'fd00::1', port: 80, weight: 1, tags: {}, metadata: {} },
    },
    {
      name: "etcd's grpc value is no ZooKeeper format",
      data: '{"Op":0,"Addr":"10.0.0.12:8080"}',
      index: JSON.stringify(record),
      want: undefined,
    },
    { name: 'garbage', data: 'not an endpoint {', want: undefined },
    { name: 'an empty node', data: '', want: undefined },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(decodeZooKeeperInstance('10.0.0.12:8080', c.data, c.index), c.want);
    });
  }

  test('only plain values look for an owner index', () => {
    assert.equal(needsOwnerIndex('10.0.0.12:8080'), true);
    assert.equal(needsOwnerIndex(JSON.stringify(record)), false);
    assert.equal(needsOwnerIndex(curator(springPayload())), false);
  });
});

describe('paths and options', () => {
  test('the operator layout under a normalised base path', () => {
    assert.deepEqual(servicePaths(normaliseBasePath('/services/'), 'prod', 'user'), {
      service: '/services/prod/user',
      ownerIndex: '/services/_kube-registrar/owners/prod/user',
    });
    assert.deepEqual(servicePaths(normaliseBasePath('/'), 'dev', 's'), { service: '/dev/s', ownerIndex: '/_kube-registrar/owners/dev/s' });
  });

  test('a base path or service name ZooKeeper cannot hold is refused, saying what to use', () => {
    assert.throws(
      () => normaliseBasePath('services'),
      (err: unknown) => err instanceof DiscoveryConfigError && /must start with '\/'/.test(err.message),
    );
    assert.throws(() => normaliseBasePath('/a//b'), DiscoveryConfigError);
    assert.throws(() => servicePaths('/services', 'prod', 'a/b'), /service name of the ServiceInstance/);
    assert.throws(() => servicePaths('/services', 'prod', '..'), DiscoveryConfigError);
  });

  test('zookeeperSource refuses bad options before connecting', () => {
    assert.throws(() => zookeeperSource({ connectString: '' }), /connectString/);
    assert.throws(() => zookeeperSource({ connectString: '127.0.0.1:1', namespace: '_kube-registrar' }), DiscoveryConfigError);
    assert.throws(() => zookeeperSource({ connectString: '127.0.0.1:1', namespace: 'p', sessionTimeoutMs: 0 }), /sessionTimeoutMs/);
    assert.throws(
      () => zookeeperSource({ connectString: '127.0.0.1:1', namespace: 'p', digestCredentials: ['nopassword'] }),
      /user:password/,
    );
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { decodeInstance, decodeOwner, parseHostPort } from '../src/etcd/decode.ts';
import { encodeRecord, type RecordInput } from '../src/etcd/encode.ts';
import { childName, serviceKeys } from '../src/etcd/keys.ts';
import { DiscoveryConfigError } from '../src/errors.ts';

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

describe('decodeInstance', () => {
  const cases: { name: string; value: string; index?: string; want: object | undefined }[] = [
    { name: 'a json value is the whole record', value: JSON.stringify(record), want: full },
    {
      name: 'a grpc value takes its record from the owner index',
      value: '{"Op":0,"Addr":"10.0.0.12:8080"}',
      index: JSON.stringify(record),
      want: full,
    },
    {
      name: 'a grpc value dials Addr even when the record says otherwise',
      value: '{"Op":0,"Addr":"10.0.0.99:9090"}',
      index: JSON.stringify(record),
      want: { ...full, address: '10.0.0.99', port: 9090 },
    },
    {
      name: 'an old grpc value with the record in Metadata is still read',
      value: JSON.stringify({ Op: 0, Addr: '10.0.0.12:8080', Metadata: record }),
      want: full,
    },
    {
      name: 'the owner index wins over an old grpc Metadata',
      value: JSON.stringify({ Op: 0, Addr: '10.0.0.12:8080', Metadata: { ...record, weight: 9 } }),
      index: JSON.stringify(record),
      want: full,
    },
    { name: 'a hostport value takes its record from the owner index', value: '10.0.0.12:8080', index: JSON.stringify(record), want: full },
    {
      name: 'a hostport value without an index gets the defaults',
      value: '10.0.0.12:8080',
      want: { id: '10.0.0.12:8080', address: '10.0.0.12', port: 8080, weight: 1, tags: {}, metadata: {} },
    },
    {
      name: 'an IPv6 hostport value is read without its brackets',
      value: '[fd00::1]:8080',
      want: { id: '10.0.0.12:8080', address: 'fd00::1', port: 8080, weight: 1, tags: {}, metadata: {} },
    },
    { name: 'weight 0 is kept (out of rotation)', value: JSON.stringify({ ...record, weight: 0 }), want: { ...full, weight: 0 } },
    { name: 'a negative weight counts as the default', value: JSON.stringify({ ...record, weight: -4 }), want: { ...full, weight: 1 } },
    {
      name: 'a weight that is no number counts as the default',
      value: JSON.stringify({ ...record, weight: '7' }),
      want: { ...full, weight: 1 },
    },
    {
      name: 'tags and metadata that are not strings are dropped',
      value: JSON.stringify({ ...record, tags: { a: 1, b: 'x' }, metadata: ['m'] }),
      want: { ...full, tags: { b: 'x' }, metadata: {} },
    },
    { name: 'garbage text is no endpoint', value: 'hello world', want: undefined },
    { name: 'an empty value is no endpoint', value: '', want: undefined },
    { name: 'a json array is no endpoint', value: '[1,2]', want: undefined },
    { name: 'a json record without an address is no endpoint', value: JSON.stringify({ ...record, address: '' }), want: undefined },
    { name: 'a json record with port 0 is no endpoint', value: JSON.stringify({ ...record, port: 0 }), want: undefined },
    {
      name: 'a grpc value with a bad Addr is no endpoint',
      value: '{"Op":0,"Addr":"nowhere"}',
      index: JSON.stringify(record),
      want: undefined,
    },
    { name: 'a hostport value with port 70000 is no endpoint', value: '10.0.0.1:70000', want: undefined },
    {
      name: 'a garbage owner index leaves the defaults',
      value: '10.0.0.12:8080',
      index: '{{{',
      want: { id: '10.0.0.12:8080', address: '10.0.0.12', port: 8080, weight: 1, tags: {}, metadata: {} },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(decodeInstance('10.0.0.12:8080', c.value, c.index), c.want);
    });
  }
});

describe('decodeOwner', () => {
  test('reads the owner of every format, and nothing from a value without one', () => {
    assert.deepEqual(decodeOwner(JSON.stringify(record), undefined), owner);
    assert.deepEqual(decodeOwner('{"Op":0,"Addr":"10.0.0.12:8080"}', JSON.stringify(record)), owner);
    assert.deepEqual(decodeOwner('10.0.0.12:8080', JSON.stringify(record)), owner);
    assert.equal(decodeOwner('10.0.0.12:8080', undefined), undefined);
    assert.equal(decodeOwner(JSON.stringify({ ...record, owner: { clusterId: 1 } }), undefined), undefined);
    assert.equal(decodeOwner('garbage', undefined), undefined);
  });
});

describe('encodeRecord', () => {
  const input: RecordInput = {
    service: 'user-service',
    address: '10.0.0.12',
    port: 8080,
    weight: 3,
    tags: { zone: 'a', version: '2' },
    metadata: { team: 'core' },
    namespace: 'prod',
    owner,
    source: 'pod/prod/user-1',
  };

  test('json: the record with sorted maps, in the operator field order', () => {
    assert.equal(encodeRecord('json', input).value, JSON.stringify(record));
    assert.equal(encodeRecord('json', input).ownerIndex, undefined);
  });

  test('grpc and hostport: the address in the value, the record in the owner index', () => {
    assert.deepEqual(encodeRecord('grpc', input), { value: '{"Op":0,"Addr":"10.0.0.12:8080"}', ownerIndex: JSON.stringify(record) });
    assert.deepEqual(encodeRecord('hostport', input), { value: '10.0.0.12:8080', ownerIndex: JSON.stringify(record) });
  });

  test('a host name has no ip field; an IPv6 literal is bracketed in values', () => {
    assert.equal((JSON.parse(encodeRecord('json', { ...input, address: 'api.example.com' }).value) as { ip?: string }).ip, undefined);
    assert.equal(encodeRecord('hostport', { ...input, address: 'fd00::1' }).value, '[fd00::1]:8080');
  });

  test('every encoded format decodes back to the same instance', () => {
    for (const format of ['json', 'grpc', 'hostport'] as const) {
      const { value, ownerIndex } = encodeRecord(format, input);
      assert.deepEqual(decodeInstance('10.0.0.12:8080', value, ownerIndex), full, format);
    }
  });
});

describe('keys', () => {
  test('a prefix with or without a leading slash, trailing slashes dropped', () => {
    assert.deepEqual(serviceKeys('/services/', 'prod', 'user'), {
      entries: '/services/prod/user/',
      ownerIndex: '/services/_kube-registrar/owners/prod/user/',
    });
    assert.deepEqual(serviceKeys('grpc', 'prod', 'user'), {
      entries: 'grpc/prod/user/',
      ownerIndex: 'grpc/_kube-registrar/owners/prod/user/',
    });
  });

  test('a service name that is not one segment is refused with what to use', () => {
    assert.throws(() => serviceKeys('/s', 'prod', 'a/b'), DiscoveryConfigError);
    assert.throws(() => serviceKeys('/s', 'prod', ''), DiscoveryConfigError);
  });

  test('only keys directly under the service are instances', () => {
    assert.equal(childName('/s/prod/user/', '/s/prod/user/10.0.0.1:80'), '10.0.0.1:80');
    assert.equal(childName('/s/prod/user/', '/s/prod/user/deeper/10.0.0.1:80'), undefined);
    assert.equal(childName('/s/prod/user/', '/s/prod/user/'), undefined);
    assert.equal(childName('/s/prod/user/', '/s/prod/users/x'), undefined);
  });

  test('parseHostPort refuses unbracketed IPv6 and bracketed names', () => {
    assert.equal(parseHostPort('fd00::1:80'), undefined);
    assert.equal(parseHostPort('[example.com]:80'), undefined);
    assert.deepEqual(parseHostPort('example.com:80'), { address: 'example.com', port: 80 });
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { StoredKeyValue } from '../../src/registry/etcd/client.ts';
import { NamespaceView } from '../../src/registry/etcd/namespace-view.ts';

const V = '/services/prod/';
const I = '/services/_kube-registrar/owners/prod/';
const kv = (key: string, value: string, modRevision: string): StoredKeyValue => ({ key, value, lease: '7', modRevision });

test('a refreshed view keeps the previous copy of every key at the same revision and takes the new one of a changed key', () => {
  const first = new NamespaceView(
    V,
    I,
    [kv(`${V}api/a`, '{"a":1}', '10'), kv(`${V}api/b`, '{"b":1}', '11')],
    [kv(`${I}api/a`, 'owner', '10')],
    0,
    new Map(),
  );
  const before = first.service('api');
  const second = new NamespaceView(
    V,
    I,
    [kv(`${V}api/a`, '{"a":1}', '10'), kv(`${V}api/b`, '{"b":2}', '12'), kv(`${V}api/c`, '{"c":1}', '13')],
    [kv(`${I}api/a`, 'owner', '10')],
    1,
    new Map(),
    first,
  );
  const after = second.service('api');
  const byKey = (xs: readonly StoredKeyValue[]): Map<string, StoredKeyValue> => new Map(xs.map((x) => [x.key, x]));
  const [was, now] = [byKey(before.values), byKey(after.values)];
  assert.equal(now.get(`${V}api/a`), was.get(`${V}api/a`), 'unchanged entry: the same object');
  assert.equal(after.index[0], before.index[0], 'unchanged index key: the same object');
  assert.deepEqual(now.get(`${V}api/b`), kv(`${V}api/b`, '{"b":2}', '12'), 'changed entry: the new value');
  assert.deepEqual(now.get(`${V}api/c`), kv(`${V}api/c`, '{"c":1}', '13'), 'new entry');
  assert.equal(now.size, 3);
  assert.equal(was.get(`${V}api/b`)?.value, '{"b":1}', 'the previous view is not changed');
});

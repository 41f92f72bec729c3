import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { StoredKeyValue } from '../../src/registry/etcd/client.ts';
import { NamespaceView } from '../../src/registry/etcd/namespace-view.ts';

const V = '/services/prod/';
const I = '/services/_kube-registrar/owners/prod/';
const kv = (key: string, value: string, modRevision: string): StoredKeyValue => ({ key, value, lease: '7', modRevision });
const byKey = (xs: readonly StoredKeyValue[]): Map<string, StoredKeyValue> => new Map(xs.map((x) => [x.key, x]));

test('a refresh takes the new copy of a changed key, adds new keys and drops the keys the read left out', () => {
  const view = new NamespaceView(V, I).refresh(
    [kv(`${V}api/a`, '{"a":1}', '10'), kv(`${V}api/b`, '{"b":1}', '11'), kv(`${V}web/x`, '{"x":1}', '12')],
    [kv(`${I}api/a`, 'owner', '10'), kv(`${I}web/x`, 'owner', '12')],
    0,
    new Map(),
  );
  assert.equal(view.service('web').values.length, 1, 'the first read is held');
  view.refresh(
    [kv(`${V}api/a`, '{"a":1}', '10'), kv(`${V}api/b`, '{"b":2}', '13'), kv(`${V}api/c`, '{"c":1}', '14')],
    [kv(`${I}api/a`, 'owner', '10')],
    1,
    new Map([[`${V}api/b`, '{"b":1}']]),
  );
  const api = byKey(view.service('api').values);
  assert.deepEqual([...api.keys()].sort(), [`${V}api/a`, `${V}api/b`, `${V}api/c`]);
  assert.equal(api.get(`${V}api/b`)?.value, '{"b":2}', 'changed entry: the new value');
  assert.equal(api.get(`${V}api/c`)?.value, '{"c":1}', 'new entry');
  assert.deepEqual(view.service('web'), { values: [], index: [] }, 'a service the read left out is gone, entries and index');
  assert.equal(view.takenAt, 1);
  assert.equal(view.rememberedAt(`${V}api/b`), '{"b":1}', 'what was remembered at this read');
});

test('a key held at the revision read is handed back for reuse, and a refresh with it keeps the same object', () => {
  const a = kv(`${V}api/a`, '{"a":1}', '10');
  const view = new NamespaceView(V, I).refresh([a], [], 0, new Map());
  assert.equal(view.held(`${V}api/a`, '10'), a, 'same revision: the held copy');
  assert.equal(view.held(`${V}api/a`, '11'), undefined, 'another revision: none');
  assert.equal(view.held(`${V}api/zz`, '10'), undefined, 'a key the view does not hold: none');
  assert.equal(view.held('/elsewhere/api/a', '10'), undefined, 'a key outside the namespace: none');
  view.refresh([view.held(`${V}api/a`, '10') ?? kv(`${V}api/a`, '{"a":1}', '10')], [], 1, new Map());
  assert.equal(view.service('api').values[0], a);
});

test('writes that landed during a read are applied after the refresh, whether the read saw them or not', () => {
  const view = new NamespaceView(V, I).refresh([kv(`${V}api/a`, '{"a":1}', '10')], [], 0, new Map());
  // Landed while the read ran (revision 20): a new key and a deleted one; the read (at revision 15) saw neither.
  const landed = [
    { kind: 'put' as const, key: `${V}api/new`, value: '{"n":1}', lease: 7n },
    { kind: 'delete' as const, key: `${V}api/a` },
  ];
  view.apply(landed, '20');
  view.refresh([kv(`${V}api/a`, '{"a":1}', '10')], [], 1, new Map());
  view.apply(landed, '20');
  assert.deepEqual(
    view.service('api').values.map((x) => [x.key, x.modRevision]),
    [[`${V}api/new`, '20']],
  );
});

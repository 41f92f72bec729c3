import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';

import protobuf from 'protobufjs';

import type { TxnGuard, TxnWrite } from '../../src/registry/etcd/client.ts';
import { decodeTxnResponse, encodeTxnRequest, toUint64 } from '../../src/registry/etcd/txn-wire.ts';

// etcd's own message definitions, as the etcd3 package ships them: what etcd decodes.
const rpc = new protobuf.Root().loadSync(createRequire(import.meta.url).resolve('etcd3/proto/rpc.proto'), { keepCase: true });
const TxnRequest = rpc.lookupType('etcdserverpb.TxnRequest');
const TxnResponse = rpc.lookupType('etcdserverpb.TxnResponse');
const asEtcdReads = { longs: String, enums: String, bytes: String, defaults: true, oneofs: true } as const;

const BYTES_FIELDS = new Set(['key', 'value', 'range_end']);

/** What etcd reads from `bytes`, with bytes fields as UTF-8 text. */
function readAsEtcd(bytes: Uint8Array): unknown {
  const message = TxnRequest.toObject(TxnRequest.decode(bytes), { ...asEtcdReads, bytes: Array });
  return JSON.parse(
    JSON.stringify(message, (key, value: unknown) =>
      BYTES_FIELDS.has(key) && Array.isArray(value) ? Buffer.from(value as number[]).toString('utf8') : value,
    ),
  );
}

const LEASE = 7587862323431491123n; // etcd's lease ids are usually above 2^53

void describe('etcd transaction wire form', () => {
  void it('encodes every guard kind, put and delete as etcd’s own TxnRequest decodes them', () => {
    const guards: TxnGuard[] = [
      { key: '/kube-registrar/leases/c/prod', value: '694d8b2c1a2f0033' },
      { key: '/services/prod/web/10.0.0.1-8080', modRevision: '0' },
      { key: '/services/prod/web/10.0.0.2-8080', modRevision: '9007199254740993' },
      { key: '/services/prod/wéb/ключ', value: undefined },
      { key: '/services/prod/web/empty', value: '' },
    ];
    const writes: TxnWrite[] = [
      { kind: 'put', key: '/services/prod/web/10.0.0.1-8080', value: '{"address":"10.0.0.1","note":"ünïcode ✓"}', lease: LEASE },
      { kind: 'put', key: '/services/prod/web/10.0.0.2-8080', value: '', lease: 0n },
      { kind: 'put', key: '/services/prod/web/10.0.0.3-8080', value: 'x', lease: 42n },
      { kind: 'delete', key: '/services/prod/web/gone' },
    ];
    const read = readAsEtcd(encodeTxnRequest(guards, writes)) as {
      compare: Record<string, unknown>[];
      success: Record<string, unknown>[];
      failure: unknown[];
    };
    const compare = read.compare.map((c) => ({
      result: c.result,
      target: c.target,
      key: c.key,
      union: c.target_union,
      value: c[c.target_union as string],
    }));
    assert.deepEqual(compare, [
      { result: 'Equal', target: 'Value', key: '/kube-registrar/leases/c/prod', union: 'value', value: '694d8b2c1a2f0033' },
      { result: 'Equal', target: 'Version', key: '/services/prod/web/10.0.0.1-8080', union: 'version', value: '0' },
      { result: 'Equal', target: 'Mod', key: '/services/prod/web/10.0.0.2-8080', union: 'mod_revision', value: '9007199254740993' },
      { result: 'Equal', target: 'Version', key: '/services/prod/wéb/ключ', union: 'version', value: '0' },
      { result: 'Equal', target: 'Value', key: '/services/prod/web/empty', union: 'value', value: '' },
    ]);
    const success = read.success.map((op) => {
      const kind = op.request as string;
      const body = op[kind] as Record<string, unknown>;
      return kind === 'request_put'
        ? { kind, key: body.key, value: body.value, lease: body.lease, prevKv: body.prev_kv, ignoreLease: body.ignore_lease }
        : { kind, key: body.key, rangeEnd: body.range_end };
    });
    assert.deepEqual(success, [
      {
        kind: 'request_put',
        key: '/services/prod/web/10.0.0.1-8080',
        value: '{"address":"10.0.0.1","note":"ünïcode ✓"}',
        lease: LEASE.toString(),
        prevKv: false,
        ignoreLease: false,
      },
      { kind: 'request_put', key: '/services/prod/web/10.0.0.2-8080', value: '', lease: '0', prevKv: false, ignoreLease: false },
      { kind: 'request_put', key: '/services/prod/web/10.0.0.3-8080', value: 'x', lease: '42', prevKv: false, ignoreLease: false },
      { kind: 'request_delete_range', key: '/services/prod/web/gone', rangeEnd: '' },
    ]);
    assert.deepEqual(read.failure, [], 'no failure branch: which guard failed is read separately');
  });

  void it('writes lengths past one byte: long values, large messages, 128 puts behind 128 guards', () => {
    const long = `{"address":"10.0.0.1","metadata":{"note":"${'ü'.repeat(200)}"}}`;
    const guards: TxnGuard[] = Array.from({ length: 128 }, (_, i) => ({
      key: `/services/prod/web/${i}`,
      modRevision: String(1000 + i * 997),
    }));
    const writes: TxnWrite[] = Array.from({ length: 128 }, (_, i) => ({
      kind: 'put',
      key: `/services/prod/web/${i}`,
      value: long,
      lease: LEASE,
    }));
    const bytes = encodeTxnRequest(guards, writes);
    assert.ok(bytes.length > 128 * 400, `a large request (${bytes.length} bytes)`);
    const read = readAsEtcd(bytes) as { compare: Record<string, unknown>[]; success: { request_put: Record<string, unknown> }[] };
    assert.deepEqual(
      read.compare.map((c) => [c.key, c.mod_revision]),
      guards.map((g) => [g.key, (g as { modRevision: string }).modRevision]),
    );
    assert.deepEqual(
      read.success.map((op) => [op.request_put.key, op.request_put.value, op.request_put.lease]),
      writes.map((w) => [w.key, long, LEASE.toString()]),
    );
  });

  void it('reads whether a response succeeded and its revision, past 2^53 too, whatever operation results follow', () => {
    const header = { cluster_id: '14841639068965178418', member_id: '10276657743932975437', raft_term: '7' };
    for (const [succeeded, revision] of [
      [true, '123456'],
      [false, '9007199254740993'],
      [true, '1'],
    ] as const) {
      const bytes = TxnResponse.encode(
        TxnResponse.fromObject({
          header: { ...header, revision },
          succeeded,
          responses: Array.from({ length: 3 }, () => ({ response_put: { header: { ...header, revision } } })),
        }),
      ).finish();
      assert.deepEqual(decodeTxnResponse(bytes), { succeeded, revision });
    }
    assert.deepEqual(decodeTxnResponse(new Uint8Array()), { succeeded: false, revision: '0' }, 'an empty message is all defaults');
  });

  void it('refuses a 64-bit value it cannot write rather than sending another one', () => {
    assert.equal(toUint64('42'), 42);
    assert.equal(toUint64(2n ** 64n - 1n), 2n ** 64n - 1n);
    assert.throws(() => toUint64(-1n), /not an unsigned 64-bit value: -1/);
    assert.throws(() => toUint64(2n ** 64n), /not an unsigned 64-bit value/);
    assert.throws(() => toUint64('12ab'), SyntaxError);
    assert.throws(() => encodeTxnRequest([], [{ kind: 'put', key: '/k', value: 'v', lease: 2n ** 64n }]), RangeError);
    assert.throws(() => encodeTxnRequest([{ key: '/k', modRevision: '-3' }], []), RangeError);
  });
});

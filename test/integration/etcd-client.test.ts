/**
 * The etcd client's prefix reads against the bed's etcd: a registry namespace is read whole
 * however many keys it holds, page by page, including one larger than a gRPC message may be.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';

import { Etcd3 } from 'etcd3';

import { createEtcdClient, RANGE_PAGE } from '../../src/registry/etcd/client.ts';

const endpoints = (process.env.ETCD_ENDPOINTS ?? '')
  .split(',')
  .map((e) => e.trim())
  .filter((e) => e !== '');
if (endpoints.length === 0) throw new Error('ETCD_ENDPOINTS is not set: run this test through the test bed');

const etcd = new Etcd3({ hosts: endpoints });
const client = createEtcdClient({ endpoints, callTimeoutMs: 10_000 });
/** Every key of this file lives under it, and is deleted at the end: other tests read the whole bed etcd in one range. */
const ROOT = `/kr-test-${randomUUID()}`;
after(async () => {
  await etcd.delete().prefix(`${ROOT}/`);
  client.close();
  etcd.close();
});

/** Puts `count` keys `<prefix>/<index, zero-padded>` with values of `valueBytes`, in transactions under etcd's request limit. */
async function fill(prefix: string, count: number, valueBytes: number): Promise<string[]> {
  const keys = Array.from({ length: count }, (_, i) => `${prefix}/${String(i).padStart(6, '0')}`);
  const perTxn = Math.max(1, Math.min(128, Math.floor(1_000_000 / (valueBytes + 64))));
  for (let i = 0; i < keys.length; i += perTxn) {
    const batch = keys.slice(i, i + perTxn);
    await etcd.kv.txn({
      success: batch.map((k) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(k.padEnd(valueBytes, '.')) } })),
    });
  }
  return keys;
}

describe('etcd client: prefix reads', () => {
  it('reads every key of prefixes spanning several pages, in key order, each prefix apart', async () => {
    const root = `${ROOT}/pages`;
    const many = await fill(`${root}/many`, RANGE_PAGE * 2 + 137, 64);
    const few = await fill(`${root}/few`, 3, 64);
    await fill(`${root}/manyx`, 2, 64); // shares the text of a prefix, not the prefix: not read
    const [gotMany = [], gotFew = [], none = []] = await client.rangePrefixes([`${root}/many/`, `${root}/few/`, `${root}/none/`]);
    assert.deepEqual(
      gotMany.map((kv) => kv.key),
      many,
    );
    assert.deepEqual(
      gotFew.map((kv) => kv.key),
      few,
    );
    assert.deepEqual(none, []);
    assert.equal(gotMany[RANGE_PAGE]?.value, many[RANGE_PAGE]?.padEnd(64, '.'), 'values of later pages are read too');
  });

  it('hands back the caller’s copy of a key still at the revision it holds, on every page, and reads the rest', async () => {
    const prefix = `${ROOT}/known/`;
    const keys = await fill(prefix.slice(0, -1), RANGE_PAGE + 10, 32);
    const [first = []] = await client.rangePrefixes([prefix]);
    const held = new Map(first.map((kv) => [kv.key, kv]));
    const changed = keys[RANGE_PAGE + 5] ?? '';
    await etcd.put(changed).value('changed');
    const asked: string[] = [];
    const [again = []] = await client.rangePrefixes([prefix], (key, modRevision) => {
      asked.push(key);
      const kv = held.get(key);
      return kv?.modRevision === modRevision ? kv : undefined;
    });
    assert.deepEqual(asked, keys, 'asked about every key read, in order');
    assert.equal(again.length, keys.length);
    const reused = again.filter((kv) => held.get(kv.key) === kv).map((kv) => kv.key);
    assert.deepEqual(
      reused,
      keys.filter((k) => k !== changed),
      'the copies held came back as they were, on both pages',
    );
    const fresh = again.find((kv) => kv.key === changed);
    assert.equal(fresh?.value, 'changed', 'the changed key is read anew');
    assert.notEqual(fresh?.modRevision, held.get(changed)?.modRevision);
  });

  it('reads a prefix larger than one gRPC message may be (4 MiB), which a single range cannot', async () => {
    const prefix = `${ROOT}/big/`;
    const keys = await fill(prefix.slice(0, -1), 1_600, 3_000); // about 4.9 MB of values
    // The limit is real: one range of the whole prefix is refused by the client's gRPC. (A client
    // of its own: etcd3 counts the refusal against the host and would refuse the next calls.)
    const single = new Etcd3({ hosts: endpoints });
    try {
      await assert.rejects(single.getAll().prefix(prefix).strings(), /message larger than max|RESOURCE_EXHAUSTED|Received message larger/i);
    } finally {
      single.close();
    }
    const [got = []] = await client.rangePrefixes([prefix]);
    assert.equal(got.length, keys.length);
    assert.equal(got.at(-1)?.key, keys.at(-1));
  });
});

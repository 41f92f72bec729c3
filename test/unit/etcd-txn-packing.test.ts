import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { TxnWrite } from '../../src/registry/etcd/client.ts';
import { entriesPerTxn, packBatches, type EntryWrites } from '../../src/registry/etcd/writes.ts';

/** `n` entries of `writesPerEntry` puts each, every key distinct. */
function entries(n: number, writesPerEntry: number): EntryWrites[] {
  return Array.from({ length: n }, (_, i) => ({
    guard: { key: `/p/ns/svc/${i}`, modRevision: '0' },
    writes: Array.from({ length: writesPerEntry }, (_, w): TxnWrite => ({
      kind: 'put',
      key: `/p/ns/svc/${i}/${w}`,
      value: 'v',
      lease: 1n,
    })),
  }));
}

void describe('etcd transaction packing', () => {
  void it('fills each transaction with exactly the entries entriesPerTxn names, whatever the room and writes per entry', () => {
    for (const room of [3, 4, 5, 7, 128, 129])
      for (const writesPerEntry of [1, 2, 3]) {
        if (writesPerEntry > room) continue;
        const per = entriesPerTxn(room, writesPerEntry);
        const batches = packBatches(entries(5 * per + 1, writesPerEntry), room);
        assert.deepEqual(
          batches.map((b) => b.length),
          [per, per, per, per, per, 1],
          `room ${room}, ${writesPerEntry} write(s) per entry`,
        );
        for (const b of batches) {
          assert.ok(b.length + 1 <= room, 'the guards fit: one per entry and the lease guard');
          assert.ok(b.reduce((n, e) => n + e.writes.length, 0) <= room, 'the writes fit');
        }
      }
  });

  void it('gives etcd’s default of 128 operations 127 one-put entries, or 64 with the owner index', () => {
    assert.equal(entriesPerTxn(128, 1), 127);
    assert.equal(entriesPerTxn(128, 2), 64);
  });

  void it('never puts one key twice into a transaction', () => {
    const [a, b] = entries(2, 1);
    assert.ok(a && b);
    const clash: EntryWrites = { guard: b.guard, writes: [{ kind: 'delete', key: a.writes[0]?.key ?? '' }] };
    assert.deepEqual(
      packBatches([a, b, clash], 128).map((x) => x.length),
      [2, 1],
    );
  });
});

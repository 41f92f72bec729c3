/**
 * The wire form of the backend's guarded write transaction (etcdserverpb.KV/Txn with compares,
 * puts and deletes), encoded and decoded by protobufjs from a descriptor that declares only what
 * this transaction uses.
 *
 * etcd3 sends a transaction through its whole generated message set: every plain object is first
 * copied into message objects, every 64-bit field becomes a Long, every key and value a Buffer, and
 * each of the response's operation results (one per put) is decoded into an object with a header of
 * four 64-bit strings, of which the write path reads none. A first pass over 10,000
 * ServiceInstances sends about 80 such transactions of 128 puts guarded by 128 compares, and that
 * garbage was a third of what the pass allocated. Here protobufjs encodes the plain objects as they
 * are, with keys and values written as UTF-8 strings (`string` and `bytes` share protobuf's
 * length-delimited wire type), and the response descriptor leaves out the operation results, which
 * protobufjs then skips unread.
 */
import protobuf from 'protobufjs';

import type { TxnGuard, TxnWrite } from './client.ts';

/** The gRPC method the encoded request is sent to. */
export const TXN_METHOD = '/etcdserverpb.KV/Txn';

// Field numbers and types as in etcd's api/etcdserverpb/rpc.proto; `bytes` fields the backend only
// fills from strings are declared `string`.
const root = protobuf.Root.fromJSON({
  nested: {
    Compare: {
      fields: {
        result: { type: 'int32', id: 1 },
        target: { type: 'int32', id: 2 },
        key: { type: 'string', id: 3 },
        version: { type: 'int64', id: 4 },
        modRevision: { type: 'int64', id: 6 },
        value: { type: 'string', id: 7 },
      },
    },
    PutRequest: {
      fields: {
        key: { type: 'string', id: 1 },
        value: { type: 'string', id: 2 },
        lease: { type: 'int64', id: 3 },
      },
    },
    DeleteRangeRequest: { fields: { key: { type: 'string', id: 1 } } },
    RequestOp: {
      fields: {
        put: { type: 'PutRequest', id: 2 },
        deleteRange: { type: 'DeleteRangeRequest', id: 3 },
      },
    },
    TxnRequest: {
      fields: {
        compare: { rule: 'repeated', type: 'Compare', id: 1 },
        success: { rule: 'repeated', type: 'RequestOp', id: 2 },
      },
    },
    ResponseHeader: { fields: { revision: { type: 'int64', id: 3 } } },
    // The operation results (field 3) are left out: protobufjs skips unknown fields.
    TxnResponse: {
      fields: {
        header: { type: 'ResponseHeader', id: 1 },
        succeeded: { type: 'bool', id: 2 },
      },
    },
  },
});
const TxnRequest = root.lookupType('TxnRequest');
const TxnResponse = root.lookupType('TxnResponse');

/**
 * etcd's Compare.CompareTarget values the guards use besides VERSION, which is protobuf's default (0)
 * and so is not written; Compare.result stays 0 too (EQUAL).
 */
const TARGET_MOD = 2;
const TARGET_VALUE = 3;

/** A 64-bit field as protobufjs takes it: a number while exact, else its two 32-bit halves. */
type Int64 = number | { readonly low: number; readonly high: number };

const TWO_POW_32 = 2n ** 32n;

/** `value` (a non-negative decimal string or bigint below 2^64) as protobufjs's writer takes it. */
export function toInt64(value: string | bigint): Int64 {
  const big = typeof value === 'bigint' ? value : BigInt(value);
  if (big < 0n || big >= TWO_POW_32 * TWO_POW_32) throw new RangeError(`not an unsigned 64-bit value: ${value}`);
  if (big <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(big);
  return { low: Number(big % TWO_POW_32) | 0, high: Number(big / TWO_POW_32) | 0 };
}

interface CompareMessage {
  readonly target?: number;
  readonly key: string;
  readonly version?: number;
  readonly modRevision?: Int64;
  readonly value?: string;
}

function compareOf(g: TxnGuard): CompareMessage {
  // The target_union fields are set even when 0, as a oneof must be to count as set.
  if ('modRevision' in g) {
    return g.modRevision === '0' ? { key: g.key, version: 0 } : { target: TARGET_MOD, key: g.key, modRevision: toInt64(g.modRevision) };
  }
  return g.value === undefined ? { key: g.key, version: 0 } : { target: TARGET_VALUE, key: g.key, value: g.value };
}

/**
 * The request bytes of a transaction that runs `writes` if every guard holds (no failure branch).
 * A put's lease is written once per distinct value, not converted per put.
 */
export function encodeTxnRequest(guards: readonly TxnGuard[], writes: readonly TxnWrite[]): Buffer {
  let lastLease: bigint | undefined;
  let lastLeaseInt: Int64 = 0;
  const success = writes.map((w) => {
    if (w.kind === 'delete') return { deleteRange: { key: w.key } };
    if (w.lease !== lastLease) {
      lastLease = w.lease;
      lastLeaseInt = toInt64(w.lease);
    }
    return { put: { key: w.key, value: w.value, lease: lastLeaseInt } };
  });
  const bytes = TxnRequest.encode({ compare: guards.map(compareOf), success }).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** What the write path reads of a transaction's response. */
export interface TxnOutcome {
  readonly succeeded: boolean;
  /** The store's revision after the transaction, as a decimal string. */
  readonly revision: string;
}

interface DecodedResponse {
  readonly header?: { readonly revision?: number | { toString(): string } };
  readonly succeeded?: boolean;
}

/** Decodes a Txn response; the operation results are skipped. */
export function decodeTxnResponse(bytes: Uint8Array): TxnOutcome {
  const res = TxnResponse.decode(bytes) as unknown as DecodedResponse;
  return { succeeded: res.succeeded === true, revision: String(res.header?.revision ?? 0) };
}

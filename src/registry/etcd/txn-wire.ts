/**
 * The wire form of the backend's guarded write transaction (etcdserverpb.KV/Txn with compares,
 * puts and deletes): the request written straight into one buffer, the response decoded by
 * protobufjs from a descriptor that declares only what the write path reads.
 *
 * etcd3 sends a transaction through its whole generated message set: every plain object is first
 * copied into message objects, every 64-bit field becomes a Long, every key and value a Buffer, and
 * each of the response's operation results (one per put) is decoded into an object with a header of
 * four 64-bit strings, of which the write path reads none. A first pass over 10,000
 * ServiceInstances sends about 80 such transactions of 128 puts guarded by 128 compares, and that
 * garbage was a third of what the pass allocated. protobufjs's own writer, fed the plain objects,
 * still queued an operation object per field written (a seventh of the pass's allocations), so the
 * request is written by hand: sizes first, then every field into one buffer of exactly that size.
 * The messages are few and fixed (field numbers and types as in etcd's api/etcdserverpb/rpc.proto;
 * the unit test decodes the bytes with etcd3's copy of that file), and keys and values are written
 * as UTF-8, as etcd reads its `bytes` fields.
 */
import protobuf from 'protobufjs';

import type { TxnGuard, TxnWrite } from './client.ts';

/** The gRPC method the encoded request is sent to. */
export const TXN_METHOD = '/etcdserverpb.KV/Txn';

const root = protobuf.Root.fromJSON({
  nested: {
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
const TxnResponse = root.lookupType('TxnResponse');

// Field keys (field number << 3 | wire type; 0 varint, 2 length-delimited) of the messages written.
const TXN_COMPARE = 0x0a; // TxnRequest.compare = 1
const TXN_SUCCESS = 0x12; // TxnRequest.success = 2
const CMP_TARGET = 0x10; // Compare.target = 2 (result = 1 stays EQUAL, protobuf's default, unwritten)
const CMP_KEY = 0x1a; // Compare.key = 3
const CMP_VERSION = 0x20; // Compare.version = 4
const CMP_MOD_REVISION = 0x30; // Compare.mod_revision = 6
const CMP_VALUE = 0x3a; // Compare.value = 7
const OP_PUT = 0x12; // RequestOp.request_put = 2
const OP_DELETE = 0x1a; // RequestOp.request_delete_range = 3
const PUT_KEY = 0x0a; // PutRequest.key = 1
const PUT_VALUE = 0x12; // PutRequest.value = 2
const PUT_LEASE = 0x18; // PutRequest.lease = 3
const DELETE_KEY = 0x0a; // DeleteRangeRequest.key = 1

/** Compare.CompareTarget values the guards use besides VERSION (0, unwritten). */
const TARGET_MOD = 2;
const TARGET_VALUE = 3;

/** An unsigned 64-bit value: a number while exact, else a bigint. */
type Uint64 = number | bigint;

const UINT64_END = 2n ** 64n;

/** `value` (a non-negative decimal string or bigint below 2^64) as the encoder writes it. */
export function toUint64(value: string | bigint): Uint64 {
  const big = typeof value === 'bigint' ? value : BigInt(value);
  if (big < 0n || big >= UINT64_END) throw new RangeError(`not an unsigned 64-bit value: ${value}`);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

function varintSize(v: Uint64): number {
  let n = 1;
  if (typeof v === 'number') {
    for (; v >= 128; n++) v = Math.floor(v / 128);
  } else {
    for (; v >= 128n; n++) v >>= 7n;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: Uint64): number {
  if (typeof v === 'number') {
    for (; v >= 128; v = Math.floor(v / 128)) buf[pos++] = (v % 128) | 128;
    buf[pos++] = v;
  } else {
    for (; v >= 128n; v >>= 7n) buf[pos++] = Number(v & 127n) | 128;
    buf[pos++] = Number(v);
  }
  return pos;
}

/** Size of a length-delimited field of `n` bytes, key included. */
function fieldSize(n: number): number {
  return 1 + varintSize(n) + n;
}

function writeString(buf: Buffer, pos: number, key: number, text: string, bytes: number): number {
  buf[pos++] = key;
  pos = writeVarint(buf, pos, bytes);
  return pos + buf.write(text, pos, bytes, 'utf8');
}

/**
 * The request bytes of a transaction that runs `writes` if every guard holds (no failure branch).
 * A put's lease is converted once per distinct value, not per put.
 *
 * @throws {RangeError} for a lease or mod revision outside 0 … 2^64 − 1 (and a SyntaxError for a
 *   revision that is no number): nothing else is sent in its place.
 */
export function encodeTxnRequest(guards: readonly TxnGuard[], writes: readonly TxnWrite[]): Buffer {
  // First pass: the UTF-8 size of every key and value and of every message, in write order.
  const sizes: number[] = [];
  // Mod revisions and leases converted in the first pass, read back in the second in the same order.
  const numbers: Uint64[] = [];
  let total = 0;
  for (const g of guards) {
    const keyBytes = Buffer.byteLength(g.key);
    let size = fieldSize(keyBytes);
    sizes.push(keyBytes);
    if ('modRevision' in g && g.modRevision !== '0') {
      const revision = toUint64(g.modRevision);
      numbers.push(revision);
      size += 2 + 1 + varintSize(revision);
    } else if (!('modRevision' in g) && g.value !== undefined) {
      const valueBytes = Buffer.byteLength(g.value);
      sizes.push(valueBytes);
      size += 2 + fieldSize(valueBytes);
    } else {
      size += 2; // version = 0, written: a oneof member counts as set only when present
    }
    sizes.push(size);
    total += fieldSize(size);
  }
  let lastLease: bigint | undefined;
  let lease: Uint64 = 0;
  let leaseSize = 0;
  for (const w of writes) {
    const keyBytes = Buffer.byteLength(w.key);
    sizes.push(keyBytes);
    let size = fieldSize(keyBytes);
    if (w.kind === 'put') {
      if (w.lease !== lastLease) {
        lastLease = w.lease;
        lease = toUint64(w.lease);
        numbers.push(lease);
        leaseSize = lease === 0 ? 0 : 1 + varintSize(lease);
      }
      const valueBytes = Buffer.byteLength(w.value);
      sizes.push(valueBytes);
      size += fieldSize(valueBytes) + leaseSize;
    }
    sizes.push(size);
    total += fieldSize(fieldSize(size));
  }

  // Second pass: every field, in the same order.
  const buf = Buffer.allocUnsafe(total);
  let pos = 0;
  let s = 0;
  let n = 0;
  for (const g of guards) {
    const keyBytes = sizes[s++] as number;
    const mod = 'modRevision' in g && g.modRevision !== '0';
    const valueBytes = !mod && !('modRevision' in g) && g.value !== undefined ? (sizes[s++] as number) : -1;
    buf[pos++] = TXN_COMPARE;
    pos = writeVarint(buf, pos, sizes[s++] as number);
    if (mod || valueBytes >= 0) {
      buf[pos++] = CMP_TARGET;
      buf[pos++] = mod ? TARGET_MOD : TARGET_VALUE;
    }
    pos = writeString(buf, pos, CMP_KEY, g.key, keyBytes);
    if (mod) {
      buf[pos++] = CMP_MOD_REVISION;
      pos = writeVarint(buf, pos, numbers[n++] as Uint64);
    } else if (valueBytes >= 0) {
      pos = writeString(buf, pos, CMP_VALUE, (g as { value: string }).value, valueBytes);
    } else {
      buf[pos++] = CMP_VERSION;
      buf[pos++] = 0;
    }
  }
  lastLease = undefined;
  for (const w of writes) {
    const keyBytes = sizes[s++] as number;
    const valueBytes = w.kind === 'put' ? (sizes[s++] as number) : 0;
    const size = sizes[s++] as number;
    buf[pos++] = TXN_SUCCESS;
    pos = writeVarint(buf, pos, fieldSize(size));
    buf[pos++] = w.kind === 'put' ? OP_PUT : OP_DELETE;
    pos = writeVarint(buf, pos, size);
    if (w.kind === 'delete') {
      pos = writeString(buf, pos, DELETE_KEY, w.key, keyBytes);
      continue;
    }
    pos = writeString(buf, pos, PUT_KEY, w.key, keyBytes);
    pos = writeString(buf, pos, PUT_VALUE, w.value, valueBytes);
    if (w.lease !== lastLease) {
      lastLease = w.lease;
      lease = numbers[n++] as Uint64;
    }
    if (lease !== 0) {
      buf[pos++] = PUT_LEASE;
      pos = writeVarint(buf, pos, lease);
    }
  }
  if (pos !== total) throw new Error(`encoding a transaction wrote ${pos} bytes, expected ${total}`);
  return buf;
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

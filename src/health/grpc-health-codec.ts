/**
 * Hand-written protobuf codec for the two messages of grpc.health.v1, so a probe needs neither
 * .proto files nor protobufjs:
 *
 *   message HealthCheckRequest  { string service = 1; }
 *   message HealthCheckResponse { ServingStatus status = 1; }
 *
 * Proto3 rules: a field holding its default ("" or 0) is not written, and a reader skips fields it
 * does not know.
 */

/** The full method name of the standard health check. */
export const healthCheckMethod = '/grpc.health.v1.Health/Check';

/** HealthCheckResponse.ServingStatus. */
export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;

/** A grpc.health.v1.HealthCheckRequest. */
export interface HealthCheckRequest {
  /** Service whose health is asked for; `""` means the server as a whole. */
  readonly service: string;
}

/** A grpc.health.v1.HealthCheckResponse. */
export interface HealthCheckResponse {
  /** A ServingStatus value; unknown numbers are kept as they came. */
  readonly status: number;
}

const wireVarint = 0;
const wire64Bit = 1;
const wireLengthDelimited = 2;
const wire32Bit = 5;

/** Encodes a HealthCheckRequest. */
export function encodeHealthCheckRequest(request: HealthCheckRequest): Buffer {
  if (request.service === '') return Buffer.alloc(0);
  const service = Buffer.from(request.service, 'utf8');
  return Buffer.concat([Buffer.from([(1 << 3) | wireLengthDelimited]), encodeVarint(service.length), service]);
}

/** Decodes a HealthCheckRequest. @throws Error when the bytes are not a valid message. */
export function decodeHealthCheckRequest(bytes: Buffer): HealthCheckRequest {
  let service = '';
  readFields(bytes, (field, wireType, value) => {
    if (field === 1 && wireType === wireLengthDelimited && Buffer.isBuffer(value)) service = value.toString('utf8');
  });
  return { service };
}

/** Encodes a HealthCheckResponse. */
export function encodeHealthCheckResponse(response: HealthCheckResponse): Buffer {
  if (response.status === 0) return Buffer.alloc(0);
  return Buffer.concat([Buffer.from([(1 << 3) | wireVarint]), encodeVarint(response.status)]);
}

/** Decodes a HealthCheckResponse. @throws Error when the bytes are not a valid message. */
export function decodeHealthCheckResponse(bytes: Buffer): HealthCheckResponse {
  let status = 0;
  readFields(bytes, (field, wireType, value) => {
    if (field === 1 && wireType === wireVarint && typeof value === 'number') status = value;
  });
  return { status };
}

function encodeVarint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** Walks the fields of a message, handing each one to `onField`; skips what it does not need. */
function readFields(bytes: Buffer, onField: (field: number, wireType: number, value: number | Buffer) => void): void {
  let offset = 0;
  const readVarint = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const byte = bytes[offset++];
      if (byte === undefined) throw new Error('protobuf message ends inside a varint');
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 0x80;
    }
    throw new Error('protobuf varint is longer than 10 bytes');
  };
  const take = (length: number): Buffer => {
    if (offset + length > bytes.length) throw new Error('protobuf field runs past the end of the message');
    const value = bytes.subarray(offset, offset + length);
    offset += length;
    return value;
  };
  while (offset < bytes.length) {
    const tag = readVarint();
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (wireType === wireVarint) onField(field, wireType, readVarint());
    else if (wireType === wireLengthDelimited) onField(field, wireType, take(readVarint()));
    else if (wireType === wire64Bit) take(8);
    else if (wireType === wire32Bit) take(4);
    else throw new Error(`protobuf wire type ${wireType} is not supported`);
  }
}

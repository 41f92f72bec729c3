/**
 * A minimal ZooKeeper wire-protocol responder for the adapter's unit tests: it accepts sessions
 * and answers every request with an error code the test chooses (CLOSE_SESSION with OK, then it closes
 * the connection as a server does). It exists for what a real
 * standalone server cannot be made to send (SESSION_MOVED needs an ensemble) and for counting
 * connection attempts; everything else is tested against the bed's real ZooKeeper.
 */
import { createServer, type Server, type Socket } from 'node:net';

const PING = 11;
const PING_XID = -2;
const CLOSE_SESSION = -11;

/** Answers requests; `answer` gives the error code of the n-th request (0-based) of a given op type. */
export class ZooKeeperWireStub {
  /** Connection attempts seen so far. */
  connections = 0;
  /** Op types of the requests received (pings excepted), e.g. -11 for CLOSE_SESSION. */
  readonly requestTypes: number[] = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #requests = 0;
  #held: (() => void)[] | undefined;

  private constructor(answer: (type: number, n: number) => number) {
    this.#server = createServer((socket) => {
      this.connections += 1;
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
      let pending = Buffer.alloc(0);
      let connected = false;
      socket.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 4 && pending.length >= 4 + pending.readInt32BE(0)) {
          const frame = pending.subarray(4, 4 + pending.readInt32BE(0));
          pending = pending.subarray(4 + frame.length);
          if (!connected) {
            connected = true;
            const answerConnect = (): void => void socket.write(connectResponse(frame));
            if (this.#held === undefined) answerConnect();
            else this.#held.push(answerConnect);
            continue;
          }
          const xid = frame.readInt32BE(0);
          const type = frame.readInt32BE(4);
          if (type === PING) {
            socket.write(reply(PING_XID, 0));
            continue;
          }
          this.requestTypes.push(type);
          if (type === CLOSE_SESSION) socket.end(reply(xid, 0));
          else socket.write(reply(xid, answer(type, this.#requests++)));
        }
      });
    });
  }

  /** Starts listening on a free loopback port. */
  static async start(answer: (type: number, n: number) => number): Promise<ZooKeeperWireStub> {
    const stub = new ZooKeeperWireStub(answer);
    await new Promise<void>((resolve) => stub.#server.listen(0, '127.0.0.1', resolve));
    return stub;
  }

  /** `127.0.0.1:<port>`. */
  get connectString(): string {
    const address = this.#server.address();
    return `127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  }

  /** Leaves new sessions waiting for the answer to their ConnectRequest until {@link release}. */
  hold(): void {
    this.#held ??= [];
  }

  /** Answers the held ConnectRequests, and the next ones at once. */
  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const answerConnect of held) answerConnect();
  }

  /** Drops every open connection, as a server restart would. */
  dropConnections(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** ConnectResponse: protocol version, the requested timeout, the session id (a fixed one for a new session), a password. */
function connectResponse(request: Buffer): Buffer {
  const timeout = request.readInt32BE(12);
  const requestedId = request.subarray(16, 24);
  const sessionId = requestedId.equals(Buffer.alloc(8)) ? Buffer.from('0123456789abcdef', 'hex') : requestedId;
  const body = Buffer.concat([int(0), int(timeout), sessionId, int(16), Buffer.alloc(16, 7)]);
  return Buffer.concat([int(body.length), body]);
}

/** ReplyHeader only: xid, zxid 0, error code. */
function reply(xid: number, err: number): Buffer {
  const body = Buffer.concat([int(xid), Buffer.alloc(8), int(err)]);
  return Buffer.concat([int(body.length), body]);
}

function int(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeInt32BE(value);
  return buffer;
}

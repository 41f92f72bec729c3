/**
 * Typed access to the parts of node-zookeeper-client 1.1.3 that its public API and its typings do
 * not expose, in one place so that the patches in this folder read against named fields. The
 * package is pinned exactly (package.json), and its tests in this folder fail if these fields move.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type zookeeper from 'node-zookeeper-client';

declare module 'node-zookeeper-client' {
  /** Options the library reads (ConnectionManager constructor) but its typings omit. */
  interface Option {
    /** 8 bytes: the id of a live session to re-attach to; anything else starts a new session. */
    sessionId?: Buffer;
    /** 16 bytes: that session's password. */
    sessionPassword?: Buffer;
  }
}

const require = createRequire(import.meta.url);

/** The connection manager's states (`lib/ConnectionManager.js` STATES). */
export interface ConnectionStates {
  readonly DISCONNECTED: number;
  readonly CONNECTING: number;
  readonly CONNECTED: number;
  readonly CONNECTED_READ_ONLY: number;
  readonly CLOSING: number;
  readonly CLOSED: number;
  readonly SESSION_EXPIRED: number;
  readonly AUTHENTICATION_FAILED: number;
}

export const CONNECTION_STATES = (require('node-zookeeper-client/lib/ConnectionManager.js') as { STATES: ConnectionStates }).STATES;

/** A request of the library's wire layer (`lib/jute`), as queued by the connection manager. */
export interface JuteRequest {
  readonly header: { type: number } | null;
}

/** The connection manager behind a client: socket, state, reconnect loop and request queue. */
export interface ConnectionManager {
  state: number;
  socket: Socket | undefined;
  connectTimeoutHandler: ReturnType<typeof setTimeout> | null;
  /** Opens a socket to the next server; called at start and again from `onSocketClosed` to reconnect. */
  connect(): void;
  /** Picks the next server and calls back, at once or after a random spin delay; the callback opens the socket. */
  findNextServer(callback: (server: unknown) => void): void;
  setState(state: number): void;
  /** Handles bytes from the server; looked up when each socket is opened, so an override applies to later sockets. */
  onSocketData(buffer: Buffer): void;
  /** Queues a request; the callback gets `(error, response)`. */
  queue(request: JuteRequest, callback?: (error: unknown, response: unknown) => void): void;
}

/** The library's Exception module (`lib/Exception.js`): a constructor with a `create` factory and the codes it knows. */
export interface ExceptionModule {
  (code: number, name: string, path: string | undefined, ctor: unknown): void;
  prototype: object;
  create(code: number, path?: string): zookeeper.Exception;
  readonly [codeName: string]: unknown;
}

export const EXCEPTION_MODULE = require('node-zookeeper-client/lib/Exception.js') as ExceptionModule;

/** One operation of a transaction as `lib/Transaction.js` stores it before serialising. */
export interface TransactionOp {
  readonly type: number;
  readonly path: string;
  version?: number;
}

/** The library's transaction builder with its op list, which the adapter corrects before commit. */
export interface TransactionWithOps extends zookeeper.Transaction {
  readonly ops: TransactionOp[];
}

/** The connection manager of a client. */
export function connectionManagerOf(client: zookeeper.Client): ConnectionManager {
  return (client as unknown as { connectionManager: ConnectionManager }).connectionManager;
}

/**
 * node-zookeeper-client (an optional peer, loaded only through the `./zookeeper` entry point) and
 * the two guards this package puts around it. The library is unmaintained since 2022:
 *
 * - Its `Exception.create` throws `Unknown code: …` for every error code newer than its 2013 table
 *   (SESSION_MOVED -118 and later). It runs inside the socket's `data` handler, so one such answer
 *   would throw out of an event handler and end the process. {@link guardUnknownCodes} makes it
 *   build an ordinary library Exception for those codes instead, so the request just fails.
 * - Its reconnect loop has no off switch: `close()` on a client that is not connected leaves a
 *   spin-delay timer that later opens a socket and sends a ConnectRequest into a closing client.
 *   {@link fenceReconnects} makes every (re)connect ask first.
 * - It never notices a server that went silent (a partition that drops packets): it pings after a
 *   third of the session timeout of quiet but never waits for the answer, and its connect timeout
 *   ends at the TCP handshake. The cache would then wait for ever on a dead connection.
 *   {@link dropSilentConnections} drops a connection that heard nothing for two thirds of the
 *   session timeout (the read timeout of ZooKeeper's Java client), so the library reconnects.
 *
 * Both reach into the library's internals (`Exception`, `connectionManager`), typed here.
 */
import zookeeper from 'node-zookeeper-client';

export { zookeeper };

/** The library's Exception constructor with the factory its wire layer calls. */
interface ExceptionModule {
  prototype: object;
  create(code: number, path?: string): unknown;
}

/** The parts of the library's connection manager the guards need. */
interface ConnectionManager {
  socket: { destroy(): void; destroyed: boolean } | undefined;
  connectTimeoutHandler: ReturnType<typeof setTimeout> | null;
  findNextServer(openSocket: (server: unknown) => void): void;
  /** Looked up when each socket is opened, so an override applies to later sockets. */
  onSocketData(buffer: Buffer): void;
  /** 1 connecting, 2 connected, 3 connected read-only (lib/ConnectionManager.js STATES). */
  state: number;
}

const WAITING_ON_SERVER = new Set([1, 2, 3]);

function managerOf(client: zookeeper.Client): ConnectionManager {
  return (client as unknown as { connectionManager: ConnectionManager }).connectionManager;
}

/**
 * Drops `client`'s connection once nothing was heard from the server for two thirds of
 * `timeoutMs` while connected or waiting for the answer to a connect request; returns the
 * function that stops watching.
 */
export function dropSilentConnections(client: zookeeper.Client, timeoutMs: number): () => void {
  const manager = managerOf(client);
  let lastHeard = Date.now();
  let socket = manager.socket;
  const onSocketData = manager.onSocketData.bind(manager);
  manager.onSocketData = (buffer: Buffer) => {
    lastHeard = Date.now();
    onSocketData(buffer);
  };
  const timer = setInterval(
    () => {
      // A new socket starts its own clock; so does a manager that is not waiting on the server.
      if (manager.socket !== socket || !WAITING_ON_SERVER.has(manager.state) || manager.socket === undefined || manager.socket.destroyed) {
        socket = manager.socket;
        lastHeard = Date.now();
        return;
      }
      if (Date.now() - lastHeard <= (timeoutMs * 2) / 3) return;
      lastHeard = Date.now();
      manager.socket.destroy();
    },
    Math.max(100, Math.floor(timeoutMs / 10)),
  );
  timer.unref();
  return () => clearInterval(timer);
}

const GUARDED = Symbol.for('@kube-registrar/discovery.zookeeper.unknownCodes');

/**
 * Makes the library's `Exception.create` return an Exception (same prototype, so `getCode()` gives
 * the server's code) for codes it does not know, instead of throwing. Idempotent; a library whose
 * internals moved is left as it is.
 */
export function guardUnknownCodes(module: ExceptionModule = zookeeper.Exception as unknown as ExceptionModule): void {
  const marked = module as ExceptionModule & { [GUARDED]?: true };
  if (marked[GUARDED] || typeof module.create !== 'function') return;
  const original = module.create.bind(module);
  const create = (code: number, path?: string): unknown => {
    try {
      return original(code, path);
    } catch {
      // Built without the library's constructor, which would validate the code and throw again.
      const exception = Object.create(module.prototype) as Error & { code: number; path: string | undefined };
      Error.captureStackTrace(exception, create);
      exception.code = typeof code === 'number' ? code : -1;
      exception.name = `UNKNOWN_CODE_${String(code)}`;
      exception.path = path;
      exception.message = `Exception: ${exception.name}[${String(code)}]${path === undefined ? '' : `@${path}`}`;
      return exception;
    }
  };
  module.create = create;
  marked[GUARDED] = true;
}

/**
 * Makes every connection attempt of `client` ask `mayConnect` first; when it says no, no socket is
 * opened. Returns the function that stops the connection now: it cancels a connect in progress
 * and destroys the socket without waiting for the server.
 */
export function fenceReconnects(client: zookeeper.Client, mayConnect: () => boolean): () => void {
  const manager = managerOf(client);
  const findNextServer = manager.findNextServer.bind(manager);
  manager.findNextServer = (openSocket) =>
    findNextServer((server) => {
      if (mayConnect()) openSocket(server);
    });
  return () => {
    if (manager.connectTimeoutHandler !== null) clearTimeout(manager.connectTimeoutHandler);
    manager.connectTimeoutHandler = null;
    if (manager.socket !== undefined && !manager.socket.destroyed) manager.socket.destroy();
  };
}

/**
 * Control over the library's connection that its API lacks: ending the connection WITHOUT ending
 * the session, and a fence on its reconnect loop.
 *
 * - The library reconnects by itself whenever its socket closes, unless it is closing or the
 *   session expired. If a predecessor keeps doing that after a successor adopted its session, the
 *   server hands the session back and forth between them (each connect with a session id closes the
 *   other connection that holds it). So every (re)connect asks the fence first, and a refused one
 *   leaves the library closed.
 * - The fence sits in `findNextServer`'s callback, not in `connect`: a reconnect that is already
 *   waiting out the spin delay in a timer would otherwise still open a socket.
 * - The library never notices a server that went silent (a partition that drops packets rather
 *   than resetting the connection): it sends a ping after a third of the session timeout of
 *   quiet, but never waits for the answer, and node counts the ping itself as socket activity. So
 *   the session would expire on the server while the client still thinks it is connected, and
 *   nothing would be re-created. {@link dropSilentConnections} drops a connection that heard
 *   nothing for two thirds of the session timeout (the read timeout of ZooKeeper's Java client),
 *   and the library reconnects, to this or the next server, and learns whether the session lives.
 * - `client.close()` sends CLOSE_SESSION, which deletes the session's ephemeral nodes at once;
 *   {@link dropConnection} only destroys the socket, so the session lives on until it is adopted
 *   or times out.
 */
import { CONNECTION_STATES, type ConnectionManager } from './internals.ts';

/**
 * Makes every connection attempt of `manager` ask `mayConnect` first. When it says no, no socket is
 * opened, the manager is left closed, and `onRefused` runs.
 */
export function fenceConnects(manager: ConnectionManager, mayConnect: () => boolean, onRefused: () => void): void {
  const findNextServer = manager.findNextServer.bind(manager);
  manager.findNextServer = (openSocket) =>
    findNextServer((server) => {
      if (mayConnect()) {
        openSocket(server);
        return;
      }
      manager.setState(CONNECTION_STATES.CLOSED);
      onRefused();
    });
}

/**
 * Destroys the socket without telling the server, so the session stays; pending library requests
 * fail with CONNECTION_LOSS and the manager ends closed, never reconnecting. Resolves once the
 * socket is closed.
 */
export function dropConnection(manager: ConnectionManager): Promise<void> {
  manager.connect = () => {};
  if (manager.connectTimeoutHandler !== null) clearTimeout(manager.connectTimeoutHandler);
  const socket = manager.socket;
  if (socket === undefined || socket.closed) {
    manager.setState(CONNECTION_STATES.CLOSED);
    return Promise.resolve();
  }
  // CLOSING makes the library's own close handler settle on CLOSED instead of reconnecting.
  manager.setState(CONNECTION_STATES.CLOSING);
  return new Promise((resolve) => {
    socket.once('close', () => resolve());
    socket.destroy();
  });
}

/**
 * Sends CLOSE_SESSION (the server deletes the session's ephemeral nodes at once) and resolves once
 * the server has closed the connection, or after `timeoutMs`, when the socket is destroyed anyway.
 */
export function closeSession(manager: ConnectionManager, close: () => void, timeoutMs: number): Promise<void> {
  manager.connect = () => {};
  const socket = manager.socket;
  if (socket === undefined || socket.closed) return dropConnection(manager);
  return new Promise((resolve) => {
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    close();
  });
}

/**
 * Drops the connection once nothing was heard from the server for two thirds of `timeoutMs()`
 * while connected, or while waiting for the answer to a connect request (the library's own
 * connect timeout stops at the TCP handshake); returns the function that stops watching.
 */
export function dropSilentConnections(manager: ConnectionManager, timeoutMs: () => number, now: () => number = Date.now): () => void {
  let lastHeard = now();
  let socket = manager.socket;
  const onSocketData = manager.onSocketData.bind(manager);
  manager.onSocketData = (buffer: Buffer) => {
    lastHeard = now();
    onSocketData(buffer);
  };
  const watched = new Set([CONNECTION_STATES.CONNECTED, CONNECTION_STATES.CONNECTED_READ_ONLY, CONNECTION_STATES.CONNECTING]);
  const check = (): void => {
    // A new socket starts its own clock; so does a manager that is not waiting on the server.
    if (manager.socket !== socket || !watched.has(manager.state) || manager.socket === undefined || manager.socket.destroyed) {
      socket = manager.socket;
      lastHeard = now();
      return;
    }
    if (now() - lastHeard <= (timeoutMs() * 2) / 3) return;
    lastHeard = now();
    manager.socket.destroy();
  };
  const timer = setInterval(check, Math.max(100, Math.floor(timeoutMs() / 10)));
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * One HTTP/1.1 exchange over `node:http(s)` on a kept-alive connection, shared by the Kubernetes
 * transport and the HTTP health probe: both keep connections alive, so both meet the connection
 * the server closed while it idled, and both read whole (small) bodies.
 */
import type { ClientRequest, IncomingMessage } from 'node:http';

/**
 * A request sent on a kept-alive connection failed before any answer: the server had closed the
 * connection while it idled. Nothing reached the server, so the request may be sent once more.
 */
class StaleConnectionError extends Error {}

/**
 * Sends a request and resolves with the response once its status line arrived. `start` creates
 * the request (`http.request` / `https.request` with the given callback); an error it throws (a
 * header HTTP cannot carry) rejects. A failure on a reused connection before any answer rejects
 * with a StaleConnectionError for {@link retryOnStaleConnection}.
 */
export function exchange(start: (onResponse: (res: IncomingMessage) => void) => ClientRequest, body?: string): Promise<IncomingMessage> {
  return new Promise<IncomingMessage>((resolve, reject) => {
    let sent: ClientRequest;
    try {
      sent = start(resolve);
    } catch (err: unknown) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    sent.once('error', (err: NodeJS.ErrnoException) => {
      const stale = sent.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
      reject(stale ? new StaleConnectionError('kept-alive connection closed by the server', { cause: err }) : err);
    });
    sent.end(body);
  });
}

/**
 * Runs `attempt` (built on {@link exchange}) and, when it failed on a stale kept-alive connection
 * and `mayRetry()` allows, once more on a new connection; the caller sees the original error
 * otherwise, never the StaleConnectionError.
 */
export async function retryOnStaleConnection<T>(attempt: () => Promise<T>, mayRetry: () => boolean): Promise<T> {
  try {
    return await attempt();
  } catch (err: unknown) {
    if (!(err instanceof StaleConnectionError)) throw err;
    if (!mayRetry()) throw err.cause;
  }
  try {
    return await attempt();
  } catch (err: unknown) {
    throw err instanceof StaleConnectionError ? err.cause : err;
  }
}

/** A body larger than a limit: the reader stops and destroys the response. */
export interface BodyLimit {
  readonly bytes: number;
  /** The error message when the body is larger. */
  readonly message: string;
}

/** Reads a whole response body as UTF-8 text, or fails once it passes `limit`. */
export async function readBody(body: IncomingMessage, limit?: BodyLimit): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    size += buffer.byteLength;
    if (limit !== undefined && size > limit.bytes) {
      body.destroy();
      throw new Error(limit.message);
    }
    chunks.push(buffer);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
}

/**
 * The few Consul HTTP calls the source and the registrar make, on Node's global fetch: no Consul
 * client library, because the consul npm package drops fields read here (Weights, Namespace).
 * Every call has a deadline, the ACL token is asked for on every call (so a rotated token is used
 * without a restart), and failures come back as {@link ConsulRequestError} carrying Consul's own
 * message, which usually says what is wrong (ACL denials name the missing permission).
 */
import { DiscoveryConfigError, DiscoveryError } from '../errors.ts';

/** An ACL token, or a function returning the current one (read from a file that rotates, say). */
export type ConsulToken = string | (() => string);

/** How to reach one Consul agent. */
export interface ConsulConnectionOptions {
  /** Agent URL, `http(s)://host:port`. */
  readonly address: string;
  /** Sent as `X-Consul-Token`; absent or '' when ACLs are off. */
  readonly token?: ConsulToken;
  /**
   * An undici dispatcher for fetch, e.g. `new Agent({ connect: { ca } })` from the `undici`
   * package for a private CA or client certificates. For a CA alone, `NODE_EXTRA_CA_CERTS` works
   * without it.
   */
  readonly dispatcher?: RequestInit['dispatcher'];
}

/**
 * A Consul call that failed: `status` is the HTTP status, or 0 when no answer came (refused,
 * reset, timed out); `consulMessage` is what Consul answered.
 */
export class ConsulRequestError extends DiscoveryError {
  override name = 'ConsulRequestError';
  readonly status: number;
  readonly consulMessage: string;

  constructor(method: string, path: string, status: number, consulMessage: string, options?: { cause?: unknown }) {
    const what = status === 0 ? `got no answer (${consulMessage})` : `answered ${status}: ${consulMessage}`;
    super(`Consul ${method} ${path} ${what}${advice(status)}`, options);
    this.status = status;
    this.consulMessage = consulMessage;
  }
}

function advice(status: number): string {
  return status === 403 ? '; give the token the ACL permissions named above (service:read to discover, service:write to register)' : '';
}

/** A successful answer: the parsed body and the `X-Consul-Index` header, if any. */
export interface ConsulAnswer {
  readonly body: unknown;
  readonly index: string | null;
}

/** Options of one call. */
export interface CallOptions {
  readonly query?: Readonly<Record<string, string>>;
  readonly body?: unknown;
  readonly timeoutMs: number;
  /** Aborts the call (closing the source or registrar). */
  readonly signal?: AbortSignal;
}

/** Calls one agent. */
export class ConsulHttp {
  readonly root: string;
  readonly #token: ConsulToken | undefined;
  readonly #dispatcher: RequestInit['dispatcher'];

  /** Checks the address; nothing is sent yet. */
  constructor(options: ConsulConnectionOptions) {
    let url: URL;
    try {
      url = new URL(options.address);
    } catch (err: unknown) {
      throw new DiscoveryConfigError(`Consul address ${JSON.stringify(options.address)} is not a URL: write it as http(s)://host:port`, {
        cause: err,
      });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new DiscoveryConfigError(`Consul address ${JSON.stringify(options.address)} must start with http:// or https://`);
    }
    this.root = url.href.replace(/\/+$/, '');
    this.#token = options.token;
    this.#dispatcher = options.dispatcher;
  }

  /**
   * One call. Resolves with the answer of a 2xx; rejects with a {@link ConsulRequestError} for any
   * other status or no answer, and with the signal's reason when aborted.
   */
  async call(method: 'GET' | 'PUT', path: string, options: CallOptions): Promise<ConsulAnswer> {
    const query = new URLSearchParams(Object.entries(options.query ?? {}).filter(([, v]) => v !== ''));
    const url = `${this.root}${path}${query.size > 0 ? `?${query.toString()}` : ''}`;
    const headers: Record<string, string> = {};
    const token = typeof this.#token === 'function' ? this.#token() : this.#token;
    if (token !== undefined && token !== '') headers['X-Consul-Token'] = token;
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    const deadline = AbortSignal.timeout(options.timeoutMs);
    const signal = options.signal !== undefined ? AbortSignal.any([options.signal, deadline]) : deadline;
    let text: string;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        signal,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        ...(this.#dispatcher !== undefined ? { dispatcher: this.#dispatcher } : {}),
      });
      text = await response.text();
    } catch (err: unknown) {
      if (options.signal?.aborted === true) throw options.signal.reason;
      const why = deadline.aborted ? `no answer within ${options.timeoutMs} ms` : reason(err);
      throw new ConsulRequestError(method, path, 0, `${why}; is the agent at ${this.root} reachable?`, { cause: err });
    }
    if (!response.ok) throw new ConsulRequestError(method, path, response.status, text.trim() || response.statusText);
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch (err: unknown) {
      throw new ConsulRequestError(method, path, response.status, `the answer is not JSON: ${text.slice(0, 200)}`, { cause: err });
    }
    return { body, index: response.headers.get('X-Consul-Index') };
  }
}

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause instanceof Error ? err.cause.message : err.message;
}

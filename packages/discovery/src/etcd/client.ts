/**
 * The etcd3 client behind a source or registrar: the caller's own, or one created from hosts and
 * credentials (then closed with the source or registrar). A created client pings its connection,
 * so a link that silently drops packets is noticed and the watch re-established, instead of a
 * watch that waits forever on a dead connection.
 */
import { ExponentialBackoff } from 'cockatiel';
import { Etcd3, type IOptions } from 'etcd3';

import { DiscoveryConfigError } from '../errors.ts';

/** How to reach etcd: an existing client, or hosts (plus the etcd3 options to connect with). */
export interface EtcdConnectionOptions {
  /**
   * An etcd3 client of the caller's; it stays open when the source or registrar closes. Give it
   * gRPC keepalive options (as a created client has) if links may fail silently, or a watch may
   * wait on a dead connection until the link comes back.
   */
  readonly client?: Etcd3;
  /** etcd endpoints, e.g. `http://10.0.0.5:2379`; the client created for them is closed with the source or registrar. */
  readonly hosts?: string | string[];
  /** User and password, as etcd3 takes them. */
  readonly auth?: IOptions['auth'];
  /** TLS material, as etcd3 takes it. */
  readonly credentials?: IOptions['credentials'];
  /** gRPC channel options, merged over the keepalive defaults. */
  readonly grpcOptions?: IOptions['grpcOptions'];
  /** Milliseconds to wait for a connection. */
  readonly dialTimeout?: number;
}

/** A client and whether closing it is ours to do. */
export interface ConnectedClient {
  readonly client: Etcd3;
  readonly owned: boolean;
}

/** Default deadline of every read and write, ms. */
export const DEFAULT_CALL_TIMEOUT_MS = 10_000;

/**
 * Pings every 10 s, dead after 5 s without an answer: within etcd's default keepalive policy (no
 * more often than every 5 s, and only with a call open, which a watch is).
 */
const KEEPALIVE_OPTIONS = { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5_000 };

/** The client to use, created from `options` unless one is given. */
export function connect(options: EtcdConnectionOptions, what: string): ConnectedClient {
  if (options.client !== undefined) {
    if (options.hosts !== undefined) {
      throw new DiscoveryConfigError(`${what}: pass either client or hosts, not both (hosts are only used to create a client)`);
    }
    return { client: options.client, owned: false };
  }
  const hosts = options.hosts;
  if (hosts === undefined || hosts.length === 0) {
    throw new DiscoveryConfigError(`${what} needs etcd: pass hosts (e.g. ['http://127.0.0.1:2379']) or an etcd3 client`);
  }
  const client = new Etcd3({
    hosts,
    ...(options.auth !== undefined ? { auth: options.auth } : {}),
    ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
    ...(options.dialTimeout !== undefined ? { dialTimeout: options.dialTimeout } : {}),
    grpcOptions: { ...KEEPALIVE_OPTIONS, ...options.grpcOptions },
    // etcd3 retries its watch stream on a timer of its own even when no watcher is left to attach;
    // a short cap keeps that timer from holding the process open long after close().
    faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1_000 }).next() },
  });
  return { client, owned: true };
}

/** Call options with a deadline `timeoutMs` from now. */
export function deadline(timeoutMs: number): { deadline: Date } {
  return { deadline: new Date(Date.now() + timeoutMs) };
}

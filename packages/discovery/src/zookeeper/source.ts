/**
 * `zookeeperSource()`: the discovery source that reads what the operator writes to ZooKeeper,
 * pinned to one registry namespace. One session serves every watch of the source.
 */
import { ExponentialBackoff, type IBackoffFactory } from 'cockatiel';

import { monotonicClock, type Clock } from '../clock.ts';
import { DiscoveryConfigError } from '../errors.ts';
import { silentLogger, type DiscoveryLogger } from '../logger.ts';
import { resolveNamespace, type DiscoverySource, type SourceListener, type SourceWatch } from '../source.ts';
import { ZooKeeperConnection } from './connection.ts';
import { DEFAULT_BASE_PATH, normaliseBasePath, servicePaths } from './paths.ts';
import { ZooKeeperServiceWatch } from './service-watch.ts';

/** Options of {@link zookeeperSource}. */
export interface ZooKeeperSourceOptions {
  /** The Registry's `servers`: `host:port[,host:port…][/chroot]`. */
  readonly connectString: string;
  /** The Registry's `basePath`; default `/services`. */
  readonly basePath?: string;
  /** The registry namespace to read; default `$KUBE_REGISTRAR_NAMESPACE`, else `default`. */
  readonly namespace?: string;
  /** Session timeout to ask for, ms (the server clamps it to its bounds); default 30 000. */
  readonly sessionTimeoutMs?: number;
  /**
   * Digest credentials `user:password`, when the entries' ACLs allow reading only to them (the
   * Registry's `credentialsSecretRef`). Sent on every (re)connect before any read.
   */
  readonly digestCredentials?: readonly string[];
  /** Deadline of each read, ms, including the time spent waiting for a connection; default 10 000. */
  readonly callTimeoutMs?: number;
  /** Delays between attempts after a failed read, and before a new session; default exponential from 200 ms to 10 s with jitter. */
  readonly backoff?: IBackoffFactory<unknown>;
  /** Measures how long a watch was out of step, for logs. Default `performance.now()`. */
  readonly clock?: Clock;
  /** pino-compatible; silent by default. */
  readonly logger?: DiscoveryLogger;
}

const DEFAULT_SESSION_TIMEOUT_MS = 30_000;
const DEFAULT_CALL_TIMEOUT_MS = 10_000;

function positive(name: string, value: number | undefined, fallback: number): number {
  const ms = value ?? fallback;
  if (!(ms > 0) || !Number.isFinite(ms))
    throw new DiscoveryConfigError(`${name} is ${String(value)}: it must be a positive number of milliseconds`);
  return ms;
}

function checkCredentials(credentials: readonly string[]): readonly string[] {
  for (const c of credentials) {
    if (!/^[^:]+:.*$/s.test(c)) {
      throw new DiscoveryConfigError(
        'digestCredentials must be `user:password` strings (the Registry credentials secret’s username and password)',
      );
    }
  }
  return credentials;
}

/**
 * A source that follows services in `<basePath>/<namespace>/` of ZooKeeper: entries in every format
 * the operator writes (`curator`, `hostport` with its owner index, `json`) and other Curator
 * registrations there, one watch per service, kept through connection losses and session expiry
 * (see service-watch.ts).
 */
export function zookeeperSource(options: ZooKeeperSourceOptions): DiscoverySource {
  const namespace = resolveNamespace(options.namespace);
  if (typeof options.connectString !== 'string' || options.connectString.trim() === '') {
    throw new DiscoveryConfigError("zookeeperSource needs connectString: the Registry's ZooKeeper servers, e.g. zk-0:2181,zk-1:2181");
  }
  const basePath = normaliseBasePath(options.basePath ?? DEFAULT_BASE_PATH);
  const logger = options.logger ?? silentLogger;
  const backoff = options.backoff ?? new ExponentialBackoff({ initialDelay: 200, maxDelay: 10_000 });
  const connection = new ZooKeeperConnection({
    connectString: options.connectString,
    sessionTimeoutMs: positive('sessionTimeoutMs', options.sessionTimeoutMs, DEFAULT_SESSION_TIMEOUT_MS),
    callTimeoutMs: positive('callTimeoutMs', options.callTimeoutMs, DEFAULT_CALL_TIMEOUT_MS),
    digestCredentials: checkCredentials(options.digestCredentials ?? []),
    backoff,
    logger,
  });
  const clock = options.clock ?? monotonicClock;
  const watches = new Set<SourceWatch>();
  let closed = false;

  return {
    kind: 'zookeeper',
    namespace,
    watch(service: string, listener: SourceListener): SourceWatch {
      if (closed) throw new DiscoveryConfigError('this ZooKeeper source is closed: create a new one');
      const paths = servicePaths(basePath, namespace, service);
      const watch = new ZooKeeperServiceWatch({ connection, namespace, service, paths, listener, logger, backoff, clock });
      watches.add(watch);
      return {
        close: async () => {
          watches.delete(watch);
          await watch.close();
        },
      };
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await Promise.allSettled([...watches].map((w) => w.close()));
      watches.clear();
      await connection.close();
    },
  };
}

/**
 * The client's single voice: every event goes through here to the logger and the hooks, so that
 * what is logged and what is counted cannot drift apart, and a hook that throws never breaks a
 * call. Also wraps the registry source to hear, per service, when the cache falls out of step
 * with the registry and when it catches up, without the cache knowing about logs.
 */
import type { BreakerState } from '../call/breakers.ts';
import type { Clock } from '../clock.ts';
import { instanceId, type Instance } from '../instance.ts';
import type { DiscoverySource, SourceWatch } from '../source.ts';
import { silentLogger, type DiscoveryLogger } from '../logger.ts';
import type { CallOutcome, DiscoveryHooks } from './hooks.ts';

/** At most one "retry denied" log line per service per this many ms; the line counts the rest. */
const DENIED_LOG_INTERVAL_MS = 10_000;

interface SyncState {
  /** Whether the last word from the source was an update. */
  inSync: boolean;
  /** Clock time it fell out of step. */
  since: number;
}

interface DeniedLog {
  lastAt: number;
  unlogged: number;
}

/** Sends the client's events to its logger and hooks. */
export class Observer {
  readonly #logger: DiscoveryLogger;
  readonly #hooks: DiscoveryHooks;
  readonly #clock: Clock;
  readonly #namespace: string;
  readonly #sync = new Map<string, SyncState>();
  readonly #denied = new Map<string, DeniedLog>();

  constructor(logger: DiscoveryLogger | undefined, hooks: DiscoveryHooks | undefined, clock: Clock, namespace: string) {
    this.#logger = logger ?? silentLogger;
    this.#hooks = hooks ?? {};
    this.#clock = clock;
    this.#namespace = namespace;
  }

  /** The hooks, for `attach`. */
  get hooks(): DiscoveryHooks {
    return this.#hooks;
  }

  call(service: string, instance: Instance | undefined, outcome: CallOutcome, seconds: number): void {
    this.#hook('onCall', () => this.#hooks.onCall?.(service, instance, outcome, seconds));
  }

  retry(service: string, failed: Instance, attempt: number): void {
    this.#logger.debug({ service, instance: instanceId(failed), attempt }, 'retrying the call on another instance');
    this.#hook('onRetry', () => this.#hooks.onRetry?.(service, failed, attempt));
  }

  retryDenied(service: string, failed: Instance): void {
    this.#hook('onRetryDenied', () => this.#hooks.onRetryDenied?.(service, failed));
    // In a storm every failed call is denied: one line per interval, counting the others.
    const now = this.#clock.now();
    const log = this.#denied.get(service);
    if (log !== undefined && now - log.lastAt < DENIED_LOG_INTERVAL_MS) {
      log.unlogged++;
      return;
    }
    const alsoDenied = log?.unlogged ?? 0;
    this.#denied.set(service, { lastAt: now, unlogged: 0 });
    this.#logger.warn(
      { service, namespace: this.#namespace, instance: instanceId(failed), alsoDenied },
      'retry budget spent: failed calls are not retried (too many calls are failing; the budget keeps retries from multiplying the load)',
    );
  }

  ejected(service: string, instance: Instance, ejectedForMs: number): void {
    this.#logger.warn(
      { service, namespace: this.#namespace, instance: instanceId(instance), ejectedForMs },
      'instance ejected after failing calls in a row: it gets no traffic while others are available',
    );
    this.#hook('onEjection', () => this.#hooks.onEjection?.(service, instance, ejectedForMs));
  }

  breaker(service: string, instance: Instance, state: BreakerState): void {
    const fields = { service, namespace: this.#namespace, instance: instanceId(instance) };
    if (state === 'open') this.#logger.warn(fields, 'circuit breaker opened: the instance gets no calls until a trial call succeeds');
    else if (state === 'closed') this.#logger.info(fields, 'circuit breaker closed: a trial call succeeded');
    else this.#logger.debug(fields, 'circuit breaker half-open: letting one trial call through');
    this.#hook('onBreaker', () => this.#hooks.onBreaker?.(service, instance, state));
  }

  /** The source, with each watch reporting its updates and disconnections here as well. */
  observe(source: DiscoverySource): DiscoverySource {
    return {
      kind: source.kind,
      namespace: source.namespace,
      close: () => source.close(),
      watch: (service, listener): SourceWatch =>
        source.watch(service, {
          update: (instances, revision) => {
            listener.update(instances, revision);
            this.#updated(service, instances.length);
          },
          disconnected: (error) => {
            listener.disconnected(error);
            this.#disconnected(service, error);
          },
        }),
    };
  }

  #updated(service: string, count: number): void {
    const sync = this.#sync.get(service);
    this.#sync.set(service, { inSync: true, since: 0 });
    if (sync === undefined) {
      this.#logger.debug({ service, namespace: this.#namespace, instances: count }, 'first read of the service');
    } else if (!sync.inSync) {
      const staleForMs = Math.round(this.#clock.now() - sync.since);
      this.#logger.info({ service, namespace: this.#namespace, instances: count, staleForMs }, 'back in step with the registry');
      this.#hook('onCacheSync', () => this.#hooks.onCacheSync?.(service, true, undefined));
    }
    this.#hook('onCacheUpdate', () => this.#hooks.onCacheUpdate?.(service, count));
  }

  #disconnected(service: string, error: unknown): void {
    const sync = this.#sync.get(service);
    if (sync !== undefined && !sync.inSync) return; // already said
    this.#sync.set(service, { inSync: false, since: this.#clock.now() });
    this.#logger.warn(
      { service, namespace: this.#namespace, err: error },
      sync === undefined
        ? 'cannot read the service from the registry yet; retrying'
        : 'lost the registry: serving the last known instances until it is back',
    );
    this.#hook('onCacheSync', () => this.#hooks.onCacheSync?.(service, false, error));
  }

  #hook(name: string, run: () => void): void {
    try {
      run();
    } catch (err) {
      this.#logger.error({ err, hook: name }, `the discovery hook ${name} threw; the client carries on without it`);
    }
  }
}

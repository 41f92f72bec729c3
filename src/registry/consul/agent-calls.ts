/**
 * How the Consul backend calls its agent: every call retried on transient failures until the
 * backend closes, every piece of work tracked so that close() can wait for it, the agent's
 * datacenter checked once, and failures explained in terms a user can act on.
 */
import { ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import type { RetryPolicy } from 'cockatiel';

import type { RegistryLogger } from '../logger.ts';
import { ConsulHttpError, isTransientConsulError } from './client.ts';
import type { ConsulAgentClient } from './client.ts';
import { describe } from '../../errors.ts';
import { ConsulRegistryError } from './errors.ts';

/** Options of {@link AgentCalls}. */
export interface AgentCallsOptions {
  readonly client: ConsulAgentClient;
  /** Agent URL, quoted in error messages. */
  readonly address: string;
  /** Datacenter the agent must be in; '' skips the check. */
  readonly datacenter: string;
  readonly logger: RegistryLogger;
}

/** The agent client with retries, in-flight tracking and the datacenter check. */
export class AgentCalls {
  /** The agent, called through {@link AgentCalls.call}. */
  readonly client: ConsulAgentClient;
  /** Agent URL, for error messages. */
  readonly address: string;
  readonly #datacenter: string;
  readonly #log: RegistryLogger;
  readonly #retry: RetryPolicy;
  /** Stops retrying on close; a back-off under way (at most a second) ends and close() waits for it. */
  readonly #abort = new AbortController();
  readonly #inFlight = new Set<Promise<unknown>>();
  #agentChecked: Promise<void> | undefined;
  #closed = false;

  /** Sends nothing: the datacenter is checked on the first call that needs it. */
  constructor(options: AgentCallsOptions) {
    this.client = options.client;
    this.address = options.address;
    this.#datacenter = options.datacenter;
    this.#log = options.logger;
    this.#retry = retry(handleWhen(isTransientConsulError), {
      maxAttempts: 2,
      backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }),
    });
  }

  /** Whether {@link AgentCalls.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Runs `work`, refused once closed, and lets close() wait for it. */
  async track<T>(work: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new ConsulRegistryError('Consul registry is closed');
    const run = work();
    this.#inFlight.add(run);
    try {
      return await run;
    } finally {
      this.#inFlight.delete(run);
    }
  }

  /** One agent call, retried on transient failures until close. */
  call<T>(fn: () => Promise<T>): Promise<T> {
    return this.#retry.execute(fn, this.#abort.signal);
  }

  /** Checks once that the agent is in the configured datacenter; registering elsewhere would be silent. */
  async checkAgent(): Promise<void> {
    if (this.#datacenter === '') return;
    this.#agentChecked ??= (async () => {
      let actual: string;
      try {
        actual = await this.call(() => this.client.agentDatacenter());
      } catch (err: unknown) {
        if (err instanceof ConsulHttpError && err.status === 403) {
          this.#log.warn(
            { datacenter: this.#datacenter },
            "the ACL token lacks agent:read, so the agent's datacenter cannot be checked against spec.consul.datacenter",
          );
          return;
        }
        this.#agentChecked = undefined;
        throw new ConsulRegistryError(`asking the Consul agent at ${this.address} for its datacenter failed: ${this.explain(err)}`, {
          cause: err,
        });
      }
      if (actual !== this.#datacenter) {
        throw new ConsulRegistryError(
          `the Consul agent at ${this.address} is in datacenter ${JSON.stringify(actual)}, but spec.consul.datacenter says ${JSON.stringify(this.#datacenter)}; ` +
            `agent registrations always land in the agent's own datacenter: point spec.consul.address at an agent of ${JSON.stringify(this.#datacenter)} or fix spec.consul.datacenter`,
        );
      }
    })();
    await this.#agentChecked;
  }

  /** The error's message, with what to do about the failures users can fix. */
  explain(err: unknown): string {
    const message = describe(err);
    if (!(err instanceof ConsulHttpError)) return message;
    if (err.status === 403) {
      return (
        `${message}. The ACL token of this Registry (spec.consul.tokenSecretRef) is not allowed to do this: ` +
        `grant the permission named above in the token's policy, or change spec.consul.serviceName so that the names fall under what the token may write`
      );
    }
    if (err.status === 400 && /Namespaces are a Consul Enterprise feature/i.test(err.consulMessage)) {
      return (
        `${message}. spec.consul.namespace is set, but the agent runs open-source Consul, which has no namespaces: ` +
        `clear spec.consul.namespace and isolate registry namespaces through spec.consul.serviceName, e.g. "{namespace}-{service}"`
      );
    }
    return message;
  }

  /** Refuses new work and stops retries; resolves once the work under way has settled. */
  close(): Promise<unknown> {
    this.#closed = true;
    this.#abort.abort();
    return Promise.allSettled([...this.#inFlight]);
  }
}
